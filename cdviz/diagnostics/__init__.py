"""Diagnostics of one model, outside the record -> analyse flow.

    binding.py    cdviz zoo binding    does a model bind colour to the named object (shapes world)
"""
