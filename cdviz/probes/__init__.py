"""Probe sets: items with known answers, from the shapes world or local benchmark copies.

    make (shapes world)  ─┐
    import (native files) ┴─> ProbeItem stream ─> save_probeset(DIR) ─> load_probeset(DIR)

Sources are kept in one explicit dict (``SOURCES``); ``register_source`` adds one.
"""

from cdviz.probes.probeset import ProbeSet, load_probeset, save_probeset
from cdviz.probes.registry import SOURCES, get_source, list_sources, register_source

__all__ = [
    "ProbeSet",
    "load_probeset",
    "save_probeset",
    "SOURCES",
    "get_source",
    "list_sources",
    "register_source",
]
