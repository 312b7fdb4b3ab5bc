"""Overview: what was found (in sentences, first), the run's models and probe set, accuracy of teacher vs student."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app import charts, figures, links, results, state
from cdviz.report.findings import report_findings

HEADLINE = ("misalignment", "error_link", "targets")


def findings_box(run: state.Run) -> None:
    """The findings in sentences (cdviz.report.findings), first on the page; warnings marked."""
    if st.session_state.get("ov_compute"):  # the button below was clicked: compute, then show
        results.compute_with_progress(run, HEADLINE)
    summary, source = results.findings_summary(run)
    with st.container(border=True, key="ov_findings"):
        st.subheader("What was found")
        for f in report_findings(summary):
            text = state.md_escape(f.text)
            if f.warning:
                st.warning(text, icon=":material/warning:")
            else:
                st.markdown(f"- {text}")
        if results.n_usable(run) == 0:
            st.info("No item has an outcome for both models, so there are no findings to report.")
        elif not all(k in summary for k in ("misalignment", "error_link", "recommended_targets")):
            st.info(f"Where the student looks differently, whether that predicts its errors and what to fine-tune "
                    f"need the misalignment and error-link analyses ({results.n_usable(run):,} items to stream). "
                    + results.REPORT_HINT.format(path=run.path) + "; or compute them here (kept while this server runs).")
            st.button("Compute now", key="ov_compute")
        st.caption(f"from {source}; every term is defined in the glossary of the run's report (index.html)")
        drill_links(run, summary)


def drill_links(run: state.Run, summary: dict) -> None:
    """Links into the item explorer: the teacher-right / student-wrong items, and the recommended
    (else most misaligned) student layers' items, most misaligned first."""
    recommended = summary.get("recommended_targets", {})
    by_layer = [r for r in summary.get("misalignment", {}).get("by_layer", []) if r.get("mean") is not None]
    measure = recommended.get("measure") or next((r["measure"] for r in by_layer), None)
    targets = recommended.get("student_layers") or []
    rows = [r for r in by_layer if r["measure"] == measure and r["mean"] == r["mean"]]  # NaN != NaN
    if not targets and rows:
        targets = [max(rows, key=lambda r: r["mean"])["student_layer"]]
    cols = st.columns(1 + len(targets[:3]))
    cols[0].page_link(links.ITEM_EXPLORER, label="Teacher right, student wrong: the items",
                      icon=":material/error:", query_params=links.item_link(run.name, group="TR/SW", measure=measure,
                                                                           sort=links.RECORDED if measure is None
                                                                           else links.MOST_MISALIGNED))
    for col, layer in zip(cols[1:], targets[:3]):
        col.page_link(links.ITEM_EXPLORER, label=f"Student layer {layer}: most misaligned items",
                      icon=":material/sort:", query_params=links.item_link(run.name, layer=int(layer), measure=measure))


run = state.require_run()
store = run.store
frame = state.items(run)
st.title("Overview")
st.text(f"run {run.name}  ({run.path})")
findings_box(run)

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
# Small tables are markdown: st.table / st.dataframe make a fresh browser fetch ~0.7 MB more script.
st.markdown(state.markdown_table(models))
probes = store.manifest.get("probes", {})
st.text(f"probe set: {probes.get('name') or '(unnamed)'}, {probes.get('n_items', len(frame))} items, "
        f"from {probes.get('path', '')}")
if len(frame) > len(ok):
    skipped = frame[~frame["status"].astype(str).eq("ok")][["uid", "category", "skip_reason"]]
    with st.expander(f"{len(skipped)} items skipped during recording", key="ov_skipped", on_change="rerun") as box:
        if box.open:
            st.dataframe(skipped, hide_index=True, width="stretch")

st.subheader("Accuracy: teacher vs student")
by = st.radio("Group by", ["category", "skill"], horizontal=True, key="ov_by")
table = state.accuracy_table(run, by)
if not scored:
    st.info("No item has an outcome for both models, so there is no accuracy to show.")
else:
    charts.show(figures.accuracy_bars(table[table[by] != "all"], by), key="ov_acc_chart")
    share = [c for c in state.ACCURACY_COLUMNS[1:] if c in table]
    st.markdown(state.markdown_table(table, formats={c: "{:.1%}" for c in share}))
    if protocol == "match":
        st.caption("Match protocol: each option asked as a yes/no query ('Does this image show ...?'). Accuracy and "
                   "consistent = pairwise (the true option scores highest, chance 50%); strict = the true option "
                   "judged yes and the false one no; delta = student - teacher.")
    else:
        st.caption("Accuracy is the mean over option orders (as the paper reports); consistent = right in every "
                   "order; delta = student - teacher.")

st.divider()
cols = st.columns(4)
cols[0].page_link("app_pages/layers.py", label="Where: layers and heads", icon=":material/grid_on:")
cols[1].page_link("app_pages/error_link.py", label="Does it predict errors: error link", icon=":material/troubleshoot:")
cols[2].page_link(links.ITEM_EXPLORER, label="One item at a time: item explorer", icon=":material/image_search:")
cols[3].page_link("app_pages/before_after.py", label="After fine-tuning: before/after", icon=":material/compare:")
