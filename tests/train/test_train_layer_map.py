"""The layer map: the paper's table from a formula, any depth, overlapping windows, reports."""

from __future__ import annotations

import json

import pytest

from cdviz.layer_map import (
    LayerMap, LayerMapError, default_layer_map, layer_map_from_report, middle_band, overlapping_groups,
    paper_group_size, proportional_groups, resolve_layer_map,
)

PAPER_BANDS = {24: (8, 14), 28: (9, 15), 32: (11, 17), 40: (13, 19)}
PAPER_G = {24: 2, 28: 3, 32: 3, 40: 5}


@pytest.mark.parametrize("n", sorted(PAPER_BANDS))
def test_band_reproduces_the_paper_table(n):
    lo, hi = PAPER_BANDS[n]
    assert middle_band(n) == list(range(lo, hi + 1))


@pytest.mark.parametrize("n", sorted(PAPER_G))
def test_group_size_reproduces_the_paper(n):
    assert paper_group_size(n) == PAPER_G[n]


def test_paper_compat_windows_for_the_papers_pair():
    lm = default_layer_map(24, 40, paper_compat=True)
    assert lm.student_layers == tuple(range(8, 15))
    assert lm.teacher_groups == tuple(tuple(range(s, s + 5)) for s in range(13, 20))  # overlapping by 4


def test_proportional_groups_tile_the_teacher_without_overlap():
    lm = default_layer_map(24, 40)
    assert lm.student_layers == tuple(range(8, 15))
    flat = [t for g in lm.teacher_groups for t in g]
    assert flat == sorted(flat) and len(flat) == len(set(flat))  # increasing, no overlap
    assert flat == list(range(13, 25))  # the teacher slice at the band's relative depth (8/24 .. 15/24)
    assert proportional_groups([0, 1, 2, 3], 4, 8) == [(0, 1), (2, 3), (4, 5), (6, 7)]
    assert proportional_groups([1, 2], 4, 2) == [(0,), (1,)]  # shallower teacher: one layer each


@pytest.mark.parametrize("n", [4, 6, 13])
def test_small_depths(n):
    expected = {4: [1], 6: [2, 3], 13: [4, 5, 6, 7]}
    assert middle_band(n) == expected[n]


@pytest.mark.parametrize("n_s", range(1, 81))
def test_any_depth_gives_a_valid_contiguous_band(n_s):
    band = middle_band(n_s)
    assert band == list(range(band[0], band[-1] + 1)) and 0 <= band[0] and band[-1] < n_s
    assert 1 <= len(band) <= 7
    for n_t in (1, n_s, 2 * n_s + 3):
        for compat in (False, True):
            default_layer_map(n_s, n_t, paper_compat=compat).check(n_s, n_t)


def test_overlapping_groups_stay_inside_a_shallow_teacher():
    assert overlapping_groups(3, 4) == [(1,), (2,), (3,)]
    assert all(g[-1] < 12 for g in overlapping_groups(7, 12))


def _write_summary(run, obj):
    (run / "report").mkdir(parents=True)
    (run / "report" / "summary.json").write_text(json.dumps(obj))


def test_report_is_read_exactly(tmp_path):
    _write_summary(tmp_path, {"recommended_targets": {"student_layers": [1, 2], "teacher_groups": [[2, 3], [4]]}})
    lm = layer_map_from_report(tmp_path)
    assert lm.student_layers == (1, 2) and lm.teacher_groups == ((2, 3), (4,))
    assert resolve_layer_map(4, 6, report=tmp_path) == lm
    with pytest.raises(LayerMapError, match="outside the models"):
        resolve_layer_map(2, 6, report=tmp_path)


def test_missing_report_says_to_run_cdviz_report(tmp_path):
    with pytest.raises(LayerMapError, match="run `cdviz report"):
        layer_map_from_report(tmp_path)
    _write_summary(tmp_path, {"n_items": 3})
    with pytest.raises(LayerMapError, match="run `cdviz report"):
        layer_map_from_report(tmp_path)


def test_malformed_maps_are_rejected():
    with pytest.raises(LayerMapError, match="one group"):
        LayerMap((1, 2), ((1,),))
    with pytest.raises(LayerMapError, match="expected"):
        LayerMap.from_dict({"student_layers": [1]})


def test_explicit_layers_win():
    lm = resolve_layer_map(4, 8, student_layers=[0, 3])
    assert lm.student_layers == (0, 3) and lm.teacher_groups == ((0, 1), (6, 7))
