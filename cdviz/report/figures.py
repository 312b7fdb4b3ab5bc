"""Pure figure functions: analysis result or frame -> plotly Figure. Shared by the batch report
and the Streamlit dashboard (app/), so signatures here are a stable API.

    fig_accuracy_by_category(summary_or_frame)       grouped bars, teacher vs student per category
    fig_misalignment_by_layer(mis_result_or_frame, measures=None)   mean +- 95% CI per student layer, a
                                                     panel (own scale) per measure, noise floor dotted
    fig_layer_head_heatmap(frame, value="mean", measure=None)       student layer x head heatmap
    fig_layer_similarity(layer_corr_result_or_frame) teacher x student similarity + monotone map
    fig_head_matching(layer_corr_result, student_layer)             head x head values, matched pairs
    fig_auroc_by_layer(error_link_result, measure=None)             AUROC +- CI per layer and measure
    fig_misalignment_by_outcome(error_link_result, measure=None)    TR/SR ... TW/SW per layer
    fig_grounding_by_layer(grounding_result)         in-box share per layer, both models
    fig_sinks_by_layer(sinks_result)                 sink share before / after the filter
    fig_attribution_agreement(attribution_result)    attention vs IG agreement per layer
    fig_compare_layers(frame)                        compare_runs deltas per layer with CI, a panel per
                                                     measure; grey where the interval includes 0

Layer axes tick at whole layers only; axis titles name the model (``student=`` / ``teacher=``
labels, default "student" / "teacher") and say which direction is further apart.

Every dataset string shown in a figure (categories, measures) goes through `label`, which
HTML-escapes it: plotly renders its own subset of HTML in text, so a category named
"<b>x</b>" must be escaped to be shown as written.
"""

from __future__ import annotations

import html
from typing import Any, Sequence

import math

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

TEACHER_COLOR = "#4C72B0"
STUDENT_COLOR = "#DD8452"
GROUP_COLORS = {"TR/SR": "#55A868", "TR/SW": "#C44E52", "TW/SR": "#8172B3", "TW/SW": "#937860"}
CHANGE_COLORS = {"fell": "#4C72B0", "rose": "#DD8452", "no change": "#9a9a9a"}
MISALIGNMENT = "misalignment (larger = further apart)"
PANEL_COLUMNS = 2


def label(x: Any) -> str:
    """A dataset value as safe text for a plotly label."""
    return html.escape(str(x), quote=True)


def _layout(fig: go.Figure, title: str, x: str, y: str) -> go.Figure:
    """Shared styling; title and axis titles are escaped here (pass them raw)."""
    fig.update_layout(title=label(title), xaxis_title=label(x), yaxis_title=label(y), template="plotly_white",
                      margin=dict(l=60, r=20, t=50, b=50), legend=dict(orientation="h", y=-0.2))
    return fig


def _integer_layers(fig: go.Figure) -> go.Figure:
    """Layer axes show whole layers only (no 0.5 ticks)."""
    fig.update_xaxes(tickmode="linear", tick0=0, dtick=1, tickformat="d")
    return fig


def _panels(measures: Sequence[str], title: str, x: str, y: str) -> go.Figure:
    """One subplot per measure, each with its own y scale, titled by the (escaped) measure."""
    cols = min(PANEL_COLUMNS, max(1, len(measures)))
    rows = max(1, math.ceil(len(measures) / cols))
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[label(m) for m in measures], shared_xaxes=False,
                        horizontal_spacing=0.1, vertical_spacing=0.32 / rows)
    fig.update_layout(title=label(title), template="plotly_white", height=max(360, 280 * rows),
                      margin=dict(l=60, r=20, t=70, b=50), legend=dict(orientation="h", y=-0.12 / rows))
    fig.update_xaxes(title_text=label(x), row=rows)
    fig.update_yaxes(title_text=label(y), col=1)
    return _integer_layers(fig)


def _cell(i: int) -> dict:
    return dict(row=i // PANEL_COLUMNS + 1, col=i % PANEL_COLUMNS + 1)


def _err(frame: pd.DataFrame, value: str = "mean") -> dict:
    """Asymmetric error bars from ci_low / ci_high columns."""
    return dict(type="data", symmetric=False, array=(frame["ci_high"] - frame[value]).to_numpy(),
                arrayminus=(frame[value] - frame["ci_low"]).to_numpy())


def fig_accuracy_by_category(data: dict | pd.DataFrame) -> go.Figure:
    """Teacher vs student accuracy per category.

    Args:
        data: a report summary (uses summary["accuracy"]["by_category"]) or a frame with columns
            category, teacher, student (accuracies in [0, 1]).
    """
    frame = pd.DataFrame(data["accuracy"]["by_category"]) if isinstance(data, dict) else data
    fig = go.Figure()
    for model, color in (("teacher", TEACHER_COLOR), ("student", STUDENT_COLOR)):
        fig.add_bar(x=[label(c) for c in frame["category"]], y=frame[model], name=model, marker_color=color)
    fig.update_layout(barmode="group", yaxis_range=[0, 1])
    return _layout(fig, "Accuracy by category", "category", "accuracy")


def fig_misalignment_by_layer(data, measures: Sequence[str] | None = None, *, student: str = "student"
                              ) -> go.Figure:
    """Misalignment of the head-averaged map per student layer with 95% intervals: one panel per
    measure (each on its own scale), the teacher's split-half noise floor dotted where known.

    Args:
        data: a MisalignmentResult or its ``by_layer()`` frame (measure, student_layer, mean,
            ci_low, ci_high, optionally baseline).
        measures: which measures to draw (default all).
        student: the student's name for the layer axis.
    """
    frame = data.by_layer() if hasattr(data, "by_layer") else data
    measures = list(measures or sorted(frame["measure"].unique()))
    fig = _panels(measures, "Misalignment by student layer (head-averaged map)", f"student layer ({student})",
                  MISALIGNMENT)
    for i, m in enumerate(measures):
        sub = frame[frame["measure"] == m].sort_values("student_layer")
        fig.add_scatter(x=sub["student_layer"], y=sub["mean"], error_y=_err(sub), mode="lines+markers", name=label(m),
                        marker_color=STUDENT_COLOR, showlegend=False, **_cell(i))
        if "baseline" in sub and sub["baseline"].notna().any():
            fig.add_scatter(x=sub["student_layer"], y=sub["baseline"], mode="lines", name="noise floor",
                            line=dict(dash="dot", color="grey"), showlegend=i == 0, **_cell(i))
    return fig


def fig_layer_head_heatmap(frame: pd.DataFrame, value: str = "mean", measure: str | None = None, *,
                           student: str = "student") -> go.Figure:
    """Student layer x head heatmap of ``value``.

    Args:
        frame: columns student_layer (or layer), head (-1 = the head-averaged map, drawn as
            "avg map"), ``value``, and optionally measure (e.g. MisalignmentResult.by_layer_head()).
        measure: keep only this measure (default: the first one present).
        student: the student's name for the axes.
    """
    if "measure" in frame:
        measure = measure or sorted(frame["measure"].unique())[0]
        frame = frame[frame["measure"] == measure]
    layer_col = "student_layer" if "student_layer" in frame else "layer"
    table = frame.pivot_table(index=layer_col, columns="head", values=value, aggfunc="mean")
    heads = [h for h in table.columns if h != -1] + ([-1] if -1 in table.columns else [])
    table = table[heads]
    scale = "misalignment" if value == "mean" else value
    fig = go.Figure(go.Heatmap(z=table.to_numpy(), x=["avg map" if h == -1 else str(h) for h in heads],
                               y=[str(v) for v in table.index], colorscale="Viridis",
                               colorbar=dict(title=label(scale))))
    title = (f"{scale} by layer and head" + (f" ({measure}; larger = further apart)" if measure else "")
             + "; avg map = the head-averaged map, not the mean of the heads")
    return _layout(fig, title, f"head of {student}", f"layer of {student}")


def fig_layer_similarity(result, metric: str = "", higher_is_aligned: bool | None = None, *, teacher: str = "teacher",
                         student: str = "student") -> go.Figure:
    """Teacher x student layer similarity heatmap with the monotone layer map overlaid.

    Args:
        result: a LayerCorrespondenceResult, or its ``to_frame()`` / the report's
            layer_similarity table (teacher_layer, student_layer, value, matched).
        metric, higher_is_aligned: labels for a frame (a result carries its own).
    """
    if isinstance(result, pd.DataFrame):
        table = result.pivot(index="teacher_layer", columns="student_layer", values="value")
        z, t_layers, s_layers = table.to_numpy(), list(table.index), list(table.columns)
        matched = result[result["matched"].astype(bool)].sort_values("student_layer")
        layer_map = dict(zip(matched["student_layer"], matched["teacher_layer"]))
        field = ""
    else:
        z, t_layers, s_layers = result.similarity, result.teacher_layers, result.student_layers
        layer_map = result.layer_map
        metric, higher_is_aligned, field = result.metric, result.higher_is_aligned, result.field
    fig = go.Figure(go.Heatmap(z=z, x=[str(s) for s in s_layers], y=[str(t) for t in t_layers], colorscale="Viridis",
                               colorbar=dict(title=label(metric))))
    fig.add_scatter(x=[str(s) for s in layer_map], y=[str(t) for t in layer_map.values()],
                    mode="lines+markers", name="monotone map", marker=dict(color="white", size=9),
                    line=dict(color="white"))
    direction = "" if higher_is_aligned is None else \
        " (higher = more alike)" if higher_is_aligned else " (lower = more alike)"
    return _layout(fig, f"Layer similarity: {field} {metric}{direction}".replace("  ", " "),
                   f"student layer ({student})", f"teacher layer ({teacher})")


def fig_head_matching(result, student_layer: int) -> go.Figure:
    """Head x head mean values within one matched layer pair; matched pairs marked."""
    sub = result.heads[result.heads["student_layer"] == student_layer]
    fig = go.Figure(go.Heatmap(x=sub["teacher_head"].astype(str), y=sub["student_head"].astype(str),
                               z=sub["value"], colorscale="Viridis", colorbar=dict(title=label(result.metric))))
    m = sub[sub["matched"].astype(bool)]
    fig.add_scatter(x=m["teacher_head"].astype(str), y=m["student_head"].astype(str), mode="markers", name="matched",
                    marker=dict(symbol="x", color="white", size=10))
    t = sub["teacher_layer"].iloc[0] if len(sub) else "?"
    return _layout(fig, f"Heads: student layer {student_layer} vs teacher layer {t}", "teacher head", "student head")


def fig_auroc_by_layer(result, measure: str | None = None, *, student: str = "student") -> go.Figure:
    """Error-link AUROC per student layer with bootstrap 95% intervals; 0.5 = no link.

    Args:
        result: an ErrorLinkResult or a frame with measure, student_layer, auroc, ci_low, ci_high
            (and category: only "all" is drawn).
        measure: one measure (default: all, one line each).
    """
    frame = result.overall() if hasattr(result, "overall") else result
    if "category" in frame:
        frame = frame[frame["category"] == "all"]
    fig = go.Figure()
    for m in [measure] if measure else sorted(frame["measure"].unique()):
        sub = frame[frame["measure"] == m].sort_values("student_layer")
        fig.add_scatter(x=sub["student_layer"], y=sub["auroc"], error_y=_err(sub, "auroc"), mode="lines+markers",
                        name=label(m))
    fig.add_hline(y=0.5, line_dash="dash", line_color="grey")
    fig.update_yaxes(range=[0, 1])
    return _integer_layers(_layout(fig, "Does misalignment predict student errors? (teacher-right items)",
                                   f"student layer ({student})", "AUROC (0.5 = no link; higher = errors more misaligned)"))


def fig_misalignment_by_outcome(result, measure: str | None = None, *, student: str = "student") -> go.Figure:
    """Mean misalignment per student layer in each outcome group (TR/SR, TR/SW, TW/SR, TW/SW).

    Args:
        result: an ErrorLinkResult (uses ``by_outcome``) or that frame.
        measure: which measure (default: the first).
    """
    frame = result.by_outcome if hasattr(result, "by_outcome") else result
    measure = measure or sorted(frame["measure"].unique())[0]
    frame = frame[frame["measure"] == measure]
    fig = go.Figure()
    for group, color in GROUP_COLORS.items():
        sub = frame[(frame["group"] == group) & frame["mean"].notna()].sort_values("student_layer")
        if len(sub):
            fig.add_scatter(x=sub["student_layer"], y=sub["mean"], error_y=_err(sub), mode="lines+markers",
                            name=f"{group} (n={int(sub['n'].iloc[0])})", marker_color=color)
    return _integer_layers(_layout(fig, f"Misalignment by outcome group ({measure})", f"student layer ({student})",
                                   MISALIGNMENT))


def fig_grounding_by_layer(result) -> go.Figure:
    """Head-mean share of image attention inside the object boxes, per layer, both models,
    against layer depth (layer / (layers - 1)) so models of different depth line up."""
    frame = result.by_layer() if hasattr(result, "by_layer") else result
    fig = go.Figure()
    for model, color in (("teacher", TEACHER_COLOR), ("student", STUDENT_COLOR)):
        sub = frame[frame["model"] == model].sort_values("layer")
        depth = sub["layer"] / max(1, sub["layer"].max())
        fig.add_scatter(x=depth, y=sub["in_box"], mode="lines+markers", name=model, marker_color=color,
                        text=[f"layer {v}" for v in sub["layer"]])
    return _layout(fig, "Attention on the named objects", "relative depth", "share of image attention in boxes")


def fig_sinks_by_layer(result) -> go.Figure:
    """Head-mean share of received attention taken by sink tokens, raw and after the filter."""
    frame = result.frame if hasattr(result, "frame") else result
    frame = frame[frame["head"] == -1]
    fig = go.Figure()
    for model, color in (("teacher", TEACHER_COLOR), ("student", STUDENT_COLOR)):
        sub = frame[frame["model"] == model].sort_values("layer")
        fig.add_scatter(x=sub["layer"], y=sub["sink_share"], mode="lines+markers", name=f"{model} raw",
                        marker_color=color)
        fig.add_scatter(x=sub["layer"], y=sub["sink_share_filt"], mode="lines+markers", name=f"{model} filtered",
                        marker_color=color, line=dict(dash="dot"))
    return _integer_layers(_layout(fig, "Attention sinks: share of received attention (head-averaged)",
                                   "layer (each model's own)", "sink share"))


def fig_attribution_agreement(result) -> go.Figure:
    """Mean spearman between |IG attribution| and each layer's attention, per model."""
    frame = result.by_layer() if hasattr(result, "by_layer") else result
    fig = go.Figure()
    for model, color in (("teacher", TEACHER_COLOR), ("student", STUDENT_COLOR)):
        sub = frame[frame["model"] == model].sort_values("layer")
        fig.add_scatter(x=sub["layer"], y=sub["spearman"], mode="lines+markers", name=model, marker_color=color)
    fig.add_hline(y=0.0, line_dash="dash", line_color="grey")
    return _integer_layers(_layout(fig, "Attention vs integrated-gradients attribution", "layer (each model's own)",
                                   "spearman (higher = attention follows attribution)"))


def fig_compare_layers(frame: pd.DataFrame, value: str = "delta", *, what: str = "misalignment",
                       student: str = "student") -> go.Figure:
    """Per-layer change after - before with 95% intervals (compare_runs' layer tables), one panel
    per measure on its own scale; points whose interval includes 0 are grey ("no change").

    Args:
        frame: columns measure, student_layer, ``value``, ci_low, ci_high.
        what: the quantity that changed, for the titles ("misalignment" or "AUROC").
    """
    from cdviz.report.findings import change_word

    measures = sorted(frame["measure"].unique())
    hint = " (negative = closer to the teacher)" if what == "misalignment" else ""
    fig = _panels(measures, f"Change in {what}, after - before{hint}", f"student layer ({student})",
                  f"change in {what}")
    for i, m in enumerate(measures):
        sub = frame[frame["measure"] == m].sort_values("student_layer")
        words = [change_word(d, lo, hi) for d, lo, hi in zip(sub[value], sub["ci_low"], sub["ci_high"])]
        fig.add_scatter(x=sub["student_layer"], y=sub[value], error_y=_err(sub, value), mode="lines+markers",
                        name=label(m), showlegend=False, line=dict(color="#cccccc"),
                        marker=dict(color=[CHANGE_COLORS[w] for w in words], size=9),
                        text=words, hovertemplate="layer %{x}: %{y:+.4f} (%{text})<extra></extra>", **_cell(i))
        fig.add_hline(y=0.0, line_dash="dash", line_color="grey", **_cell(i))
    return fig


def empty_figure(message: str) -> go.Figure:
    """A placeholder that says why there is nothing to draw."""
    fig = go.Figure()
    fig.add_annotation(text=label(message), showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_layout(template="plotly_white", xaxis_visible=False, yaxis_visible=False, height=200)
    return fig
