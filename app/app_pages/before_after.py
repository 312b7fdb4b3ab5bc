"""Before/after: two runs side by side (e.g. the KD student, then after VAT fine-tuning): accuracy and
misalignment per layer and category. Negative misalignment deltas mean the student moved closer."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from app import figures, results, state
from cdviz.report.findings import change_word, compare_findings


def compare_tables(before: state.Run, after: state.Run, mis_b: Any, mis_a: Any) -> dict[str, pd.DataFrame]:
    """Before/after means side by side (after - before); intervals per run, not for the difference.

    Returns:
        accuracy: category, n_before, n_after, teacher_/student_ before/after/delta ("all" last)
        layers:   measure, student_layer, before, after, delta (+ each run's 95% CI), shared layers only
        categories: measure, student_layer, category, before, after, delta
    """
    acc = state.accuracy_table(before, "category").merge(state.accuracy_table(after, "category"), on="category",
                                                        how="outer", suffixes=("_before", "_after"), sort=False)
    for m in ("teacher", "student"):
        acc[f"{m}_delta"] = acc[f"{m}_after"] - acc[f"{m}_before"]
    acc = acc.sort_values("category", key=lambda c: c.eq("all"), kind="stable")  # "all" last
    acc = acc[["category", "n_before", "n_after", "teacher_before", "teacher_after", "teacher_delta",
               "student_before", "student_after", "student_delta"]].reset_index(drop=True)
    keys = ["measure", "student_layer"]
    cols = ["mean", "ci_low", "ci_high"]
    layers = mis_b.by_layer()[keys + cols].merge(mis_a.by_layer()[keys + cols], on=keys, suffixes=("_before", "_after"))
    layers = layers.rename(columns={"mean_before": "before", "mean_after": "after"})
    layers["delta"] = layers["after"] - layers["before"]
    layers = layers[[*keys, "before", "after", "delta", "ci_low_before", "ci_high_before", "ci_low_after",
                     "ci_high_after"]]
    cats = mis_b.by("category")[keys + ["category", "mean"]].merge(
        mis_a.by("category")[keys + ["category", "mean"]], on=keys + ["category"], suffixes=("_before", "_after"))
    cats = cats.rename(columns={"mean_before": "before", "mean_after": "after"})
    cats["delta"] = cats["after"] - cats["before"]
    return {"accuracy": acc, "layers": layers, "categories": cats}


before = state.require_run()
st.title("Before/after")
names = state.list_runs(state.settings().runs_root)
others = [n for n in names if n != before.name]
if not others:
    st.info("Comparing needs a second run under the runs root: record the fine-tuned student on the same probe set "
            "(`cdviz record ... --out runs/NAME`), then pick it here.")
    st.stop()
after_name = st.selectbox("After (compared with the run picked in the sidebar as before)", others, key="ba_after")
try:
    after = state.open_named(before.root, after_name)
except (state.StoreError, OSError, ValueError) as e:
    st.error(f"Cannot open run {state.md_escape(after_name)}: {state.md_escape(e)}")
    st.stop()
st.text(f"before: {before.name}    after: {after.name}")
for run in (before, after):
    results.require_usable(run)

mis = {}
for label, run in (("before", before), ("after", after)):
    mis[label] = results.compute_with_progress(run, ("misalignment",))["misalignment"]
    if isinstance(mis[label], results.Unavailable):
        st.warning(f"Misalignment of the {label} run is not available: {mis[label].reason}")
        st.stop()
tables = compare_tables(before, after, mis["before"], mis["after"])
paired = results.compare_summary(before, after)
if paired:
    with st.container(border=True, key="ba_verdict"):
        st.subheader("Verdict")
        for f in compare_findings(paired):
            (st.warning if f.warning else st.markdown)(("" if f.warning else "- ") + state.md_escape(f.text))
st.caption("Means of each run and their difference (after - before)." + (
    " Paired bootstrap intervals of the differences come from `cdviz compare`." if paired else
    f" For bootstrap intervals of the differences and a verdict run `cdviz compare {before.path} {after.path}`; "
    "until then changes are shown without colour."))


def delta_colour(model: str) -> str:
    """Colour a metric's change only when the paired interval excludes 0 ("off" = neutral grey)."""
    row = next((r for r in (paired or {}).get("accuracy", []) if r["model"] == model and r["category"] == "all"),
               None)
    if row is None or change_word(row["delta"], row.get("ci_low"), row.get("ci_high")) == "no change":
        return "off"
    return "normal"


st.subheader("Accuracy")
acc = tables["accuracy"]
overall = acc[acc["category"] == "all"].iloc[0]
c = st.columns(2)
c[0].metric("student accuracy", f"{overall.student_after:.1%}", f"{overall.student_delta:+.1%}",
             delta_color=delta_colour("student"))
c[1].metric("teacher accuracy", f"{overall.teacher_after:.1%}", f"{overall.teacher_delta:+.1%}",
             delta_color=delta_colour("teacher"))
st.altair_chart(figures.delta_bars(acc[acc["category"] != "all"], "category", "student_delta",
                                   title="student accuracy, after - before", y_title="accuracy change (higher = better)"),
                width="stretch", key="ba_acc_chart")
st.dataframe(acc, hide_index=True, width="stretch", key="ba_acc_table")

st.subheader("Misalignment per layer")
layers = tables["layers"]
if layers.empty:
    st.info("The two runs share no recorded student layer, so their misalignment cannot be compared.")
    st.stop()
measure = st.selectbox("Measure", list(dict.fromkeys(layers["measure"])), key="ba_measure")
sub = layers[layers["measure"] == measure]
st.altair_chart(figures.delta_bars(sub, "student_layer", "delta", title=f"{measure}: after - before (head-averaged map)",
                                   y_title="misalignment change (lower = closer)", higher_is_better=False),
                width="stretch", key="ba_layer_chart")
st.dataframe(sub, hide_index=True, width="stretch", key="ba_layer_table")
if paired:
    deltas = pd.DataFrame(paired["misalignment"])
    deltas = deltas[deltas["measure"] == measure]
    if len(deltas):
        st.altair_chart(figures.by_layer(deltas, "delta", "misalignment change (after - before; lower = closer)",
                                         rule=0.0, title=f"{measure}: change with its paired 95% interval"),
                        width="stretch", key="ba_paired_chart")
        st.dataframe(deltas, hide_index=True, width="stretch", key="ba_paired_table")

st.subheader("Misalignment per layer and category")
cats = tables["categories"]
cats = cats[cats["measure"] == measure]
st.dataframe(cats.pivot_table(index="student_layer", columns="category", values="delta"), width="stretch",
             key="ba_category_table")
