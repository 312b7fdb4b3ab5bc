"""Error link: is the student more misaligned on the items it gets wrong (where the teacher is right)?"""

from __future__ import annotations

import streamlit as st

from app import charts, figures, links, results, state

POINT = "layer"  # the AUROC chart's click selection
AUROC_COLUMNS = {"n_pos": "student wrong", "n_neg": "student right"}  # the AUROC table's headers

run = state.require_run()
st.title("Error link")
results.require_usable(run)
link = results.compute_with_progress(run, ("error_link",))["error_link"]
if isinstance(link, results.Unavailable):
    st.warning(f"The error link is not available: {link.reason}")
    st.stop()
if link.auroc.empty:
    st.info("No item of this run has an outcome for both models, so there is nothing to link.")
    st.stop()

measures = list(dict.fromkeys(link.auroc["measure"]))
layers = sorted(link.auroc["student_layer"].unique())
c = st.columns(2)
measure = c[0].selectbox("Measure", measures, key="el_measure",
                         help="field:metric; every value is a misalignment (larger = further apart)")
layer = c[1].selectbox("Student layer", layers, index=len(layers) // 2, key="el_layer")

st.subheader("Misalignment by outcome group")
left, right = st.columns(2)
per_item = results.item_misalignment(run, measure, layer)
if per_item is None:
    left.info("Per-item values are not at hand (the report was built without its per-item table).")
else:
    hrefs = ([links.item_href(run.name, layer=int(layer), measure=measure, item=str(uid)) for uid in per_item["uid"]]
             if charts.static() else None)  # a click on an outlier follows its link
    event = charts.show(figures.distribution_by_group(
        per_item["misalignment"].to_numpy(), per_item["group"].to_numpy(),
        {g: state.GROUP_LABELS[g] for g in state.OUTCOMES}, title=f"student layer {layer}: per-item misalignment",
        uids=per_item["uid"].to_numpy(), hrefs=hrefs), left, key="el_distribution", width=charts.HALF,
        on_select="rerun", selection_mode=figures.OUTLIER, linked=True)
    picked = event.selection.get(figures.OUTLIER) if event else None
    if picked:
        st.switch_page(links.ITEM_EXPLORER, query_params=links.item_link(
            run.name, layer=int(layer), measure=measure, item=str(picked[0]["uid"])))
outcome = link.by_outcome[(link.by_outcome["measure"] == measure) & link.by_outcome["mean"].notna()]
charts.show(figures.by_layer(outcome.drop(columns=["baseline"], errors="ignore"), "mean",
                             "misalignment (larger = further apart)", colour="group",
                             title=f"Misalignment by outcome group ({measure})"), right, key="el_by_outcome",
            width=charts.HALF)
st.page_link(links.ITEM_EXPLORER, icon=":material/sort:",
             label=f"Teacher right, student wrong: these items at student layer {layer}, most misaligned first",
             query_params=links.item_link(run.name, layer=int(layer), group="TR/SW", measure=measure))
# Small tables are markdown: st.table / st.dataframe make a fresh browser fetch ~0.7 MB more script.
st.markdown(state.markdown_table(link.groups[link.groups["category"] == "all"][["group", "n", "share"]]
                                 .assign(meaning=lambda f: f["group"].map(state.GROUP_LABELS))))

st.subheader("AUROC per layer: does misalignment predict the student's errors?")
category = st.selectbox("Category", sorted(link.auroc["category"].unique(), key=lambda c: (c != "all", c)),
                        key="el_category", help="AUROC among items the teacher gets right; 0.5 = no link")
auc = link.auroc[(link.auroc["measure"] == measure) & (link.auroc["category"] == category)]
if auc["auroc"].notna().any():
    best = auc.loc[auc["auroc"].idxmax()]
    c = st.columns(3)
    c[0].metric("strongest layer", f"{int(best.student_layer)}")
    c[1].metric("AUROC", f"{best.auroc:.3f}", help=f"95% CI {best.ci_low:.3f} to {best.ci_high:.3f}")
    c[2].metric(f"layers with q < 0.05 ({link.correction})", f"{int((auc['q_value'] < 0.05).sum())} of {len(auc)}")
    if charts.static():  # a click on a point follows its link
        auc = auc.assign(link=[links.item_href(run.name, layer=int(layer_), group="TR/SW", measure=measure,
                                               category=None if category == "all" else category)
                               for layer_ in auc["student_layer"]])
    event = charts.show(figures.by_layer(auc, "auroc", "AUROC (0.5 = no link; higher = errors more misaligned)",
                                         rule=0.5, select=POINT,
                                         title="Does misalignment predict student errors? (teacher-right items; "
                                               "click a layer: its teacher-right, student-wrong items)"),
                        key="el_auroc", on_select="rerun", selection_mode=POINT, linked=True)
    picked = event.selection.get(POINT) if event else None
    if picked:
        st.switch_page(links.ITEM_EXPLORER, query_params=links.item_link(
            run.name, layer=int(picked[0]["student_layer"]), group="TR/SW", measure=measure,
            category=None if category == "all" else category))
else:
    st.info("No AUROC here: among the teacher-right items of this category the student is always right or always "
            "wrong (one class is empty).")
shown = auc[["student_layer", "teacher_layers", "auroc", "ci_low", "ci_high", "p_value", "q_value", "n_pos", "n_neg"]]
st.markdown(state.markdown_table(shown.rename(columns=AUROC_COLUMNS)))

# Drawn only when opened: the interactive grid's code is heavy for a fresh browser.
with st.expander("AUROC of every category and layer", key="el_grid_box", on_change="rerun") as box:
    if box.open:
        grid = link.auroc[link.auroc["measure"] == measure].pivot_table(index="category", columns="student_layer",
                                                                        values="auroc")
        grid.columns = [f"layer {c}" for c in grid.columns]
        st.dataframe(grid, width="stretch", key="el_category_grid")

with st.expander("Logistic regression: P(student wrong) ~ misalignment (z-scored) + category", key="el_logit_box",
                 on_change="rerun") as box:
    if box.open:
        logit = link.logistic
        st.dataframe(logit[(logit["measure"] == measure) & (logit["category"] == category)], hide_index=True,
                     width="stretch", key="el_logistic")

st.divider()
cols = st.columns(3)
cols[0].page_link("app_pages/overview.py", label="Overview: what was found", icon=":material/dashboard:")
cols[1].page_link("app_pages/layers.py", label="Where: layers and heads", icon=":material/grid_on:")
cols[2].page_link(links.ITEM_EXPLORER, label="Item explorer", icon=":material/image_search:")
