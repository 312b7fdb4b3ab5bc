"""Before/after: two runs side by side (e.g. the KD student, then after VAT fine-tuning): accuracy and
misalignment per layer and category. Negative misalignment deltas mean the student moved closer."""

from __future__ import annotations


import pandas as pd
import streamlit as st

from app import charts, figures, results, state
from cdviz.report.findings import change_word, compare_findings


def wide_accuracy(acc: pd.DataFrame) -> pd.DataFrame:
    """The comparison's accuracy rows (model, category, ...) as one row per category: n_before,
    n_after, then teacher_ / student_ before, after, delta ("all" last)."""
    parts = []
    for model in ("teacher", "student"):
        rows = acc[acc["model"] == model].set_index("category")
        parts.append(rows[["before", "after", "delta"]].add_prefix(f"{model}_"))
    counts = acc[acc["model"] == "student"].set_index("category")[["n_before", "n_after"]]
    wide = counts.join(parts, how="outer").reset_index()
    wide = wide.sort_values("category", key=lambda c: c.eq("all"), kind="stable")  # "all" last
    return wide.reset_index(drop=True)


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

result, with_intervals = results.comparison(before, after)
if isinstance(result, results.Unavailable):
    st.warning(result.reason)
    st.stop()
if with_intervals:
    with st.container(border=True, key="ba_verdict"):
        st.subheader("Verdict")
        for f in compare_findings(result.summary()):
            (st.warning if f.warning else st.markdown)(("" if f.warning else "- ") + state.md_escape(f.text))
st.caption("Means of each run and their difference (after - before)." + (
    " Paired bootstrap intervals of the differences come from `cdviz compare`." if with_intervals else
    f" For bootstrap intervals of the differences and a verdict run `cdviz compare {before.path} {after.path}`; "
    "until then changes are shown without colour."))


def delta_colour(model: str) -> str:
    """Colour a metric's change only when its interval excludes 0 ("off" = neutral grey)."""
    rows = result.accuracy[(result.accuracy["model"] == model) & (result.accuracy["category"] == "all")]
    if not with_intervals or rows.empty or change_word(*rows[["delta", "ci_low", "ci_high"]].iloc[0]) == "no change":
        return "off"
    return "normal"


st.subheader("Accuracy")
acc = wide_accuracy(result.accuracy)
overall = acc[acc["category"] == "all"].iloc[0]
c = st.columns(2)
c[0].metric("student accuracy", f"{overall.student_after:.1%}", f"{overall.student_delta:+.1%}",
             delta_color=delta_colour("student"))
c[1].metric("teacher accuracy", f"{overall.teacher_after:.1%}", f"{overall.teacher_delta:+.1%}",
             delta_color=delta_colour("teacher"))
charts.show(figures.delta_bars(acc[acc["category"] != "all"], "category", "student_delta",
                               title="student accuracy, after - before", y_title="accuracy change (higher = better)"),
            key="ba_acc_chart")
st.markdown(state.markdown_table(acc))  # markdown: no table code for a fresh browser to fetch

st.subheader("Misalignment per layer")
layers = result.misalignment
if layers.empty:
    st.info("The two runs share no recorded student layer, so their misalignment cannot be compared.")
    st.stop()
measure = st.selectbox("Measure", list(dict.fromkeys(layers["measure"])), key="ba_measure")
sub = layers[layers["measure"] == measure]
charts.show(figures.delta_bars(sub, "student_layer", "delta", title=f"{measure}: after - before (head-averaged map)",
                               y_title="misalignment change (lower = closer)", higher_is_better=False),
            key="ba_layer_chart")
st.markdown(state.markdown_table(sub))
if with_intervals and len(sub):
    word = "paired" if result.paired else "independent-sample"
    charts.show(figures.by_layer(sub, "delta", "misalignment change (after - before; lower = closer)",
                                 rule=0.0, title=f"{measure}: change with its {word} 95% interval"),
                key="ba_paired_chart")

st.subheader("Misalignment per layer and category")
cats = result.categories
cats = cats[cats["measure"] == measure]
by_category = cats.pivot_table(index="student_layer", columns="category", values="delta")
st.markdown(state.markdown_table(by_category, index=True))
