"""Layer groups and box coverage, exactly."""

from __future__ import annotations

import numpy as np
import pytest

from analyses.common import box_cover, default_layer_map, outcome_group


def test_default_layer_map_pairs_consecutive_layers():
    assert default_layer_map(range(8), range(4), 8, 4) == {0: [0, 1], 1: [2, 3], 2: [4, 5], 3: [6, 7]}
    assert default_layer_map(range(2), range(2), 2, 2) == {0: [0], 1: [1]}


def test_default_layer_map_paper_depths_and_group_size():
    # 24-layer student, 40-layer teacher: the first VAT target layer 8 starts at teacher layer 13.
    assert default_layer_map(range(40), [8, 9], 40, 24) == {8: [13, 14], 9: [15]}
    assert default_layer_map(range(40), [8], 40, 24, group_size=5) == {8: [13, 14, 15, 16, 17]}
    assert default_layer_map(range(4), range(8), 4, 8)[5] == [2]  # shallower teacher: one layer each


@pytest.mark.parametrize("n_s, n_t", [(4, 8), (24, 40), (24, 28), (28, 32), (5, 7), (8, 4), (3, 3)])
def test_default_layer_map_is_the_trainers(n_s, n_t):
    """What the report measures is what the trainer aligns by default."""
    from cdviz import layer_map
    ours = default_layer_map(range(n_t), range(n_s), n_t, n_s)
    assert [tuple(ours[s]) for s in range(n_s)] == layer_map.proportional_groups(list(range(n_s)), n_s, n_t)


def test_default_layer_map_uses_only_recorded_teacher_layers():
    assert default_layer_map([0, 5], [0, 1], 8, 2) == {0: [0], 1: [5]}
    assert default_layer_map([7], [0], 8, 4) == {0: [7]}  # nothing in [0, 2): nearest recorded


def test_box_cover_halves_and_union_without_double_count():
    one = box_cover([{"x": 5, "y": 0, "w": 10, "h": 10}], (40, 40), (4, 4)).reshape(4, 4)
    expected = np.zeros((4, 4))
    expected[0, 0] = expected[0, 1] = 0.5
    np.testing.assert_allclose(one, expected)
    two = box_cover([{"x": 0, "y": 0, "w": 20, "h": 10}, {"x": 10, "y": 0, "w": 20, "h": 10}], (40, 40), (4, 4))
    np.testing.assert_allclose(two.reshape(4, 4)[0], [1, 1, 1, 0])
    assert two.sum() == pytest.approx(3)


def test_box_cover_non_square_image_and_clipping():
    cover = box_cover([{"x": 50, "y": -10, "w": 100, "h": 30}], (100, 40), (2, 2)).reshape(2, 2)
    # right half of the image, rows 0..20 px of 40: all of the top-right cell
    np.testing.assert_allclose(cover, [[0, 1], [0, 0]])


def test_outcome_group_names():
    assert outcome_group(True, False) == "TR/SW" and outcome_group(False, True) == "TW/SR"
