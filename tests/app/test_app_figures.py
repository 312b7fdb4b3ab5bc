"""app/figures.py: pure Vega-Lite figures, checked on their compiled specs and data."""

from __future__ import annotations

import numpy as np
import pandas as pd
from PIL import Image

from app import figures


def _layers(chart) -> list[dict]:
    return chart.to_dict()["layer"]


def _values(spec: dict, full: dict) -> list[dict]:
    """The rows a layer (or the chart) draws: inline data, or a named dataset of the chart."""
    data = spec.get("data") or full.get("data")
    return data["values"] if "values" in data else full["datasets"][data["name"]]


def test_overlay_places_grid_on_image_pixels_and_draws_boxes():
    att = np.arange(6, dtype=np.float64)  # grid 2 x 3, row-major
    img = Image.new("RGB", (30, 20), (10, 20, 30))
    boxes = [{"phrase": "red <b>cube</b>", "x": 3, "y": 4, "w": 10, "h": 6, "image": 0}]
    full = figures.attention_overlay(att, (2, 3), img, (60, 40), boxes, title="t", zmax=7.0, width=300).to_dict()
    image, heat, rect, text = full["layer"]
    assert image["mark"]["type"] == "image" and (full["width"], full["height"]) == (300, 200)
    corners = _values(image, full)[0]  # the display copy spans the original's pixel frame
    assert (corners["x"], corners["x2"], corners["y"], corners["y2"]) == (0.0, 60.0, 0.0, 40.0)
    assert corners["url"].startswith("data:image/jpeg;base64,")
    cells = pd.DataFrame(_values(heat, full))
    assert cells["value"].tolist() == [0, 1, 2, 3, 4, 5]
    # Cell 5 is row 1, col 2: pixels x 40..60, y 20..40 of the 60 x 40 original.
    assert cells.iloc[5][["row", "col", "x", "x2", "y", "y2"]].tolist() == [1, 2, 40, 60, 20, 40]
    assert heat["encoding"]["color"]["scale"]["domain"] == [0.0, 7.0]
    assert heat["encoding"]["y"]["scale"]["reverse"] is True  # image convention: y grows downwards
    assert _values(rect, full)[0] == {"x": 3.0, "y": 4.0, "x2": 13.0, "y2": 10.0, "phrase": "red <b>cube</b>"}
    assert text["mark"]["type"] == "text"  # Vega-Lite draws the phrase as text, never as markup


def test_overlay_without_image_uses_the_grid_frame():
    full = figures.attention_overlay(np.ones(4), (2, 2)).to_dict()
    (heat,) = full["layer"]
    assert heat["mark"]["opacity"] == 1.0
    assert heat["encoding"]["x"]["scale"]["domain"] == [0, 32.0]  # 16 px per token


def test_difference_scale_is_symmetric_about_zero():
    (heat,) = _layers(figures.difference_overlay(np.array([-0.5, 2.0, 0.0, 1.0]), (2, 2)))
    scale = heat["encoding"]["color"]["scale"]
    assert (scale["domain"], scale["domainMid"]) == ([-2.0, 2.0], 0.0)
    (flat,) = _layers(figures.difference_overlay(np.zeros(4), (2, 2)))
    assert flat["encoding"]["color"]["scale"]["domain"] == [-1.0, 1.0]


def test_head_grid_one_panel_per_head_on_one_scale():
    maps = np.arange(12, dtype=np.float64).reshape(2, 6)  # 2 heads, grid 2 x 3
    full = figures.head_grid(maps, (2, 3), columns=4).to_dict()
    rows = pd.DataFrame(_values(full, full))
    assert full["facet"]["field"] == "head" and full["columns"] == 4
    assert rows.groupby("head")["value"].apply(list).to_dict() == {0: [0, 1, 2, 3, 4, 5], 1: [6, 7, 8, 9, 10, 11]}
    assert "resolve" not in full  # one colour scale for every head


def test_accuracy_bars_one_bar_per_model_and_group():
    table = pd.DataFrame({"skill": ["<i>p</i>", "r"], "n": [3, 4], "teacher": [1.0, 0.5], "student": [0.25, 0.5]})
    full = figures.accuracy_bars(table, "skill").to_dict()
    rows = pd.DataFrame(_values(full, full)).set_index(["skill", "model"])["accuracy"]
    assert rows.to_dict() == {("<i>p</i>", "teacher"): 1.0, ("r", "teacher"): 0.5, ("<i>p</i>", "student"): 0.25,
                              ("r", "student"): 0.5}
    assert full["encoding"]["y"]["scale"]["domain"] == [0, 1]


def test_distribution_by_group_in_label_order_and_skips_empty():
    full = figures.distribution_by_group(np.array([1.0, 2.0, 3.0]), ["b", "a", "b"],
                                         {"a": "A", "b": "B", "c": "C"}).to_dict()
    box = full["layer"][0]
    assert box["encoding"]["x"]["sort"] == ["a (n=1)", "b (n=2)"]
    rows = pd.DataFrame(_values(box, full))
    assert rows[rows["group"] == "b (n=2)"]["value"].tolist() == [1.0, 3.0]


def test_distribution_outliers_are_points_that_select_their_item():
    values = np.array([1.0, 1.1, 0.9, 1.0, 1.05, 0.95, 9.0, 2.0, 2.1])
    groups = ["a"] * 7 + ["b"] * 2
    uids = [f"u{k}" for k in range(9)]
    full = figures.distribution_by_group(values, groups, {"a": "A", "b": "B"}, uids=uids).to_dict()
    box, points = full["layer"]
    assert box["mark"]["outliers"] is False  # drawn once, by the clickable layer
    far = pd.DataFrame(_values(points, full))
    assert far["uid"].tolist() == ["u6"] and far["value"].tolist() == [9.0]
    params = full.get("params", []) + points.get("params", [])  # altair lifts a layer's params to the top
    assert [p["name"] for p in params] == [figures.OUTLIER]
    assert params[0]["select"]["fields"] == ["uid"] and params[0].get("views", [points.get("name")]) == [points.get("name")]
    plain = figures.distribution_by_group(values, groups, {"a": "A", "b": "B"}).to_dict()
    assert not plain.get("params") and not plain["layer"][1].get("params")  # no ids, nothing to open


def test_delta_bars_colour_the_good_direction_and_grey_for_no_change():
    frame = pd.DataFrame({"layer": [1, 2, 3], "d": [-0.1, 0.2, 0.0]})

    def colours(chart):
        full = chart.to_dict()
        return [r["colour"] for r in _values(full["layer"][0], full)]

    assert colours(figures.delta_bars(frame, "layer", "d")) == [figures.BAD, figures.GOOD, figures.NEUTRAL]
    lower = figures.delta_bars(frame, "layer", "d", higher_is_better=False)  # e.g. misalignment
    assert colours(lower) == [figures.GOOD, figures.BAD, figures.NEUTRAL]


def test_layer_head_heatmap_click_selects_layer_and_head():
    frame = pd.DataFrame({"student_layer": [0, 0, 1, 1], "head": [1, -1, 1, -1], "mean": [0.1, 0.2, 0.3, 0.4], "n": 5})
    full = figures.layer_head_heatmap(frame, "t2i:js").to_dict()
    (param,) = full["params"]
    assert param["name"] == figures.CELL and param["select"]["fields"] == ["student_layer", "head"]
    assert full["encoding"]["x"]["sort"] == ["1", "avg map"]  # the head-averaged map last, named as such
    assert full["height"] == {"step": 28}  # a row per layer at any number of layers, never collapsed


def test_by_layer_intervals_reference_and_panels():
    frame = pd.DataFrame({"measure": ["a", "a", "b", "b"], "student_layer": [0, 1, 0, 1], "mean": [0.1, 0.2, 0.3, 0.4],
                          "ci_low": [0.0, 0.1, 0.2, 0.3], "ci_high": [0.2, 0.3, 0.4, 0.5]})
    lines = figures.by_layer(frame, "mean", "m", colour="measure", rule=0.5).to_dict()
    marks = [layer["mark"]["type"] if isinstance(layer["mark"], dict) else layer["mark"] for layer in lines["layer"]]
    assert marks == ["errorbar", "rule", "line"]  # the line and its points on top, where clicks find them
    assert lines["layer"][1]["encoding"]["y"]["datum"] == 0.5
    assert lines["layer"][2]["encoding"]["x"]["axis"]["tickMinStep"] == 1  # whole layers only
    panels = figures.by_layer(frame, "mean", "m", facet="measure").to_dict()
    assert panels["facet"]["field"] == "measure" and panels["resolve"]["scale"]["y"] == "independent"


def test_by_layer_click_selects_a_layer():
    frame = pd.DataFrame({"student_layer": [0, 1], "auroc": [0.5, 0.6], "ci_low": [0.4, 0.5], "ci_high": [0.6, 0.7]})
    full = figures.by_layer(frame, "auroc", "AUROC", rule=0.5, select="layer").to_dict()
    (param,) = full["params"]
    assert param["name"] == "layer" and param["select"] == {"type": "point", "fields": ["student_layer"], "on": "click"}
