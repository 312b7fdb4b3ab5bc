"""Overview: the run's models and probe set, accuracy of teacher vs student, headline findings."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app import figures, state

HEADLINE = ("misalignment", "error_link", "targets")


def headline_lines(by_layer: pd.DataFrame, auroc: pd.DataFrame, targets: dict) -> list[str]:
    """The findings in a sentence each (numbers only, safe as markdown)."""
    measure = targets["measure"]
    layers = by_layer[by_layer["measure"] == measure].dropna(subset=["mean"])
    lines = []
    if len(layers):
        worst, best = layers.loc[layers["mean"].idxmax()], layers.loc[layers["mean"].idxmin()]
        lines.append(f"Attention is furthest apart at student layer **{worst.student_layer}** (teacher layers "
                     f"{worst.teacher_layers}): mean `{measure}` misalignment **{worst['mean']:.3f}**, against "
                     f"{best['mean']:.3f} at layer {best.student_layer}.")
    auc = auroc[auroc["measure"] == measure].dropna(subset=["auroc"])
    if len(auc):
        top = auc.loc[auc["auroc"].idxmax()]
        n_sig = int((auc["q_value"] < 0.05).sum())
        lines.append(f"Among items the teacher gets right, misalignment predicts the student's errors best at "
                     f"layer **{top.student_layer}**: AUROC **{top.auroc:.2f}** (95% CI {num(top.ci_low, '.2f')} to "
                     f"{num(top.ci_high, '.2f')}, q = {num(top.q_value, '.2g')}); {n_sig} of {len(auc)} layers "
                     "have q < 0.05.")
    else:
        lines.append("The error link cannot be measured: among items the teacher gets right, the student is "
                     "always right or always wrong.")
    pairs = ", ".join(f"{s} <- {','.join(map(str, g))}"
                      for s, g in zip(targets["student_layers"], targets["teacher_groups"]))
    lines.append(f"Recommended VAT targets (student <- teacher layers): {pairs or 'none'} "
                 f"({targets['source'].replace('_', ' ')}).")
    return lines


def num(x, spec: str) -> str:
    """A number from the report (JSON null for NaN) or a result, formatted; "n/a" when missing."""
    return "n/a" if x is None or pd.isna(x) else format(x, spec)


run = state.require_run()
store = run.store
frame = state.items(run)
st.title("Overview")
st.text(f"run {run.name}  ({run.path})")

ok = frame[frame["status"].astype(str).eq("ok")]
overall = state.accuracy_table(run, "category").iloc[-1]  # the "all" row
scored = overall["n"] > 0
protocol = store.manifest.get("options", {}).get("protocol", "letters")
acc_help = ("pairwise: the true option's yes/no log-odds beats the false one's (match protocol)"
            if protocol == "match" else "mean over option orders")
right_help = ("pairwise right" if protocol == "match" else "right in every option order")
cols = st.columns(5)
cols[0].metric("items recorded", f"{len(ok):,}", help=f"{len(frame) - len(ok)} skipped during recording")
cols[1].metric("teacher accuracy", f"{overall['teacher']:.1%}" if scored else "n/a", help=acc_help)
cols[2].metric("student accuracy", f"{overall['student']:.1%}" if scored else "n/a", help=acc_help)
cols[3].metric("teacher right, student wrong", f"{int((ok['group'] == 'TR/SW').sum()):,}",
               help=f"items the teacher gets right ({right_help}) and the student does not")
cols[4].metric("categories", f"{ok['category'].nunique()}")

st.subheader("Models and probe set")
models = pd.DataFrame([
    {"model": name, "arch": info.get("arch", ""), "path": info.get("path", ""),
     "layers recorded": f"{len(info.get('layers', []))} of {info.get('n_layers')}", "heads": info.get("n_heads"),
     "image grid": (f"{int(ok[f'{name}_grid_rows'].mode().iloc[0])} x {int(ok[f'{name}_grid_cols'].mode().iloc[0])}"
                    if len(ok) else "")}
    for name, info in store.manifest.get("models", {}).items()
])
st.dataframe(models, hide_index=True, width="stretch")
probes = store.manifest.get("probes", {})
st.text(f"probe set: {probes.get('name') or '(unnamed)'}, {probes.get('n_items', len(frame))} items, "
        f"from {probes.get('path', '')}")
if len(frame) > len(ok):
    skipped = frame[~frame["status"].astype(str).eq("ok")][["uid", "category", "skip_reason"]]
    with st.expander(f"{len(skipped)} items skipped during recording"):
        st.dataframe(skipped, hide_index=True, width="stretch")

chance_note = state.chance_warning(overall, state.chance_level(ok)) if scored else None
if chance_note:
    st.warning(chance_note)

st.subheader("Accuracy: teacher vs student")
by = st.radio("Group by", ["category", "skill"], horizontal=True, key="ov_by")
table = state.accuracy_table(run, by)
if not scored:
    st.info("No item has an outcome for both models, so there is no accuracy to show.")
else:
    st.plotly_chart(figures.accuracy_bars(table[table[by] != "all"], by), width="stretch", key="ov_acc_chart")
    st.dataframe(table, hide_index=True, width="stretch", key="ov_acc_table",
                 column_config={c: st.column_config.NumberColumn(format="percent") for c in state.ACCURACY_COLUMNS[1:]})
    if protocol == "match":
        st.caption("Match protocol: each option asked as a yes/no query ('Does this image show ...?'). Accuracy and "
                   "consistent = pairwise (the true option scores highest, chance 50%); strict = the true option "
                   "judged yes and the false one no; delta = student - teacher.")
    else:
        st.caption("Accuracy is the mean over option orders (as the paper reports); consistent = right in every "
                   "order; delta = student - teacher.")

st.subheader("Headline findings")
found = state.headline(run)
if state.n_usable(run) == 0:
    st.info("No item has an outcome for both models, so there are no findings to report.")
elif found is None:
    st.info(f"The misalignment and error-link analyses have not been computed for this run yet "
            f"({state.n_usable(run):,} items to stream). " + state.REPORT_HINT.format(path=run.path)
            + "; or compute them here (kept while this server runs).")
    if st.button("Compute now", key="ov_compute"):
        state.compute_with_progress(run, HEADLINE)
        found = state.headline(run)
if found is not None:
    source = "the run's report" if state.report_summary(run) else "this server's computation"
    st.caption(f"from {source}")
    for line in headline_lines(*found):
        st.markdown(f"- {line}")
