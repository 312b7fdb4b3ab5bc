"""`write_compare`: the before/after page of two runs from their comparison
(`analyses.compare.CompareResult`; `cdviz.workflow.compare_runs` computes and writes it).

    OUT/compare.html, OUT/summary.json, OUT/tables/{misalignment,accuracy,error_link}_delta.{parquet,csv}

What the numbers are (paired or independent bootstrap intervals of after - before) is in
analyses/compare.py.

summary.json (format "cdviz-compare", version 1; NaN as null):
    format, version, cdviz_version, before, after (absolute paths), protocol, paired, n_shared, n_before, n_after
    misalignment: [{measure, student_layer, before, after, delta, ci_low, ci_high, n, paired}]
    accuracy:     [{model, category, before, after, delta, ci_low, ci_high, n, paired}]
    error_link:   [{measure, student_layer, before, after, delta, ci_low, ci_high, paired}]
    finetuned:    null | {student_layers, teacher_groups, stages}: the layers the after run's student was
                  aligned on, from its checkpoint's stage markers (`cdviz.lineage.finetune_record`)
    files:        {html: "compare.html", tables: {name: "tables/name.parquet"}}
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from cdviz import __version__
from cdviz.io import write_json_atomic, write_parquet_atomic, write_text_atomic
from cdviz.report import figures as F
from cdviz.report.findings import change_word, compare_findings
from cdviz.report.glossary import glossary
from cdviz.report.html import Page
from cdviz.report.summary import jsonable

FORMAT = "cdviz-compare"
VERSION = 1
TABLES = {"misalignment_delta": "misalignment", "accuracy_delta": "accuracy", "error_link_delta": "error_link"}


def write_compare(result: Any, out: str | Path) -> Path:
    """Write OUT/compare.html, OUT/summary.json and OUT/tables/ from a comparison result
    (`analyses.compare.CompareResult`); returns OUT."""
    out = Path(out)
    tables = {name: getattr(result, attr).reset_index(drop=True) for name, attr in TABLES.items()}
    tables["misalignment_delta"] = tables["misalignment_delta"].drop(
        columns=["ci_low_before", "ci_high_before", "ci_low_after", "ci_high_after"], errors="ignore")
    tables["accuracy_delta"] = tables["accuracy_delta"].drop(columns=["n_before", "n_after"], errors="ignore")
    paths = {}
    for name, frame in tables.items():
        write_parquet_atomic(out / "tables" / f"{name}.parquet", frame)
        write_text_atomic(out / "tables" / f"{name}.csv", frame.to_csv(index=False))
        paths[name] = f"tables/{name}.parquet"
    summary = jsonable({"format": FORMAT, "version": VERSION, "cdviz_version": __version__, **result.summary(),
                        "files": {"html": "compare.html", "tables": paths}})
    write_json_atomic(out / "summary.json", summary)
    write_text_atomic(out / "compare.html", _html(summary, tables, _report_links(out, summary)))
    return out


def _report_links(out: Path, summary: dict) -> list[tuple[str, str]]:
    """Links from OUT/compare.html to each run's report, where one has been written (relative, so
    the folder can be moved with its runs)."""
    found = []
    for side in ("before", "after"):
        page = Path(summary[side]) / "report" / "index.html"
        if page.is_file():
            found.append((f"{side} run's report", os.path.relpath(page, out.resolve())))
    return found


def _html(summary: dict, tables: dict[str, pd.DataFrame], reports: list[tuple[str, str]] = ()) -> str:
    terms = glossary()
    page = Page("cdviz comparison: before vs after", collapsible=True, glossary=[t.name for t in terms])
    page.findings(compare_findings(summary), title="Verdict")
    page.links([*reports, ("glossary", "#glossary"), ("summary.json", "summary.json"),
                ("tables (parquet, CSV)", "tables/")])
    page.paragraph(f"before: {summary['before']}; after: {summary['after']}; "
                   f"{'paired by item' if summary['paired'] else 'independent samples'} "
                   f"({summary['n_shared']} shared items). Deltas are after - before with bootstrap 95% intervals; "
                   "'no change' where the interval includes 0. Outcomes scored with the "
                   f"{summary.get('protocol', 'letters')} protocol"
                   + (" (accuracy = pairwise)." if summary.get("protocol") == "match" else "."))
    tuned = set((summary.get("finetuned") or {}).get("student_layers") or [])
    page.heading("Misalignment per measure and student layer")
    page.paragraph("Misalignment of the head-averaged map (larger = further apart), so a negative change means the "
                   "student's attention moved closer to the teacher's.", note=True)
    page.figure(F.fig_compare_layers(tables["misalignment_delta"], what="misalignment"))
    page.table(_marked(tables["misalignment_delta"], tuned), max_rows=200,
               file=summary["files"]["tables"]["misalignment_delta"])
    page.heading("Accuracy per category")
    page.table(_marked(tables["accuracy_delta"], set()), file=summary["files"]["tables"]["accuracy_delta"])
    page.heading("Error link (AUROC) per student layer")
    if len(tables["error_link_delta"]):
        page.figure(F.fig_compare_layers(tables["error_link_delta"], what="AUROC"))
    page.table(_marked(tables["error_link_delta"], tuned), max_rows=200,
               file=summary["files"]["tables"]["error_link_delta"])
    page.heading("Glossary", anchor="glossary")
    page.glossary(terms)
    return page.render()


def _marked(frame: pd.DataFrame, tuned: set) -> pd.DataFrame:
    """A delta table with its verdict per row (fell / rose / no change) and, per student layer,
    whether it was fine-tuned."""
    if frame.empty:
        return frame
    out = frame.copy()
    out.insert(out.columns.get_loc("delta") + 1, "change",
               [change_word(d, lo, hi) for d, lo, hi in zip(out["delta"], out["ci_low"], out["ci_high"])])
    if "student_layer" in out:
        out.insert(out.columns.get_loc("student_layer") + 1, "fine-tuned",
                   ["yes" if s in tuned else "" for s in out["student_layer"]])
    return out
