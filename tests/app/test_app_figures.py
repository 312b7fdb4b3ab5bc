"""app/figures.py: pure figures, checked on their traces and shapes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from PIL import Image

from app import figures


def test_overlay_places_grid_on_image_pixels_and_draws_boxes():
    att = np.arange(6, dtype=np.float64)  # grid 2 x 3, row-major
    img = Image.new("RGB", (30, 20), (10, 20, 30))
    boxes = [{"phrase": "red <b>cube</b>", "x": 3, "y": 4, "w": 10, "h": 6, "image": 0}]
    fig = figures.attention_overlay(att, (2, 3), img, (60, 40), boxes, title="t", zmax=7.0)
    image, heat = fig.data
    assert isinstance(image, go.Image) and image.source.startswith("data:image/png;base64,")
    assert image.dx == 2 and image.dy == 2  # a 30 x 20 display copy of a 60 x 40 original
    np.testing.assert_array_equal(heat.z, [[0, 1, 2], [3, 4, 5]])
    assert (heat.x0, heat.dx, heat.y0, heat.dy) == (10, 20, 10, 20)  # cell centres in original pixels
    assert heat.zmax == 7.0 and heat.zmin == 0.0
    rect = fig.layout.shapes[0]
    assert (rect.x0, rect.y0, rect.x1, rect.y1) == (3, 4, 13, 10)
    assert fig.layout.annotations[0].text == "red &lt;b&gt;cube&lt;/b&gt;"  # dataset text never becomes markup
    assert list(fig.layout.yaxis.range) == [40, 0]


def test_overlay_without_image_uses_the_grid_frame():
    fig = figures.attention_overlay(np.ones(4), (2, 2))
    assert len(fig.data) == 1 and fig.data[0].opacity == 1.0
    assert list(fig.layout.xaxis.range) == [0, 32]


def test_difference_scale_is_symmetric_about_zero():
    fig = figures.difference_overlay(np.array([-0.5, 2.0, 0.0, 1.0]), (2, 2))
    heat = fig.data[0]
    assert (heat.zmin, heat.zmax, heat.zmid) == (-2.0, 2.0, 0.0)
    assert figures.difference_overlay(np.zeros(4), (2, 2)).data[0].zmax == 1.0


def test_accuracy_bars_one_trace_per_model():
    table = pd.DataFrame({"skill": ["<i>p</i>", "r"], "n": [3, 4], "teacher": [1.0, 0.5], "student": [0.25, 0.5]})
    fig = figures.accuracy_bars(table, "skill")
    assert [t.name for t in fig.data] == ["teacher", "student"]
    assert list(fig.data[1].y) == [0.25, 0.5]
    assert list(fig.data[0].x) == ["&lt;i&gt;p&lt;/i&gt;", "r"]


def test_distribution_by_group_in_label_order_and_skips_empty():
    fig = figures.distribution_by_group(np.array([1.0, 2.0, 3.0]), ["b", "a", "b"], {"a": "A", "b": "B", "c": "C"})
    assert [t.name for t in fig.data] == ["a (n=1)", "b (n=2)"]
    assert list(fig.data[1].y) == [1.0, 3.0]


def test_delta_bars_colour_the_good_direction():
    frame = pd.DataFrame({"layer": [1, 2], "d": [-0.1, 0.2]})
    assert list(figures.delta_bars(frame, "layer", "d").data[0].marker.color) == [figures.BAD, figures.GOOD]
    lower = figures.delta_bars(frame, "layer", "d", higher_is_better=False)  # e.g. misalignment
    assert list(lower.data[0].marker.color) == [figures.GOOD, figures.BAD]
