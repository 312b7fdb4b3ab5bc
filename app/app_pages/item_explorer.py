"""Item explorer: one item's image with the teacher's and the student's attention and their difference."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from app import charts, figures, links, results, state
from cdviz.store import StoreError

FIELD_LABELS = {"t2i": "t2i: text query -> image", "i2i": "i2i: attention each image token receives",
                "i2i_filt": "i2i_filt: same, sinks filtered", "i2i_paper": "i2i_paper: VAT vector (head mean)"}
MATCHED = -1  # teacher layer choice: the group the analyses pair with the student layer

BOUND = {"bind": "query-params"}  # the widget's key is its URL parameter (app/links.py)

run = state.require_run()
store = run.store
frame = state.items(run)
st.title("Item explorer")

s_layers, t_layers = store.layers("student"), store.layers("teacher")
groups = state.layer_groups(run)
head_choices = {m: [None, *range(store.n_heads(m))] for m in ("student", "teacher")}
measures = results.misalignment_measures(run)

c = st.columns(5)
category = c[0].selectbox("Category", ["all", *sorted(frame["category"].astype(str).unique())], key="category",
                          **BOUND)
skill = c[1].selectbox("Skill", ["all", *sorted(frame["skill"].astype(str).unique())], key="skill", **BOUND)
group = c[2].selectbox("Outcome", ["all", *state.GROUP_LABELS], key="group", **BOUND,
                       format_func=lambda g: "all items" if g == "all" else state.GROUP_LABELS[g])
order = c[3].selectbox("Order", [links.RECORDED, links.MOST_MISALIGNED], key="sort", **BOUND,
                       help="Most misaligned first: by the misalignment of the student layer's head-averaged map "
                            "in the sort measure, from the misalignment analysis")
sort_measure = c[4].selectbox("Sort measure", measures, key="measure", **BOUND, disabled=order == links.RECORDED,
                              help="field:metric; larger = further apart")

c = st.columns(5)
field = c[0].selectbox("Field", list(FIELD_LABELS), format_func=FIELD_LABELS.get, key="ie_field")
s_layer = c[1].selectbox("Student layer", s_layers, index=len(s_layers) // 2, key="layer", **BOUND)
t_choices = ([MATCHED] if groups else []) + t_layers
t_layer = c[2].selectbox(
    "Teacher layer", t_choices, key="ie_teacher_layer",
    index=0 if groups else min(len(t_layers) - 1, round(s_layers.index(s_layer) * len(t_layers) / len(s_layers))),
    format_func=lambda t: f"matched: {','.join(map(str, groups[s_layer]))}" if t == MATCHED else str(t),
    help="'matched' averages the teacher layers the analyses compare with this student layer")
per_head = field != "i2i_paper"
s_head = c[3].selectbox("Student head", head_choices["student"], key="head", **BOUND, disabled=not per_head,
                        format_func=links.head_label)
t_head = c[4].selectbox("Teacher head", head_choices["teacher"], key="ie_teacher_head", disabled=not per_head,
                        format_func=links.head_label)

shown = state.filter_items(frame, category, skill, group)
if shown.empty:
    st.info("No recorded item matches these filters; widen the category, skill or outcome."
            if len(state.filter_items(frame)) else "Every item of this run was skipped during recording; the "
            "Overview lists why.")
    st.stop()
scores = None
if order == links.MOST_MISALIGNED:
    per_item = results.item_misalignment(run, sort_measure, s_layer) if sort_measure else None
    if per_item is None:
        st.info("Sorting by misalignment needs the misalignment analysis: compute it on the Overview, or "
                + results.REPORT_HINT.format(path=run.path) + ". Items are shown as recorded.")
    else:
        scores = per_item.set_index(per_item["uid"].astype(str))["misalignment"]
        shown = shown.assign(_score=shown["uid"].astype(str).map(scores)).sort_values(
            "_score", ascending=False, na_position="last", kind="stable")
uids = shown["uid"].astype(str).tolist()
if st.session_state.get("item") not in uids:  # a URL's item that matches wins over this
    st.session_state["item"] = uids[0]


def step(delta: int) -> None:
    # Runs before the next script run, so the selectbox below is drawn with the new value.
    st.session_state["item"] = uids[(uids.index(st.session_state["item"]) + delta) % len(uids)]


nav = st.columns([1, 8, 1], vertical_alignment="bottom")
nav[0].button("Previous", key="ie_prev", on_click=step, args=(-1,), width="stretch", shortcut="K",
              help="Keyboard: K")
uid = nav[1].selectbox(f"Item ({len(uids):,} match)", uids, key="item", **BOUND)
nav[2].button("Next", key="ie_next", on_click=step, args=(1,), width="stretch", shortcut="J", help="Keyboard: J")
row = shown[shown["uid"].astype(str) == uid].iloc[0]
where = (f" · {sort_measure} misalignment at student layer {s_layer}: {scores.get(uid, float('nan')):.4f}"
         if scores is not None else "")
st.caption(f"item {uids.index(uid) + 1} of {len(uids)} · outcome: {state.GROUP_LABELS[row['group']]}{where}")

# Query rows are counted back from the answer position, which both models recorded last; the two
# tokenizers may split the prompt differently, so only the rows both have are offered.
tokens = {m: state.json_list(row.get(f"{m}_query_tokens")) for m in ("student", "teacher")}
n_rows = max(1, min(len(tokens["student"]), len(tokens["teacher"])))


def token_label(q: int) -> str:
    names = {repr(tokens[m][q]) if len(tokens[m]) >= -q else "?" for m in ("student", "teacher")}
    return " / ".join(sorted(names)) + (" (answer)" if q == -1 else "")


# An image the model saw in several pieces: its crops / tiles, recorded with `cdviz record --pieces`.
pieces = {m: state.item_pieces(row, m) for m in ("teacher", "student")}
piece_names = list(dict.fromkeys([*pieces["teacher"], *pieces["student"]]))
c = st.columns(3 if piece_names else 2)
query = c[0].selectbox("Query token", list(range(-1, -n_rows - 1, -1)), key="ie_query", format_func=token_label,
                       disabled=field != "t2i", help="Text query row of t2i; the last row is the answer position")
piece = state.PRIMARY_VIEW
if piece_names:
    piece = c[2].selectbox("Piece", [state.PRIMARY_VIEW, *piece_names], key="ie_piece", disabled=field != "t2i",
                           help="The models saw this image in several pieces; the base/global view is the one every "
                                "field and analysis uses. The other pieces hold t2i only.")
    piece = piece if field == "t2i" else state.PRIMARY_VIEW
if not per_head:
    s_head = t_head = None
t_group = groups[s_layer] if t_layer == MATCHED else [t_layer]

try:
    s_map = state.item_map(run, uid, "student", field, s_layer, s_head, query)
    t_map = np.mean([state.item_map(run, uid, "teacher", field, t, t_head, query) for t in t_group], axis=0)
except StoreError as e:
    st.warning(f"This item's maps cannot be read: {state.md_escape(e)}")
    st.stop()
t_grid, s_grid = store.grid(uid, "teacher"), store.grid(uid, "student")
cmp = state.compare_maps(t_map, t_grid, s_map, s_grid)
image, size, why = state.item_image(run, row["image"])
boxes = state.item_boxes(row)
if why:
    st.caption(f"Maps drawn without the image: {state.md_escape(why)}.")

opacity = c[1].slider("Map opacity over the image", 0.0, 1.0, 0.55, 0.05, key="ie_opacity", disabled=image is None)
if piece != state.PRIMARY_VIEW:
    # One piece's map per model that has it; where each piece sits differs between models, so
    # teacher and student pieces are drawn side by side, not compared.
    maps = {}
    try:
        for model, layers, head in (("teacher", t_group, t_head), ("student", [s_layer], s_head)):
            if piece in pieces[model]:
                maps[model] = np.mean([state.piece_map(run, uid, model, pieces[model][piece], layer, head, query)
                                       for layer in layers], axis=0)  # [rows * cols] of the piece
    except StoreError as e:
        st.warning(f"This item's piece maps cannot be read: {state.md_escape(e)}")
        st.stop()
    rel = {m: x / max(float(x.sum()), 1e-12) * x.size for m, x in maps.items()}
    zmax = max((float(x.max()) for x in rel.values()), default=1.0)
    panels = st.columns(2)
    for panel, model, label in ((panels[0], "teacher", ",".join(map(str, t_group))), (panels[1], "student", s_layer)):
        if model not in maps:
            panel.info(f"{model}: no such piece (it saw this image in "
                       f"{len(pieces[model]) + 1} piece{'s' if pieces[model] else ''})")
            continue
        spec = pieces[model][piece]
        shown_image, shown_size = state.piece_image(image, size, spec)
        grid = tuple(spec["grid"])
        charts.show(figures.attention_overlay(rel[model], grid, shown_image, shown_size,
                                              boxes if not spec.get("place") else (), zmax=zmax,
                                              opacity=opacity, title=f"{model}, layer {label}, {piece}"),
                    panel, key=f"ie_fig_piece_{model}", stretch=False)
        panel.text(f"{model}: {float(maps[model].sum()):.1%} of the query's attention on this piece "
                   f"({grid[0]}x{grid[1]} patches)")
    st.caption("Each piece's map is normalised over that piece's patches and shown relative to a uniform map "
               "(1 = uniform). A tile is drawn over its cell of the image, a crop over the whole image.")
else:
    zmax = float(max(cmp.teacher.max(), cmp.student.max()))
    t_label = ",".join(map(str, t_group))
    panels = st.columns(3)  # each overlay at its own width, which the image is drawn at
    charts.show(figures.attention_overlay(cmp.teacher, t_grid, image, size, boxes, zmax=zmax, opacity=opacity,
                                          title=f"teacher, layer {t_label}"), panels[0], key="ie_fig_teacher", stretch=False)
    charts.show(figures.attention_overlay(cmp.student, s_grid, image, size, boxes, zmax=zmax, opacity=opacity,
                                          title=f"student, layer {s_layer}"), panels[1], key="ie_fig_student", stretch=False)
    charts.show(figures.difference_overlay(cmp.diff, cmp.grid, image, size, boxes, opacity=opacity,
                                           title=f"student - teacher ({cmp.grid[0]}x{cmp.grid[1]} grid)"),
                panels[2], key="ie_fig_diff", stretch=False)
    st.caption("Each map is normalised over the image tokens and shown relative to a uniform map (1 = uniform), "
               "so grids of different sizes share one colour scale.")

    c = st.columns([1, 3])
    metric = c[0].selectbox("Metric", list(state.PAIR_METRICS), key="ie_metric",
                            help="Computed on the common grid; see cdviz/metrics.py")
    c[0].metric(f"{metric} misalignment", f"{state.as_misalignment(metric, cmp.metrics[metric]):.4f}",
                help="larger = further apart, as in the report (1 - similarity for similarities); the metric itself: "
                     f"{cmp.metrics[metric]:.4f}, {state.metric_direction(metric)}")
    if field == "t2i":
        for model, layer, head in (("teacher", t_group[0], t_head), ("student", s_layer, s_head)):
            sc = state.item_scalars(run, uid, model, layer, head, query)
            c[0].text(f"{model}: {sc['mass']:.1%} of the query's attention on the image, "
                      f"entropy {sc['entropy']:.2f} nats")
    # Small tables are markdown: st.table / st.dataframe make a fresh browser fetch ~0.7 MB more script.
    c[1].markdown(state.markdown_table(pd.DataFrame({
        "metric": list(cmp.metrics),
        "misalignment (larger = further apart)": [state.as_misalignment(m, v) for m, v in cmp.metrics.items()],
        "metric value": list(cmp.metrics.values()),
        "metric direction": [state.metric_direction(m) for m in cmp.metrics]})))

with st.expander("Every head of one layer for this item", key="ie_heads_box", on_change="rerun") as box:
    if box.open and not per_head:  # drawn only when opened: one store read and a chart per head
        st.info("i2i_paper is recorded as a head mean only; pick another field to see the heads.")
    elif box.open:
        c = st.columns(2)
        grid_model = c[0].radio("Model", ["student", "teacher"], horizontal=True, key="ie_heads_model")
        grid_layers = s_layers if grid_model == "student" else t_layers
        grid_layer = c[1].selectbox("Layer", grid_layers, key="ie_heads_layer",
                                    index=grid_layers.index(s_layer if grid_model == "student" else t_group[0])
                                    if (s_layer if grid_model == "student" else t_group[0]) in grid_layers else 0)
        maps = state.item_heads(run, uid, grid_model, field, grid_layer, query)  # [H, N]
        rel = maps / np.clip(maps.sum(1, keepdims=True), 1e-12, None) * maps.shape[1]  # x uniform per head
        charts.show(figures.head_grid(rel, store.grid(uid, grid_model),
                                      title=f"{grid_model}, layer {grid_layer}, {field}: each head's map"),
                    key="ie_fig_heads", stretch=False)
        st.caption("Each head's map relative to uniform (1 = uniform), all on one colour scale.")

st.subheader("Question and answers")
st.text(str(row.get("question", "")))
options = state.json_list(row.get("options"))
st.markdown(state.markdown_table(pd.DataFrame({
    "option": [chr(65 + i) for i in range(len(options))], "text": [str(o) for o in options],
    "correct": [i == int(row.get("correct_option", -1)) for i in range(len(options))]})))
out = state.item_outcomes(run, uid)
protocol = run.store.manifest.get("options", {}).get("protocol", "letters")
if len(out) and protocol == "match" and "caption" in out:
    # One yes/no query per option: show what was asked and what each model judged.
    true_option = int(row.get("correct_option", -1))
    asked = [int(c) for c in out["caption"]]
    out = out.assign(option=[chr(65 + c) if c >= 0 else "" for c in asked],
                     text=[str(options[c]) if 0 <= c < len(options) else "" for c in asked],
                     judged=["yes" if (c == true_option) == bool(ok) else "no" for c, ok in zip(asked, out["correct"])])
    st.markdown(state.markdown_table(out[["model", "option", "text", "judged", "correct", "margin"]],
                                     formats={"margin": "{:+.3f}"}))
    st.caption("match protocol: each option asked as one yes/no query; margin = log P(yes) - log P(no), signed "
               "toward the right judgement (yes for the true option, no for a false one)")
elif len(out):
    out = out.assign(chosen_text=[str(options[i]) if 0 <= int(i) < len(options) else "" for i in out["chosen"]])
    st.markdown(state.markdown_table(out[["model", "order", "chosen", "chosen_text", "correct", "margin"]],
                                     formats={"margin": "{:+.3f}"}))
    st.caption("margin: logit of the correct letter minus the best other letter")
summary = {m: (row.get(f"{m}_correct"), row.get(f"{m}_margin")) for m in ("teacher", "student")}
st.text("  ".join(f"{m}: {'right' if ok else 'wrong' if ok is not None else 'unknown'}, mean margin {mg:+.3f}"
                  for m, (ok, mg) in summary.items()))
