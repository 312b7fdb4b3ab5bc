"""Layer correspondence: the monotone dynamic program, exact similarities, head matching."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from analyses.layer_correspondence import LayerCorrespondenceResult, layer_correspondence, monotone_map
from cdviz.store import open_run
from handmade import item, write_store

E = np.eye(4)


def test_monotone_map_beats_greedy_argmax():
    # Column-wise argmax would give [1, 0] (not monotone); the best monotone path is [0, 0].
    assert monotone_map(np.array([[0.0, 9.0], [8.0, 0.0]])) == [0, 0]
    assert monotone_map(np.array([[5.0, 0, 0], [0, 1, 0], [0, 4, 9]])) == [0, 2, 2]
    assert monotone_map(np.eye(3)) == [0, 1, 2]


@pytest.fixture(scope="module")
def handmade_corr(tmp_path_factory):
    """Teacher layers 0..2 look at tokens 0, 1, 2; student layer 0 at token 0, layer 1 at token 2.
    Student head 0 copies teacher head 1 and vice versa."""
    teacher = np.stack([np.stack([E[i], 0.5 * E[i] + 0.5 * E[3]]) for i in range(3)])  # [3, 2, 4]
    student = np.stack([np.stack([0.5 * E[i] + 0.5 * E[3], E[i]]) for i in (0, 2)])  # [2, 2, 4]
    root = write_store(tmp_path_factory.mktemp("corr"), [item("a", teacher, student), item("b", teacher, student)])
    return layer_correspondence(open_run(root), field="t2i", metric="js")


def test_similarity_matrix_exact(handmade_corr):
    r = handmade_corr
    assert r.similarity.shape == (3, 2) and not r.higher_is_aligned
    # Head means: teacher layer i = .75 e_i + .25 e_3, student likewise; equal layers give JS 0.
    assert r.similarity[0, 0] == pytest.approx(0.0, abs=1e-7)
    assert r.similarity[2, 1] == pytest.approx(0.0, abs=1e-7)
    assert r.similarity[1, 0] > 0.2 and r.n_items == 2


def test_layer_map_and_head_swap_recovered(handmade_corr):
    assert handmade_corr.layer_map == {0: 0, 1: 2}
    m = handmade_corr.heads[handmade_corr.heads.matched]
    assert sorted(zip(m.student_layer, m.student_head, m.teacher_head)) == [(0, 0, 1), (0, 1, 0), (1, 0, 1), (1, 1, 0)]
    assert handmade_corr.head_matrix(0).shape == (2, 2)


def test_planted_map_is_monotone_and_anchored(planted_store):
    r = layer_correspondence(planted_store, head_matching=False)
    t = [r.layer_map[s] for s in r.student_layers]
    assert t == sorted(t)
    assert t[0] in (0, 1) and t[-1] in (6, 7)
    assert r.similarity.shape == (8, 4) and r.heads.empty


def test_round_trip(handmade_corr):
    back = LayerCorrespondenceResult.from_dict(json.loads(json.dumps(handmade_corr.to_dict())))
    pd.testing.assert_frame_equal(back.to_frame(), handmade_corr.to_frame())
    pd.testing.assert_frame_equal(back.heads, handmade_corr.heads, check_dtype=False)
    assert back.layer_map == handmade_corr.layer_map


def test_rejects_unknown_field(planted_store):
    with pytest.raises(ValueError, match="i2i"):
        layer_correspondence(planted_store, field="mass")
