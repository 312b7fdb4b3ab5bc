"""Static charts (app/charts.py): Vega-Lite drawn to SVG on the server. Dataset text stays text,
the marks' relative links stay relative, a stretched chart is drawn at the given width and shrinks
to its column, facets keep their panel sizes."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd

from app import charts, figures


def test_dataset_text_is_escaped_in_the_svg():
    phrase = '<script>alert("x")</script> & <b>bold</b>'
    svg = charts.svg(json.dumps(figures.attention_overlay(
        np.ones(4), (2, 2), None, (32, 32), [{"x": 0, "y": 0, "w": 8, "h": 8, "phrase": phrase}])))
    assert "<script" not in svg and "<b>" not in svg
    assert "&lt;script&gt;" in svg and "&amp;" in svg


def test_relative_links_stay_relative():
    frame = pd.DataFrame({"student_layer": [0, 0, 1, 1], "head": [0, -1, 0, -1], "mean": [0.1, 0.2, 0.3, 0.4],
                          "n": 5, "link": [f"item_explorer?layer={i}&head={h}" for i, h in ((0, 0), (0, 9), (1, 0), (1, 9))]})
    svg = charts.svg(json.dumps(figures.layer_head_heatmap(frame, "t2i:js").to_dict()))
    found = sorted(re.findall(r'href="([^"]+)"', svg))
    assert found == ["item_explorer?layer=0&amp;head=0", "item_explorer?layer=0&amp;head=9",
                     "item_explorer?layer=1&amp;head=0", "item_explorer?layer=1&amp;head=9"]


def test_stretched_charts_take_the_width_and_shrink_to_their_column():
    table = pd.DataFrame({"category": ["a", "b"], "n": [3, 4], "teacher": [0.5, 0.7], "student": [0.4, 0.6]})
    spec = charts._spec(figures.accuracy_bars(table, "category"), 640)
    assert spec["width"] == 640
    svg = charts.svg(json.dumps(spec))
    assert svg.startswith('<svg style="max-width:100%;height:auto" ')
    width = float(re.search(r'width="([\d.]+)"', svg).group(1))
    assert 640 <= width < 800  # the plot is 640 px; axes and legend add to it
    facet = figures.by_layer(pd.DataFrame({"student_layer": [0, 1, 0, 1], "mean": [1.0, 2.0, 3.0, 4.0],
                                           "measure": ["a", "a", "b", "b"]}), "mean", "m", facet="measure")
    assert "width" not in charts._spec(facet, 640)
    assert charts._spec(figures.accuracy_bars(table, "category"), None).get("width") is None
