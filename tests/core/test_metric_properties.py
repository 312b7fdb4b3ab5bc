"""Invariants of the misalignment metrics on random attention maps (hypothesis)."""

from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from cdviz.metrics import cosine, emd_2d, js_divergence, resample_to_grid, spearman, topk_iou

GRID = (3, 4)
N = GRID[0] * GRID[1]
maps = arrays(np.float64, N, elements=st.floats(0.0, 1.0, allow_nan=False)).filter(lambda a: a.sum() > 1e-3)


def t(a: np.ndarray) -> torch.Tensor:
    return torch.tensor(a, dtype=torch.float64)


@settings(max_examples=60, deadline=None)
@given(maps)
def test_identical_maps_are_perfectly_aligned(p):
    assert abs(float(js_divergence(t(p), t(p)))) < 1e-12
    assert abs(float(cosine(t(p), t(p))) - 1.0) < 1e-9
    assert float(topk_iou(t(p), t(p), k=3)) == 1.0
    assert abs(float(emd_2d(t(p), t(p), GRID))) < 1e-7


@settings(max_examples=60, deadline=None)
@given(maps, maps)
def test_symmetry_and_bounds(p, q):
    js_pq, js_qp = float(js_divergence(t(p), t(q))), float(js_divergence(t(q), t(p)))
    assert abs(js_pq - js_qp) < 1e-9
    assert -1e-12 <= js_pq <= math.log(2) + 1e-9
    assert abs(float(cosine(t(p), t(q))) - float(cosine(t(q), t(p)))) < 1e-9
    assert -1e-9 <= float(cosine(t(p), t(q))) <= 1 + 1e-9
    rho = float(spearman(t(p), t(q)))
    assert math.isnan(rho) or -1 - 1e-9 <= rho <= 1 + 1e-9
    assert 0.0 <= float(topk_iou(t(p), t(q), k=3)) <= 1.0
    e_pq, e_qp = float(emd_2d(t(p), t(q), GRID)), float(emd_2d(t(q), t(p), GRID))
    assert abs(e_pq - e_qp) < 1e-6
    assert -1e-9 <= e_pq <= math.hypot(GRID[0] - 1, GRID[1] - 1) + 1e-6


@settings(max_examples=40, deadline=None)
@given(maps)
def test_resampling_keeps_a_distribution(p):
    out = resample_to_grid(t(p), GRID, (6, 8))
    assert out.shape == (48,)
    assert bool((out >= 0).all())
    assert abs(float(out.sum()) - 1.0) < 1e-9
