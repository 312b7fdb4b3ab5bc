"""`write_report`: write the batch report of a run from its analysis results.

    RUN/report/ (or out_dir)
      index.html         self-contained page: figures (plotly.js inlined once) and tables
      report.md          the same findings as markdown
      summary.json       machine-readable digest (schema in cdviz/report/__init__.py)
      tables/NAME.parquet and tables/NAME.csv   every table in full

The results come from `analyses.pipeline.run` (`cdviz.workflow.build_report` runs it and saves
them beside the report, in RUN/report/results); nothing here computes an analysis.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from cdviz.io import write_json_atomic, write_parquet_atomic, write_text_atomic
from cdviz.report import figures as F
from cdviz.report.findings import report_findings
from cdviz.report.glossary import glossary
from cdviz.report.html import Page, md_escape, md_table
from cdviz.report.summary import accuracy_tables, make_summary
from cdviz.store import RunStore, usable_items

NEEDED = ("misalignment", "layer_correspondence", "error_link", "grounding", "sinks", "targets")
"""The results a report is written from (attribution is added when present)."""


def write_report(store: RunStore, results: Mapping[str, Any], out_dir: str | Path | None = None,
                 timings: dict | None = None) -> Path:
    """Write the report of ``store`` from ``results`` (name -> analysis result); returns the folder.

    Args:
        store: the analysed run.
        results: at least the NEEDED results (e.g. `analyses.pipeline.run(store)`), and
            ``attribution`` when it was computed.
        out_dir: where to write (default RUN/report).
        timings: if given, filled with seconds per phase.
    """
    missing = [n for n in NEEDED if n not in results]
    if missing:
        raise ValueError(f"a report needs the {', '.join(missing)} result(s); run analyses.pipeline.run(store) "
                         f"(or `cdviz report {store.root}`), which computes every one")
    out = Path(out_dir) if out_dir is not None else store.root / "report"
    timings = timings if timings is not None else {}

    def phase(name: str, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        result = fn()
        timings[name] = time.perf_counter() - t0
        return result

    usable = phase("index", lambda: usable_items(store))
    res = dict(results)
    tables = phase("tables", lambda: _write_tables(out, usable, res))
    files = {"html": "index.html", "markdown": "report.md", "tables": tables}
    summary = phase("summary", lambda: make_summary(store, usable, res, files))
    write_json_atomic(out / "summary.json", summary)
    phase("html", lambda: write_text_atomic(out / "index.html", _html(summary, res, tables)))
    write_text_atomic(out / "report.md", _markdown(summary, res))
    return out


def _tables(usable: pd.DataFrame, res: dict[str, Any]) -> dict[str, pd.DataFrame]:
    mis, link, gr, sk = res["misalignment"], res["error_link"], res["grounding"], res["sinks"]
    acc = accuracy_tables(usable)
    long = mis._head_mean_frame()
    out = {
        "accuracy_by_category": acc["category"], "accuracy_by_skill": acc["skill"],
        "outcome_groups": link.groups,
        "misalignment_items": long,
        "misalignment_by_layer": mis.by_layer(), "misalignment_by_layer_head": mis.by_layer_head(),
        "misalignment_by_category": mis.by("category"), "misalignment_by_skill": mis.by("skill"),
        "misalignment_by_outcome": link.by_outcome,
        "layer_similarity": res["layer_correspondence"].to_frame(), "head_matches": res["layer_correspondence"].heads,
        "error_link_auroc": link.auroc, "error_link_logistic": link.logistic,
        "grounding_by_layer": gr.by_layer(), "grounding_gap_auroc": gr.gap_auroc,
        "sinks": sk.frame, "sink_positions": sk.positions,
        "targets_evidence": res["targets"].evidence.assign(
            teacher_layers=lambda f: f.teacher_layers.map(lambda g: ",".join(map(str, g)))),
    }
    if res.get("attribution") is not None:
        out["attribution"] = res["attribution"].frame
        out["attribution_maps"] = res["attribution"].maps
    return out


def _write_tables(out: Path, usable: pd.DataFrame, res: dict[str, Any]) -> dict[str, str]:
    """Every table as parquet and CSV; returns {name: relative parquet path}."""
    paths = {}
    for name, frame in _tables(usable, res).items():
        frame = frame.reset_index(drop=True)
        write_parquet_atomic(out / "tables" / f"{name}.parquet", frame)
        write_text_atomic(out / "tables" / f"{name}.csv", frame.to_csv(index=False))
        paths[name] = f"tables/{name}.parquet"
    return paths


PROTOCOL_TEXT = {
    "letters": "Outcomes: two-choice letters protocol. accuracy = mean over option orders; consistent = right in "
               "every order (the item's outcome in the error link).",
    "match": "Outcomes: match protocol (one yes/no query per option, scored log P(yes) - log P(no)). accuracy and "
             "consistent = pairwise (the true option scores highest; the item's outcome in the error link); strict = "
             "the true option judged yes and every false one no. The recorded attention is the true option's query.",
}


def _html(summary: dict, res: dict[str, Any], tables: dict[str, str]) -> str:
    mis, link, lc = res["misalignment"], res["error_link"], res["layer_correspondence"]
    t = res["targets"]
    terms = glossary()
    page = Page(f"cdviz report: {summary['probes'] or summary['run']}", collapsible=True,
                glossary=[x.name for x in terms])
    m = summary["models"]
    names = {k: _model_name(m[k]) for k in ("teacher", "student")}
    page.findings(report_findings(summary))
    page.links([("glossary", "#glossary"), ("fine-tune targets", "#targets"), ("summary.json", "summary.json"),
                ("report.md", "report.md"), ("tables (parquet, CSV)", "tables/")])
    page.paragraph(f"run {summary['run']}; teacher {m['teacher']['path']} ({m['teacher']['n_layers']} layers), "
                   f"student {m['student']['path']} ({m['student']['n_layers']} layers); "
                   f"{summary['n_analysed']} of {summary['n_items']} items analysed.")
    page.paragraph(PROTOCOL_TEXT.get(summary.get("protocol", "letters"), ""))
    page.heading("Recommended fine-tune targets", anchor="targets")
    page.paragraph(f"source: {t.source}; measure: {t.measure}; student layers {t.student_layers} aligned to teacher "
                   f"groups {t.teacher_groups}. cdviz finetune --from-report reads these from summary.json.")
    page.paragraph(f"Why: {t.rule}")
    if t.power_text():
        page.paragraph(t.power_text(), note=True)
    page.table(t.evidence, file=tables["targets_evidence"])
    page.heading("Accuracy: teacher vs student")
    page.figure(F.fig_accuracy_by_category(summary))
    page.table(pd.DataFrame(summary["accuracy"]["by_category"]), file=tables["accuracy_by_category"])
    page.table(pd.DataFrame([summary["outcome_groups"]]))
    if summary.get("order_dependence"):
        page.paragraph("Order dependence: share of items each model gets right in some option orders and wrong in "
                       "others (with two options: it answered by position).", note=True)
        page.table(pd.DataFrame(summary["order_dependence"]))
    page.heading("Where the student looks differently")
    page.paragraph(view_text(summary))
    page.paragraph("Misalignment of each student layer's head-averaged map with its teacher layer group (larger = "
                   "further apart; every measure is defined in the glossary). Each measure has its own panel and "
                   "scale; the dotted line is the teacher's split-half noise floor.")
    page.figure(F.fig_misalignment_by_layer(mis, student=names["student"]))
    page.figure(F.fig_layer_head_heatmap(mis.by_layer_head(), "mean", t.measure, student=names["student"]))
    page.table(pd.DataFrame(summary["most_misaligned_layers"]))
    page.heading("Does misalignment predict the student's errors?")
    page.paragraph(f"AUROC of misalignment for 'student wrong' among items the teacher gets right; bootstrap 95% "
                   f"intervals, rank-sum (all-permutation) p-values. q-values: {link.family}; mark a result by "
                   "its q-value, not its p-value.")
    page.figure(F.fig_auroc_by_layer(link, student=names["student"]))
    page.figure(F.fig_misalignment_by_outcome(link, t.measure, student=names["student"]))
    page.table(link.overall(), file=tables["error_link_auroc"])
    page.heading("Grounding on the named objects")
    gr = res["grounding"]
    page.figure(F.fig_grounding_by_layer(gr) if gr.by_layer().shape[0] else F.empty_figure("no items with boxes"))
    page.table(gr.gap_auroc, file=tables["grounding_gap_auroc"])
    page.heading("Layer correspondence")
    page.paragraph("A data-driven map of which teacher layer each student layer resembles most. It is shown for "
                   "reference only: every other analysis compares a student layer with its default teacher layer "
                   "group (the teacher_layers column), not with this map.", note=True)
    page.figure(F.fig_layer_similarity(lc, teacher=names["teacher"], student=names["student"]))
    page.table(lc.heads[lc.heads.matched.astype(bool)], file=tables["head_matches"])
    page.heading("Attention sinks")
    page.figure(F.fig_sinks_by_layer(res["sinks"]))
    sinks = res["sinks"].frame
    page.paragraph("Values of the head-averaged received-attention vector.", note=True)
    page.table(sinks[sinks["head"] == -1].drop(columns="head"), file=tables["sinks"])
    if res.get("attribution") is not None:
        page.heading("Attention vs attribution")
        page.figure(F.fig_attribution_agreement(res["attribution"]))
        page.table(res["attribution"].by_layer(), file=tables["attribution"])
    page.heading("Glossary", anchor="glossary")
    page.glossary(terms)
    return page.render()


def view_text(summary: dict) -> str:
    """Which image view the misalignment compares (summary.json's misalignment.view)."""
    mis = summary.get("misalignment", {})
    if mis.get("view", "primary") != "detail":
        return "View: primary (each model's primary image piece: the whole image, base / global view or thumbnail)."
    return (f"View: detail (the text-to-image maps over each model's crops / tiles, assembled into one map of the "
            f"whole image; t2i only); {mis.get('n_skipped_view', 0)} items skipped where a model saw the image as "
            "one piece.")


def _model_name(info: dict) -> str:
    """A short model name for axis titles: the checkpoint folder or hub id."""
    return Path(str(info.get("path") or "")).name or str(info.get("arch") or "")


def _markdown(summary: dict, res: dict[str, Any]) -> str:
    t = res["targets"]
    acc = summary["accuracy"]["overall"]
    parts = [
        f"# cdviz report: {summary['probes'] or summary['run']}\n",
        "## What was found\n",
        "\n".join(f"- {'**warning:** ' if f.warning else ''}{md_escape(f.text)}" for f in report_findings(summary))
        + "\n",
        f"{summary['n_analysed']} of {summary['n_items']} items analysed. Accuracy: teacher "
        f"{acc['teacher']:.3f}, student {acc['student']:.3f}.\n" if acc.get("teacher") is not None else "",
        view_text(summary) + "\n",
        "## Accuracy by category\n", md_table(pd.DataFrame(summary["accuracy"]["by_category"])),
        "## Most misaligned student layers\n", md_table(pd.DataFrame(summary["most_misaligned_layers"])),
        "## Error link (teacher-right items)\n", f"q-values: {summary['error_link']['family']}.\n\n",
        md_table(pd.DataFrame(summary["error_link"]["auroc"])),
        "## Grounding gap\n", md_table(pd.DataFrame(summary["grounding"]["gap_auroc"])),
        "## Recommended fine-tune targets\n",
        f"source `{t.source}`, measure `{t.measure}`: student layers {t.student_layers}, teacher groups "
        f"{t.teacher_groups}.\n\nWhy: {t.rule}\n\n{t.power_text()}\n\n",
        md_table(res["targets"].evidence.astype(str)),
    ]
    return "\n".join(parts)
