"""Dashboard-only figures: pure functions (arrays and frames in, plotly Figure out), no Streamlit.

    attention_overlay(att, grid, image, image_size, boxes)    one model's map over the image
    difference_overlay(diff, grid, image, image_size, boxes)  student - teacher on a common grid
    accuracy_bars(table, by)                                  teacher vs student accuracy per group
    delta_bars(table, x, y)                                   before/after differences

Figures of analysis results (layer x head heatmaps, correspondence, AUROC, outcome groups) live
in cdviz.report.figures, shared with the batch report. Text that comes from a dataset (box
phrases, category names) is HTML-escaped before it goes into a figure, because plotly renders
a subset of HTML in labels.

Tests: .venv/bin/pytest tests/app/test_figures.py -q
"""

from __future__ import annotations

import base64
import html
import io
from typing import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from PIL import Image

TEACHER_COLOUR = "#1f77b4"
STUDENT_COLOUR = "#ff7f0e"
BOX_COLOUR = "#00e5ff"
SEQUENTIAL = "Inferno"
GOOD, BAD = "#2ca02c", "#d62728"
DIVERGING = "RdBu_r"  # red: the student looks more there than the teacher; blue: less


def _escape(text: object) -> str:
    return html.escape(str(text), quote=True)


def _data_uri(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _overlay(values: np.ndarray, grid: tuple[int, int], image: Image.Image | None,
             image_size: tuple[int, int] | None, boxes: Sequence[dict], title: str, colorscale: str,
             zmin: float | None, zmax: float | None, zmid: float | None, colorbar_title: str,
             opacity: float) -> go.Figure:
    """Heatmap [rows * cols] drawn over the image's pixel frame, boxes on top.

    Coordinates are the original image's pixels (``image_size``), so boxes recorded in pixels
    line up even when ``image`` was downscaled for display.
    """
    rows, cols = grid
    z = np.asarray(values, dtype=np.float64).reshape(rows, cols)  # row-major on the patch grid
    if image_size is None:
        image_size = image.size if image is not None else (cols * 16, rows * 16)
    width, height = image_size
    fig = go.Figure()
    if image is not None:
        fig.add_trace(go.Image(source=_data_uri(image), x0=0, y0=0, dx=width / image.size[0],
                               dy=height / image.size[1], hoverinfo="skip"))
    fig.add_trace(go.Heatmap(
        z=z, x0=width / cols / 2, dx=width / cols, y0=height / rows / 2, dy=height / rows,
        colorscale=colorscale, zmin=zmin, zmax=zmax, zmid=zmid, opacity=opacity if image is not None else 1.0,
        colorbar=dict(title=dict(text=colorbar_title, side="right"), thickness=12),
        hovertemplate="row %{customdata[0]}, col %{customdata[1]}<br>%{z:.3g}<extra></extra>",
        customdata=np.stack(np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij"), axis=-1),
    ))
    for b in boxes:
        x0, y0 = float(b["x"]), float(b["y"])
        x1, y1 = x0 + float(b["w"]), y0 + float(b["h"])
        fig.add_shape(type="rect", x0=x0, y0=y0, x1=x1, y1=y1, line=dict(color=BOX_COLOUR, width=2))
        if b.get("phrase"):
            fig.add_annotation(x=x0, y=y0, text=_escape(b["phrase"]), showarrow=False, xanchor="left",
                               yanchor="bottom", font=dict(color=BOX_COLOUR, size=11),
                               bgcolor="rgba(0,0,0,0.55)")
    fig.update_xaxes(range=[0, width], visible=False, constrain="domain")
    # Image convention: y grows downwards, and one pixel is square.
    fig.update_yaxes(range=[height, 0], visible=False, scaleanchor="x", constrain="domain")
    fig.update_layout(title=dict(text=_escape(title), font=dict(size=14)), margin=dict(l=0, r=0, t=36, b=0),
                      height=340)
    return fig


def attention_overlay(att: np.ndarray, grid: tuple[int, int], image: Image.Image | None = None,
                      image_size: tuple[int, int] | None = None, boxes: Sequence[dict] = (), title: str = "",
                      zmax: float | None = None, colorbar_title: str = "x uniform",
                      opacity: float = 0.55) -> go.Figure:
    """One attention map over the image.

    Args:
        att: [rows * cols] values per image token, row-major on ``grid``.
        grid: (rows, cols) of the model's patch grid.
        image: the item's image (possibly downscaled), or None to draw the map alone.
        image_size: (width, height) of the original image, the frame boxes are given in.
        boxes: dicts with pixel x, y, w, h and an optional phrase.
        zmax: top of the colour scale; pass the same value to two panels to compare them.
    """
    return _overlay(att, grid, image, image_size, boxes, title, SEQUENTIAL, 0.0, zmax, None, colorbar_title, opacity)


def difference_overlay(diff: np.ndarray, grid: tuple[int, int], image: Image.Image | None = None,
                       image_size: tuple[int, int] | None = None, boxes: Sequence[dict] = (),
                       title: str = "student - teacher", colorbar_title: str = "difference",
                       opacity: float = 0.65) -> go.Figure:
    """A signed map (student minus teacher on their common grid), colour scale centred on 0."""
    bound = float(np.nanmax(np.abs(diff))) if np.size(diff) and np.isfinite(diff).any() else 1.0
    bound = bound or 1.0
    return _overlay(diff, grid, image, image_size, boxes, title, DIVERGING, -bound, bound, 0.0, colorbar_title,
                    opacity)


def accuracy_bars(table: pd.DataFrame, by: str) -> go.Figure:
    """Grouped bars of teacher and student accuracy.

    Args:
        table: one row per group with columns ``by``, ``teacher``, ``student`` (fractions) and ``n``.
        by: the grouping column (e.g. "category").
    """
    labels = [_escape(v) for v in table[by]]
    fig = go.Figure()
    for model, colour in (("teacher", TEACHER_COLOUR), ("student", STUDENT_COLOUR)):
        fig.add_trace(go.Bar(x=labels, y=table[model], name=model, marker_color=colour,
                             customdata=table["n"], hovertemplate="%{x}: %{y:.1%} of %{customdata} items"))
    fig.update_layout(barmode="group", yaxis=dict(title="accuracy", tickformat=".0%", range=[0, 1]),
                      xaxis_title=by, height=340, margin=dict(l=0, r=0, t=30, b=0),
                      legend=dict(orientation="h", y=1.1))
    return fig


def delta_bars(table: pd.DataFrame, x: str, y: str, title: str = "", y_title: str = "",
               higher_is_better: bool = True) -> go.Figure:
    """Bars of a signed change per ``x`` (after - before): green where it went the good way."""
    values = table[y].to_numpy(dtype=np.float64)
    good = values >= 0 if higher_is_better else values <= 0
    fig = go.Figure(go.Bar(x=[_escape(v) for v in table[x]], y=values, marker_color=np.where(good, GOOD, BAD),
                           hovertemplate="%{x}: %{y:+.4g}<extra></extra>"))
    fig.add_hline(y=0, line_color="#888", line_width=1)
    fig.update_xaxes(title=_escape(x), type="category")
    fig.update_layout(title=_escape(title), yaxis_title=_escape(y_title), height=320,
                      margin=dict(l=0, r=0, t=40, b=0))
    return fig


def distribution_by_group(values: np.ndarray, groups: Sequence[str], labels: dict[str, str], title: str = "",
                          y_title: str = "misalignment") -> go.Figure:
    """Box plots (with points) of per-item values, one box per outcome group, in ``labels`` order.

    Args:
        values: [I] one value per item. groups: [I] each item's group key.
        labels: {group key: label} giving the order and the legend text.
    """
    values, groups = np.asarray(values, dtype=np.float64), np.asarray(groups)
    fig = go.Figure()
    for key, text in labels.items():
        sel = values[groups == key]
        if sel.size:
            fig.add_trace(go.Box(y=sel, name=f"{_escape(key)} (n={sel.size})", boxpoints="outliers",
                                 hovertext=_escape(text)))
    fig.update_layout(title=_escape(title), yaxis_title=_escape(y_title), showlegend=False, height=340,
                      margin=dict(l=0, r=0, t=40, b=0))
    return fig
