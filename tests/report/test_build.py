"""build_report: files, the documented summary.json keys, planted targets, escaping, progress."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from cdviz.workflow import build_report, report_steps
from cdviz.store import open_run

SUMMARY_KEYS = {"format", "version", "cdviz_version", "run", "probes", "protocol", "models", "n_items", "n_analysed",
                "n_skipped", "accuracy", "outcome_groups", "order_dependence", "layer_map", "misalignment", "most_misaligned_layers", "error_link",
                "grounding", "sinks", "attribution", "recommended_targets", "files"}
EVIL = '<script>alert("cdviz")</script>'


def _strict(path):
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_files_and_tables(small_report):
    out, _ = small_report
    for name in ("index.html", "report.md", "summary.json"):
        assert (out / name).is_file()
    summary = _strict(out / "summary.json")
    for name, rel in summary["files"]["tables"].items():
        frame = pd.read_parquet(out / rel)
        assert len(pd.read_csv(out / rel.replace(".parquet", ".csv"))) == len(frame), name
    assert {"misalignment_by_layer", "error_link_auroc", "layer_similarity", "sinks"} <= set(summary["files"]["tables"])
    assert not list(out.rglob("*.tmp"))  # atomic writes leave no temporaries


def test_summary_keys_and_content(small_report, small_run):
    summary = _strict(small_report[0] / "summary.json")
    assert set(summary) == SUMMARY_KEYS and summary["format"] == "cdviz-report"
    assert summary["n_items"] == summary["n_analysed"] == 120 and summary["attribution"] is None
    idx = open_run(small_run).index
    assert summary["accuracy"]["overall"]["student"] == pytest.approx(idx.student_accuracy.mean())
    cats = {r["category"] for r in summary["accuracy"]["by_category"]}
    assert cats == set(idx.category)
    assert sum(summary["outcome_groups"].values()) == 120
    # two options per item; the synthetic outcomes are the same in both orders
    assert summary["accuracy"]["chance"] == 0.5
    order = {r["category"]: r for r in summary["order_dependence"]}
    assert set(order) == cats | {"all"} and order["all"]["n"] == 120 and order["all"]["teacher"] == 0.0
    top = {(r["measure"], r["student_layer"]) for r in summary["most_misaligned_layers"]}
    assert ("i2i:vat_cosine", 1) in top and ("i2i:vat_cosine", 2) in top
    targets = summary["recommended_targets"]
    assert targets["student_layers"] == [1, 2] and targets["teacher_groups"] == [[2, 3], [4, 5]]
    auroc = {(r["measure"], r["student_layer"]): r for r in summary["error_link"]["auroc"]}
    assert auroc[("i2i:vat_cosine", 1)]["ci_low"] > 0.5


def test_one_family_of_tests_stated_with_q_values_everywhere(small_report):
    out, _ = small_report
    link = _strict(out / "summary.json")["error_link"]
    # 4 measures x 4 layers x 7 categories, AUROC and logistic slope each, and 4 grounding-gap layers
    assert link["n_tests"] == 2 * 4 * 4 * 7 + 4 and "grounding" in link["family"]
    assert all(r["q_value"] is not None and r["q_value"] >= r["p_value"] for r in link["logistic"])
    assert all(r["q_value"] >= r["p_value"] for r in link["auroc"])
    assert link["family"] in (out / "index.html").read_text() and link["family"] in (out / "report.md").read_text()
    by_layer = _strict(out / "summary.json")["misalignment"]["by_layer"]
    assert all(r["baseline"] is not None for r in by_layer)


def test_html_is_self_contained_with_plotly_once(small_report):
    page = (small_report[0] / "index.html").read_text()
    assert page.count("<div id=") >= 8  # one div per figure
    assert page.count("Plotly.newPlot") == page.count("<div id=")
    assert page.count("* plotly.js v") == 1  # the library header: inlined exactly once
    assert "cdn.plot.ly" not in page.split("* plotly.js v")[0]


def test_progress_adds_up_to_report_steps(small_report, small_run):
    _, steps = small_report
    assert sum(steps) == report_steps(small_run) == 120 * 6


def test_every_dataset_string_is_escaped(small_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    for name in ("index.parquet", "parts/00000.parquet"):
        frame = pd.read_parquet(run / name)
        frame.loc[frame.index[:20], "category"] = EVIL
        frame["options"] = json.dumps([EVIL, "b"])
        frame.to_parquet(run / name, index=False)
    out = build_report(run, n_boot=20, n_perm=20)
    assert out == run / "report"
    for name in ("index.html", "report.md"):
        text = (out / name).read_text()
        assert "<script>alert" not in text, name
        assert "&lt;script&gt;alert" in text, name
    summary = json.loads((out / "summary.json").read_text())
    assert EVIL in {r["category"] for r in summary["accuracy"]["by_category"]}  # JSON keeps the raw value
