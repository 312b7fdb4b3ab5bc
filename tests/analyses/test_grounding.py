"""Grounding: exact in-box shares on a hand-made store (to fp16 storage precision), planted gap recovered."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from analyses.grounding import GroundingResult, grounding
from cdviz.store import open_run
from handmade import item, write_store

PEAK = np.array([0.7, 0.1, 0.1, 0.1])
FLAT = np.full(4, 0.25)
BOX = {"phrase": "thing", "x": 0, "y": 0, "w": 10, "h": 10, "image": 0}  # top-left cell of a 20 px image


@pytest.fixture(scope="module")
def exact(tmp_path_factory):
    teacher = np.tile(PEAK, (2, 2, 1))  # [2 layers, 2 heads, 4]
    student = np.tile(FLAT, (1, 2, 1))
    items = [item("boxed", teacher, student, boxes=[BOX]), item("no-box", teacher, student)]
    return grounding(open_run(write_store(tmp_path_factory.mktemp("g"), items)), n_boot=20, n_perm=20)


def test_in_box_share_and_ratio(exact):
    f = exact.to_frame()
    assert set(f.uid) == {"boxed"}  # items without boxes are left out
    t = f[f.model == "teacher"]
    np.testing.assert_allclose(t.in_box, 0.7, rtol=1e-3)
    np.testing.assert_allclose(t.ratio, 2.8, rtol=1e-3)
    s = f[f.model == "student"]
    np.testing.assert_allclose(s.in_box, 0.25, rtol=1e-3)
    np.testing.assert_allclose(s.area_share, 0.25, rtol=1e-3)


def test_gap_is_teacher_group_minus_student(exact):
    assert exact.gap_auroc.mean_gap.iloc[0] == pytest.approx(0.45, rel=1e-3)
    assert exact.gap_auroc.teacher_layers.iloc[0] == "0,1"


def test_planted_gap_predicts_errors(planted_store):
    g = grounding(planted_store, n_boot=300, n_perm=300).gap_auroc.set_index("student_layer")
    for layer in (1, 2):
        assert g.auroc[layer] > 0.65 and g.ci_low[layer] > 0.5 and g.mean_gap[layer] > 0.1
    for layer in (0, 3):
        assert g.ci_low[layer] < 0.5 < g.ci_high[layer]


def test_round_trip(exact):
    back = GroundingResult.from_dict(json.loads(json.dumps(exact.to_dict())))
    pd.testing.assert_frame_equal(back.to_frame(), exact.to_frame())
    pd.testing.assert_frame_equal(back.by_layer(), exact.by_layer())
