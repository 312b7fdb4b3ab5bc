"""Synthetic run stores with a planted, known answer (cdviz/synthetic/run.py), for tests and benchmarks.

    make_synthetic_run(DIR, n_items=200, seed=0) -> DIR
"""

from cdviz.synthetic.run import cell_integrated_bump, layer_sd, make_synthetic_run, planted_layer_map

__all__ = ["cell_integrated_bump", "layer_sd", "make_synthetic_run", "planted_layer_map"]
