"""Layers and heads: where (student layer x head) the student looks away from its teacher, and which
teacher layer each student layer corresponds to."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app import charts, figures, links, results, state
from cdviz.report import figures as rfig

AVG_MAP = "avg map (the layer's value)"
MEAN_OF_HEADS = "mean of heads"

run = state.require_run()
st.title("Layers and heads")
results.require_usable(run)
found = results.compute_with_progress(run, ("misalignment", "layer_correspondence"))

st.subheader("Misalignment by student layer and head")
mis = found["misalignment"]
if isinstance(mis, results.Unavailable):
    st.warning(f"Misalignment is not available: {mis.reason}")
else:
    if getattr(mis, "view", "primary") == "detail":
        st.info(f"Detail view (`cdviz report --view detail`): text-to-image maps over each model's crops / tiles, "
                f"assembled over the whole image and resampled to a common grid; {len(mis.skipped)} items without "
                "such a view are left out. Image-to-image maps are not recorded per piece.")
    items = mis.items
    c = st.columns(4)
    measure = c[0].selectbox("Measure", mis.measures, key="lh_measure",
                             help="field:metric; every value is a misalignment (larger = further apart)")
    category = c[1].selectbox("Category", ["all", *sorted(items["category"].unique())], key="lh_category")
    skill = c[2].selectbox("Skill", ["all", *sorted(items["skill"].unique())], key="lh_skill")
    group = c[3].selectbox("Outcome", ["all", *state.OUTCOMES], key="lh_group",
                           format_func=lambda g: "all items" if g == "all" else state.GROUP_LABELS[g])
    frame = results.layer_head_frame(mis, measure, category, skill, group)
    if frame.empty:
        st.info("No item matches these filters; widen the category, skill or outcome.")
    else:
        worst = frame[frame["head"] >= 0].sort_values("mean", ascending=False).iloc[0]
        c = st.columns(3)
        c[0].metric("items", f"{int(frame['n'].iloc[0]):,}")
        c[1].metric("most misaligned head", f"layer {int(worst.student_layer)}, head {int(worst['head'])}")
        c[2].metric("its misalignment", f"{worst['mean']:.4f}")
        if charts.static():  # a click on a cell follows its link
            frame = frame.assign(link=[links.item_href(
                run.name, layer=int(r.student_layer), head=None if r.head == -1 else int(r.head), measure=measure,
                group=None if group == "all" else group, category=None if category == "all" else category)
                for r in frame.itertuples()])
        event = charts.show(figures.layer_head_heatmap(frame, measure), key="lh_heatmap", on_select="rerun",
                            selection_mode=figures.CELL, linked=True)
        picked = event.selection.get(figures.CELL) if event else None
        if picked:  # a clicked cell opens its items, most misaligned first
            cell = picked[0]
            head = int(cell["head"])
            st.switch_page(links.ITEM_EXPLORER, query_params=links.item_link(
                run.name, layer=int(cell["student_layer"]), head=None if head == -1 else head, measure=measure,
                group=None if group == "all" else group, category=None if category == "all" else category))
        st.page_link(links.ITEM_EXPLORER, icon=":material/sort:",
                     label=f"Items at student layer {int(worst.student_layer)} (head {int(worst['head'])} shown), "
                           "the layer's most misaligned first",
                     query_params=links.item_link(run.name, layer=int(worst.student_layer), head=int(worst["head"]),
                                                  measure=measure, group=None if group == "all" else group,
                                                  category=None if category == "all" else category))
        groups = dict(zip(mis.student_layers, mis.teacher_groups))
        table = frame.pivot_table(index="student_layer", columns="head", values="mean")
        heads = [h for h in table.columns if h != -1]
        table = table[heads + [-1]]
        # The layer's value (every other page's) is the head-averaged map's; the mean over heads differs.
        table.columns = [AVG_MAP if h == -1 else f"head {h}" for h in table.columns]
        table[MEAN_OF_HEADS] = table[[f"head {h}" for h in heads]].mean(axis=1)
        table.insert(0, "teacher layers", [",".join(map(str, groups[s])) for s in table.index])
        # Drawn only when opened (the heatmap above shows the same values): the interactive grid's
        # code is heavy for a fresh browser.
        with st.expander("Table: misalignment of every layer and head", key="lh_table_box",
                         on_change="rerun") as box:
            if box.open:
                st.dataframe(table, width="stretch", key="lh_table")
        st.caption(f"'{AVG_MAP}' is the misalignment of the map averaged over heads: the layer's value in the "
                   f"report and every plot. '{MEAN_OF_HEADS}' is the mean of the per-head misalignments.")
    charts.show(figures.by_layer(mis.by_layer(), "mean", "misalignment (larger = further apart)", facet="measure",
                                 title="Misalignment by student layer (head-averaged map), 95% intervals; "
                                       "dotted: the teacher's noise floor"), key="lh_by_layer")

st.subheader("Layer correspondence")
lc = found["layer_correspondence"]
if isinstance(lc, results.Unavailable):
    st.warning(f"Layer correspondence is not available: {lc.reason}")
else:
    st.caption(f"Mean {lc.field} {lc.metric} between every teacher and student layer over {lc.n_items:,} items; "
               "the line is the best monotone layer map.")
    with st.expander("Similarity of every teacher and student layer (interactive report figure)",
                     key="lh_similarity_box", on_change="rerun") as box:
        if box.open:  # plotly's bundle is heavy for a fresh browser: loaded only when asked for
            st.plotly_chart(rfig.fig_layer_similarity(lc), width="stretch", key="lh_similarity")
    grouped = state.layer_groups(run) or {}
    st.markdown(state.markdown_table(pd.DataFrame({
        "student layer": list(lc.layer_map),
        "teacher layer (most alike)": list(lc.layer_map.values()),
        "teacher layers (group matching, used for misalignment)": [",".join(map(str, grouped.get(s, [])))
                                                                    for s in lc.layer_map],
    })))
    if len(lc.heads):
        with st.expander("Head matching (interactive report figure)", key="lh_heads_box", on_change="rerun") as box:
            if box.open:
                s_layer = st.selectbox("Head matching for student layer", list(lc.layer_map), key="lh_head_layer")
                st.plotly_chart(rfig.fig_head_matching(lc, s_layer), width="stretch", key="lh_heads")

st.divider()
cols = st.columns(3)
cols[0].page_link("app_pages/overview.py", label="Overview: what was found", icon=":material/dashboard:")
cols[1].page_link("app_pages/error_link.py", label="Does it predict errors: error link", icon=":material/troubleshoot:")
cols[2].page_link(links.ITEM_EXPLORER, label="Item explorer", icon=":material/image_search:")
