"""Misalignment: exact values on a hand-made store, planted-truth recovery, round trip."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from analyses.misalignment import MisalignmentResult, misalignment
from cdviz.store import open_run
from handmade import item, write_store

E0, E1, E2 = np.eye(4)[0], np.eye(4)[1], np.eye(4)[2]


@pytest.fixture(scope="module")
def exact(tmp_path_factory):
    """Teacher layers look at tokens 0 and 1 (group mean [.5, .5, 0, 0]); the student's head 0 at
    token 0, head 1 at token 2 (head mean [.5, 0, .5, 0])."""
    teacher = np.stack([np.stack([E0, E0]), np.stack([E1, E1])])  # [2 layers, 2 heads, 4]
    student = np.stack([np.stack([E0, E2])])  # [1 layer, 2 heads, 4]
    root = write_store(tmp_path_factory.mktemp("exact"), [item("a", teacher, student)])
    return misalignment(open_run(root), t2i_metrics=("js", "spearman"))


def test_layer_group_is_both_teacher_layers(exact):
    assert exact.student_layers == [0] and exact.teacher_groups == [[0, 1]]
    assert exact.measures == ["i2i:vat_cosine", "t2i:js", "t2i:spearman"]
    assert exact.values.shape == (1, 1, 3, 3)


def test_vat_cosine_values(exact):
    v = exact.values[0, 0, :, 0]  # heads 0, 1, mean
    np.testing.assert_allclose(v, [1 - 1 / math.sqrt(2), 1.0, 0.5], atol=1e-6)


def test_js_values(exact):
    js_head0 = 0.5 * math.log(4 / 3) + 0.25 * math.log(2 / 3) + 0.25 * math.log(2)
    np.testing.assert_allclose(exact.values[0, 0, :, 1], [js_head0, math.log(2), 0.5 * math.log(2)], atol=1e-6)


def test_spearman_misalignment_is_one_minus_rho(exact):
    # ranks [4, 2, 2, 2] vs [3.5, 3.5, 1.5, 1.5]: rho = 2 / sqrt(12)
    assert exact.values[0, 0, 0, 2] == pytest.approx(1 - 2 / math.sqrt(12), abs=1e-6)


def test_planted_layers_are_the_misaligned_ones(planted_misalignment):
    by = planted_misalignment.by_layer()
    for measure in planted_misalignment.measures:
        mean = by[by.measure == measure].set_index("student_layer")["mean"]
        assert min(mean[1], mean[2]) > max(mean[0], mean[3]) + 0.15, measure


def test_student_errors_are_more_misaligned_in_planted_layers(planted_misalignment):
    by = planted_misalignment.by("group")
    by = by[(by.measure == "i2i:vat_cosine")].set_index(["student_layer", "group"])["mean"]
    for layer in (1, 2):
        assert by[(layer, "TR/SW")] > by[(layer, "TR/SR")] + 0.1


def test_frames_have_one_row_per_cell(planted_misalignment):
    r = planted_misalignment
    n_i, n_l, n_h, n_m = r.values.shape
    frame = r.to_frame()
    assert len(frame) == n_i * n_l * n_h * n_m
    assert set(frame["head"]) == {-1, 0, 1, 2, 3}
    heads = r.by_layer_head()
    assert len(heads) == n_l * n_h * n_m
    wide = r.item_layer("t2i:js")
    assert list(wide.columns) == r.student_layers and len(wide) == n_i


def test_round_trip_through_json(planted_misalignment):
    back = MisalignmentResult.from_dict(json.loads(json.dumps(planted_misalignment.to_dict())))
    pd.testing.assert_frame_equal(back.to_frame(), planted_misalignment.to_frame())


def test_unknown_metric_and_field_are_named(planted_store):
    with pytest.raises(KeyError, match="registered"):
        misalignment(planted_store, t2i_metrics=("nope",))
    with pytest.raises(ValueError, match="i2i"):
        misalignment(planted_store, fields=("mass",))


def test_explicit_layer_map_is_checked(planted_store):
    r = misalignment(planted_store, fields=("t2i",), t2i_metrics=("js",), layer_map={0: [0], 1: 3, 2: [4], 3: [7]})
    assert r.teacher_groups == [[0], [3], [4], [7]]
    with pytest.raises(ValueError, match="not recorded"):
        misalignment(planted_store, layer_map={0: [99]})
