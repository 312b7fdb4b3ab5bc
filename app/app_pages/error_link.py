"""Error link: is the student more misaligned on the items it gets wrong (where the teacher is right)?"""

from __future__ import annotations

import streamlit as st

from app import figures, state
from cdviz.report import figures as rfig

run = state.require_run()
st.title("Error link")
state.require_usable(run)
link = state.compute_with_progress(run, ("error_link",))["error_link"]
if isinstance(link, state.Unavailable):
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
per_item = state.item_misalignment(run, measure, layer)
if per_item is None:
    left.info("Per-item values are not at hand (the report was built without its per-item table).")
else:
    left.plotly_chart(figures.distribution_by_group(per_item["misalignment"].to_numpy(), per_item["group"].to_numpy(),
                                                    {g: state.GROUP_LABELS[g] for g in state.OUTCOMES},
                                                    title=f"student layer {layer}: per-item misalignment"),
                      width="stretch", key="el_distribution")
right.plotly_chart(rfig.fig_misalignment_by_outcome(link, measure), width="stretch", key="el_by_outcome")
st.dataframe(link.groups[link.groups["category"] == "all"][["group", "n", "share"]]
             .assign(meaning=lambda f: f["group"].map(state.GROUP_LABELS)),
             hide_index=True, width="stretch", key="el_groups")

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
    st.plotly_chart(rfig.fig_auroc_by_layer(auc, measure), width="stretch", key="el_auroc")
else:
    st.info("No AUROC here: among the teacher-right items of this category the student is always right or always "
            "wrong (one class is empty).")
st.dataframe(auc[["student_layer", "teacher_layers", "auroc", "ci_low", "ci_high", "p_value", "q_value", "n_pos",
                  "n_neg"]], hide_index=True, width="stretch", key="el_auroc_table",
             column_config={"n_pos": "student wrong", "n_neg": "student right"})

with st.expander("AUROC of every category and layer"):
    grid = link.auroc[link.auroc["measure"] == measure].pivot_table(index="category", columns="student_layer",
                                                                    values="auroc")
    grid.columns = [f"layer {c}" for c in grid.columns]
    st.dataframe(grid, width="stretch", key="el_category_grid")

with st.expander("Logistic regression: P(student wrong) ~ misalignment (z-scored) + category"):
    logit = link.logistic
    st.dataframe(logit[(logit["measure"] == measure) & (logit["category"] == category)], hide_index=True,
                 width="stretch", key="el_logistic")
