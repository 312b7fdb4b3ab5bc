"""Dashboard figures: pure functions (arrays and frames in, Vega-Lite chart out), no Streamlit.
The overlays are plain Vega-Lite dicts (``st.vega_lite_chart``), the others altair charts.

    attention_overlay(att, grid, image, image_size, boxes)    one model's map over the image
    difference_overlay(diff, grid, image, image_size, boxes)  student - teacher on a common grid
    head_grid(maps, grid)                                     every head of one layer, one small map each
    accuracy_bars(table, by)                                  teacher vs student accuracy per group
    delta_bars(table, x, y)                                   before/after differences
    distribution_by_group(values, groups, labels)             per-item values, a box per outcome group
    layer_head_heatmap(frame, measure)                        student layer x head; a click selects a cell
    by_layer(frame, y)                                        a value per student layer with its interval

Why Vega-Lite (altair) and not plotly as the batch report: a fresh browser has to fetch and parse
Streamlit's 4.7 MB plotly bundle before the first plotly chart draws, about 2.5 s of the 3 s a page
may take (measured in headless Chromium on the demo run); the Vega-Lite bundle costs about 0.5 s.
The report's plotly figures (cdviz.report.figures) stay in the HTML report and behind the pages'
"interactive report figures" switches.

Vega-Lite draws every string as text, never as markup, so dataset text needs no escaping here.

Tests: pytest tests/app/test_app_figures.py -q
"""

from __future__ import annotations

import base64
import io
from typing import Sequence

import altair as alt
import numpy as np
import pandas as pd
from PIL import Image

TEACHER_COLOUR = "#4C72B0"
STUDENT_COLOUR = "#DD8452"
BOX_COLOUR = "#00e5ff"
SEQUENTIAL = "inferno"
GOOD, BAD, NEUTRAL = "#2ca02c", "#d62728", "#9a9a9a"
DIVERGING = "redblue"  # reversed below: red where the student looks more than the teacher, blue less
OVERLAY_WIDTH = 300  # px; the height follows the image's aspect
CELL = "cell"  # name of the layer x head heatmap's click selection
OUTLIER = "outlier"  # name of the per-item distribution's outlier click selection
LAYER_AXIS = alt.Axis(tickMinStep=1, format="d")  # whole layers only


class Spec(dict):
    """A Vega-Lite spec written as a plain dict (for ``st.vega_lite_chart``); ``to_dict()`` as an
    altair chart has. The overlays are built this way: altair validates every channel and the whole
    chart against the schema, which took ~0.3 s of the item explorer's 0.45 s script."""

    def to_dict(self) -> dict:
        return dict(self)


_last_uri: tuple = (None, "")  # (image, its data URI): the overlays of one page share one image


def _data_uri(image: Image.Image) -> str:
    global _last_uri
    last = _last_uri  # one read: another session's thread may replace it meanwhile
    if last[0] is image:
        return last[1]
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="JPEG", quality=85)
    uri = "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
    _last_uri = (image, uri)
    return uri


def _cells(values: np.ndarray, grid: tuple[int, int], width: float, height: float) -> pd.DataFrame:
    """One row per grid cell: its pixel rectangle in the image's frame and its value."""
    rows, cols = grid
    r, c = np.divmod(np.arange(rows * cols), cols)  # row-major on the patch grid
    return pd.DataFrame({"row": r, "col": c, "x": c * width / cols, "x2": (c + 1) * width / cols,
                         "y": r * height / rows, "y2": (r + 1) * height / rows,
                         "value": np.asarray(values, dtype=np.float64).reshape(-1)})


def _cell_records(values: np.ndarray, grid: tuple[int, int], width: float, height: float) -> list[dict]:
    """``_cells`` as JSON-ready rows; pixel corners rounded to 0.01 px and values to 6 significant
    digits (the tooltip shows 3), which keeps a 24 x 24 grid's chart small to send."""
    rows, cols = grid
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    xs = [round(c * width / cols, 2) for c in range(cols + 1)]
    ys = [round(r * height / rows, 2) for r in range(rows + 1)]
    return [{"row": i // cols, "col": i % cols, "x": xs[i % cols], "x2": xs[i % cols + 1], "y": ys[i // cols],
             "y2": ys[i // cols + 1], "value": float(f"{x:.6g}") if np.isfinite(x) else None}
            for i, x in enumerate(v.tolist())]


def _overlay(values: np.ndarray, grid: tuple[int, int], image: Image.Image | None,
             image_size: tuple[int, int] | None, boxes: Sequence[dict], title: str, scale: dict,
             legend_title: str, opacity: float, width: int) -> Spec:
    """A heatmap of ``values`` [rows * cols] drawn over the image's pixel frame, boxes on top.

    Coordinates are the original image's pixels (``image_size``), so boxes recorded in pixels line
    up even when ``image`` was downscaled for display.
    """
    rows, cols = grid
    if image_size is None:
        image_size = image.size if image is not None else (cols * 16, rows * 16)
    w, h = (float(v) for v in image_size)
    height = max(1, round(width * h / w))
    pos = {"x": {"field": "x", "type": "quantitative", "scale": {"domain": [0, w], "nice": False, "zero": False},
                 "axis": None},
           "x2": {"field": "x2"},
           "y": {"field": "y", "type": "quantitative",
                 "scale": {"domain": [0, h], "nice": False, "zero": False, "reverse": True}, "axis": None},
           "y2": {"field": "y2"}}
    layers = []
    if image is not None:
        # Placed by its corners in the image's pixel frame, so it stays under the cells at any size.
        layers.append({"data": {"values": [{"x": 0.0, "x2": w, "y": 0.0, "y2": h, "url": _data_uri(image)}]},
                       "mark": {"type": "image", "aspect": False},
                       "encoding": {**pos, "url": {"field": "url", "type": "nominal"}}})
    layers.append({"data": {"values": _cell_records(values, grid, w, h)},
                   "mark": {"type": "rect", "opacity": opacity if image is not None else 1.0},
                   "encoding": {**pos, "color": {"field": "value", "type": "quantitative", "scale": scale,
                                                 "title": legend_title},
                                "tooltip": [{"field": "row", "type": "ordinal"}, {"field": "col", "type": "ordinal"},
                                            {"field": "value", "type": "quantitative", "format": ".3g"}]}})
    if boxes:
        frame = [{"x": float(b["x"]), "y": float(b["y"]), "x2": float(b["x"]) + float(b["w"]),
                  "y2": float(b["y"]) + float(b["h"]), "phrase": str(b.get("phrase") or "")} for b in boxes]
        layers.append({"data": {"values": frame}, "mark": {"type": "rect", "fill": None, "stroke": BOX_COLOUR,
                                                           "strokeWidth": 2}, "encoding": pos})
        layers.append({"data": {"values": frame},
                       "mark": {"type": "text", "align": "left", "baseline": "bottom", "color": BOX_COLOUR,
                                "fontSize": 11},
                       "encoding": {"x": pos["x"], "y": pos["y"], "text": {"field": "phrase", "type": "nominal"}}})
    spec = Spec({"layer": layers, "width": width, "height": height})
    if title:
        spec["title"] = title
    return spec


def attention_overlay(att: np.ndarray, grid: tuple[int, int], image: Image.Image | None = None,
                      image_size: tuple[int, int] | None = None, boxes: Sequence[dict] = (), title: str = "",
                      zmax: float | None = None, legend_title: str = "x uniform", opacity: float = 0.55,
                      width: int = OVERLAY_WIDTH) -> Spec:
    """One attention map over the image (a Vega-Lite spec for ``st.vega_lite_chart``).

    Args:
        att: [rows * cols] values per image token, row-major on ``grid``.
        grid: (rows, cols) of the model's patch grid.
        image: the item's image (possibly downscaled), or None to draw the map alone.
        image_size: (width, height) of the original image, the frame boxes are given in.
        boxes: dicts with pixel x, y, w, h and an optional phrase.
        zmax: top of the colour scale; pass the same value to two panels to compare them.
    """
    top = float(zmax) if zmax is not None else float(np.nanmax(att)) if np.size(att) else 1.0
    scale = {"scheme": SEQUENTIAL, "domain": [0.0, top or 1.0]}
    return _overlay(att, grid, image, image_size, boxes, title, scale, legend_title, opacity, width)


def difference_overlay(diff: np.ndarray, grid: tuple[int, int], image: Image.Image | None = None,
                       image_size: tuple[int, int] | None = None, boxes: Sequence[dict] = (),
                       title: str = "student - teacher", legend_title: str = "difference",
                       opacity: float = 0.65, width: int = OVERLAY_WIDTH) -> Spec:
    """A signed map (student minus teacher on their common grid), colour scale centred on 0."""
    bound = float(np.nanmax(np.abs(diff))) if np.size(diff) and np.isfinite(diff).any() else 1.0
    bound = bound or 1.0
    scale = {"scheme": DIVERGING, "domain": [-bound, bound], "domainMid": 0.0, "reverse": True}
    return _overlay(diff, grid, image, image_size, boxes, title, scale, legend_title, opacity, width)


def head_grid(maps: np.ndarray, grid: tuple[int, int], title: str = "", columns: int = 8,
              cell_px: int = 110) -> alt.FacetChart:
    """Every head's map of one layer as small heatmaps sharing one colour scale (bertviz-style).

    Args:
        maps: [H, rows * cols] one map per head, each relative to uniform (1 = uniform).
        grid: (rows, cols) of the model's patch grid.
    """
    rows, cols = grid
    frame = pd.concat([_cells(m, grid, cols, rows).assign(head=h) for h, m in enumerate(np.asarray(maps))])
    x = alt.X("x:Q", scale=alt.Scale(domain=[0, cols], nice=False), axis=None)
    y = alt.Y("y:Q", scale=alt.Scale(domain=[0, rows], nice=False, reverse=True), axis=None)
    chart = alt.Chart(frame).mark_rect().encode(
        x=x, x2="x2", y=y, y2="y2", color=alt.Color("value:Q", scale=alt.Scale(scheme=SEQUENTIAL), title="x uniform"),
        tooltip=["head:O", "row:O", "col:O", alt.Tooltip("value:Q", format=".3g")],
    ).properties(width=cell_px, height=max(1, round(cell_px * rows / cols)))
    return chart.facet(facet=alt.Facet("head:O", title="head"), columns=columns, title=title)


def accuracy_bars(table: pd.DataFrame, by: str) -> alt.Chart:
    """Grouped bars of teacher and student accuracy.

    Args:
        table: one row per group with columns ``by``, ``teacher``, ``student`` (fractions) and ``n``.
        by: the grouping column (e.g. "category").
    """
    long = table[[by, "n", "teacher", "student"]].melt(id_vars=[by, "n"], var_name="model", value_name="accuracy")
    long[by] = long[by].astype(str)
    return alt.Chart(long).mark_bar().encode(
        x=alt.X(f"{by}:N", title=by), xOffset=alt.XOffset("model:N", sort=["teacher", "student"]),
        y=alt.Y("accuracy:Q", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format=".0%"),
                title="accuracy (higher = better)"),
        color=alt.Color("model:N", scale=alt.Scale(domain=["teacher", "student"],
                                                   range=[TEACHER_COLOUR, STUDENT_COLOUR]),
                        legend=alt.Legend(orient="top")),
        tooltip=[f"{by}:N", "model:N", alt.Tooltip("accuracy:Q", format=".1%"), "n:Q"],
    ).properties(height=300)


def delta_bars(table: pd.DataFrame, x: str, y: str, title: str = "", y_title: str = "",
               higher_is_better: bool = True) -> alt.LayerChart:
    """Bars of a signed change per ``x`` (after - before): green where it went the good way, grey at 0."""
    values = table[y].to_numpy(dtype=np.float64)
    good = values > 0 if higher_is_better else values < 0
    colour = np.where(values == 0, NEUTRAL, np.where(good, GOOD, BAD))
    frame = pd.DataFrame({x: table[x].astype(str).to_numpy(), y: values, "colour": colour})
    bars = alt.Chart(frame).mark_bar().encode(
        x=alt.X(f"{x}:N", title=x, sort=None), y=alt.Y(f"{y}:Q", title=y_title or y),
        color=alt.Color("colour:N", scale=None), tooltip=[f"{x}:N", alt.Tooltip(f"{y}:Q", format="+.4g")])
    zero = alt.Chart(pd.DataFrame({"zero": [0.0]})).mark_rule(color="#888").encode(y="zero:Q")
    return alt.layer(bars, zero).properties(title=title, height=300)


def _href(frame: pd.DataFrame) -> dict:
    """The marks' links, when ``frame`` has a ``link`` column (static charts: clicks follow it)."""
    return {"href": alt.Href("link:N")} if "link" in frame.columns else {}


def distribution_by_group(values: np.ndarray, groups: Sequence[str], labels: dict[str, str], title: str = "",
                          y_title: str = "misalignment (larger = further apart)",
                          uids: Sequence[str] | None = None, hrefs: Sequence[str] | None = None) -> alt.Chart:
    """Box plots of per-item values, one box per outcome group, in ``labels`` order; empty groups
    are left out. Items beyond 1.5 IQR from their group's quartiles are drawn as points; with
    ``uids``, clicking one selects its uid as ``OUTLIER`` (to open it in the item explorer).

    Args:
        values: [I] one value per item. groups: [I] each item's group key.
        labels: {group key: label} giving the order and the tooltip text.
        uids: [I] item ids, for the outliers' tooltips and click selection.
        hrefs: [I] a URL per item, the outliers' links (a static chart's stand-in for the selection).
    """
    values, groups = np.asarray(values, dtype=np.float64), np.asarray(groups).astype(str)
    counts = {k: int((groups == k).sum()) for k in labels}
    names = {k: f"{k} (n={n})" for k, n in counts.items() if n}
    keep = np.isin(groups, list(names)) & np.isfinite(values)
    frame = pd.DataFrame({"group": [names[g] for g in groups[keep]], "value": values[keep],
                          "meaning": [labels[g] for g in groups[keep]],
                          "uid": np.asarray(uids).astype(str)[keep] if uids is not None else ""})
    if hrefs is not None:
        frame["link"] = np.asarray(hrefs).astype(str)[keep]
    x = alt.X("group:N", sort=list(names.values()), title="outcome group")
    box = alt.Chart(frame).mark_boxplot(extent=1.5, outliers=False).encode(
        x=x, y=alt.Y("value:Q", title=y_title), tooltip=["meaning:N"])
    q1 = frame.groupby("group")["value"].transform(lambda v: v.quantile(0.25))
    q3 = frame.groupby("group")["value"].transform(lambda v: v.quantile(0.75))
    far = frame[(frame["value"] < q1 - 1.5 * (q3 - q1)) | (frame["value"] > q3 + 1.5 * (q3 - q1))]
    points = alt.Chart(far).mark_circle(size=45, opacity=0.8).encode(
        x=x, y="value:Q", tooltip=["uid:N", "meaning:N", alt.Tooltip("value:Q", format=".4f")], **_href(far))
    if uids is not None:
        points = points.add_params(alt.selection_point(name=OUTLIER, fields=["uid"], on="click"))
    return (box + points).properties(title=title + (" (click an outlier: open the item)" if uids is not None else ""),
                                     height=320)


def layer_head_heatmap(frame: pd.DataFrame, measure: str, student: str = "student") -> alt.Chart:
    """Student layer x head misalignment; "avg map" is the head-averaged map (the layer's value),
    not the mean over heads. Clicking a cell selects its (student_layer, head) as ``CELL``.

    Args:
        frame: ``state.layer_head_frame`` output: student_layer, head (-1 = avg map), mean, n, and
            optionally ``link``, each cell's URL.
    """
    data = frame.assign(head_label=[("avg map" if h == -1 else str(int(h))) for h in frame["head"]])
    heads = sorted(h for h in data["head"].unique() if h != -1)
    order = [str(int(h)) for h in heads] + (["avg map"] if (data["head"] == -1).any() else [])
    cell = alt.selection_point(name=CELL, fields=["student_layer", "head"], on="click")
    return alt.Chart(data).mark_rect().encode(
        x=alt.X("head_label:O", sort=order, title=f"head of {student} (click a cell: its items)"),
        y=alt.Y("student_layer:O", title=f"layer of {student}"),
        color=alt.Color("mean:Q", scale=alt.Scale(scheme="viridis"), title="misalignment"),
        opacity=alt.condition(cell, alt.value(1.0), alt.value(0.6)),
        tooltip=["student_layer:O", "head_label:N", alt.Tooltip("mean:Q", format=".4f"), "n:Q"],
        **_href(data),
    ).add_params(cell).properties(title=f"{measure}: misalignment by layer and head (larger = further apart)",
                                  # A fixed height collapsed the rows to a line in Streamlit's
                                  # autosize "fit"; a step per layer draws every row.
                                  height=alt.Step(28))


def by_layer(frame: pd.DataFrame, y: str, y_title: str, colour: str | None = None, title: str = "",
             rule: float | None = None, x: str = "student_layer", x_title: str = "student layer",
             facet: str | None = None, select: str | None = None) -> alt.Chart:
    """A value per layer with its 95% interval (``ci_low``/``ci_high`` columns when present).

    Args:
        frame: one row per layer (and per ``colour`` / ``facet`` value).
        y: the value column. colour: a column drawing one line per value (e.g. measure, group).
        rule: a reference value drawn dashed (0.5 for an AUROC, 0 for a change). A ``baseline``
            column (the teacher's noise floor) is drawn dotted.
        facet: a column giving one panel per value, each with its own y scale.
        select: name of a click selection of a point's layer (``x``), e.g. to open its items.
            A ``link`` column makes each point a link instead (static charts).
    """
    data = frame.dropna(subset=[y])
    base = alt.Chart()  # data given to the layer (or facet) below, as Vega-Lite requires for facets
    enc = {"x": alt.X(f"{x}:Q", axis=LAYER_AXIS, title=x_title, scale=alt.Scale(nice=False, zero=False))}
    if colour:
        enc["color"] = alt.Color(f"{colour}:N", legend=alt.Legend(orient="top", title=None))
    tips = [f"{x}:Q", alt.Tooltip(f"{y}:Q", format=".4g")] + ([f"{colour}:N"] if colour else [])
    line = base.mark_line(point=alt.OverlayMarkDef(size=80)).encode(
        y=alt.Y(f"{y}:Q", title=y_title, scale=alt.Scale(zero=False)), tooltip=tips, **enc, **_href(data))
    if select:
        line = line.add_params(alt.selection_point(name=select, fields=[x], on="click"))
    layers = []
    if {"ci_low", "ci_high"} <= set(frame.columns):
        layers.append(base.mark_errorbar().encode(y=alt.Y("ci_low:Q", title=y_title), y2="ci_high", **enc))
    if "baseline" in frame and frame["baseline"].notna().any():  # the teacher's split-half noise floor
        layers.append(base.mark_line(strokeDash=[2, 3], color="grey").encode(
            x=enc["x"], y="baseline:Q", tooltip=[alt.Tooltip("baseline:Q", title="noise floor", format=".4g")]))
    if rule is not None:
        layers.append(base.mark_rule(strokeDash=[4, 4], color="grey").encode(y=alt.datum(rule)))
    layers.append(line)  # drawn last, so the points are on top, where a click finds them
    if facet:
        return (alt.layer(*layers).properties(width=320, height=220)
                .facet(facet=alt.Facet(f"{facet}:N", title=None), columns=2, data=data)
                .resolve_scale(y="independent").properties(title=title))
    return alt.layer(*layers, data=data).properties(title=title, height=300)
