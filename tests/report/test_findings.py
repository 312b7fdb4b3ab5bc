"""Findings sentences: generated from the numbers of reports on planted synthetic stores (a planted
link is stated, no link is stated as none, the fallback as a fallback) and of hand-built summaries."""

from __future__ import annotations

import json
import shutil

import pytest

from cdviz.workflow import build_report, compare_runs
from cdviz.lineage import LINEAGE, finetune_record, stage_chain
from cdviz.report.findings import (
    Finding, change_word, chance_note, compare_findings, order_note, report_findings,
)
from cdviz.report.glossary import glossary, term_anchor
from cdviz.report.html import Page
from cdviz.synthetic import make_synthetic_run


@pytest.fixture(scope="module")
def null_report(tmp_path_factory):
    """Misalignment planted in student layers 1-2 but unrelated to the errors (link = 0)."""
    run = make_synthetic_run(tmp_path_factory.mktemp("null") / "run", n_items=120, seed=0, shard_size=40, link=0.0)
    return build_report(run, tmp_path_factory.mktemp("null-report"), n_boot=200, n_perm=200)


def _summary(out):
    return json.loads((out / "summary.json").read_text())


def _topic(findings, topic):
    return [f for f in findings if f.topic == topic]


def test_planted_link_is_stated(small_report):
    summary = _summary(small_report[0])
    found = report_findings(summary)
    link = _topic(found, "error link")[0].text
    assert link.startswith("Misalignment predicts the student's errors")
    auroc = {(r["measure"], r["student_layer"]): r for r in summary["error_link"]["auroc"]}
    row = auroc[("i2i:vat_cosine", 1)]
    assert row["q_value"] < 0.05 and (f"i2i:vat_cosine at student layer 1: AUROC {row['auroc']:.2f} (95% CI "
                                      f"{row['ci_low']:.2f} to {row['ci_high']:.2f}, q = {row['q_value']:.2g})") in link
    assert f"({row['n_pos']} student errors, {row['n_neg']} right answers)" in link
    targets = _topic(found, "targets")[0]
    assert not targets.warning and "fallback" not in targets.text
    assert targets.text.startswith("Fine-tune student layer 1 toward teacher layers 2-3, student layer 2 toward "
                                   "teacher layers 4-5 (VAT on i2i:vat_cosine)")


def test_planted_difference_is_stated_with_its_interval(small_report):
    summary = _summary(small_report[0])
    rows = [r for r in summary["misalignment"]["by_layer"] if r["measure"] == "i2i:vat_cosine"]
    worst = max(rows, key=lambda r: r["mean"])
    assert worst["student_layer"] in (1, 2)  # a planted layer
    text = _topic(report_findings(summary), "difference")[0].text
    assert text.startswith(f"The student looks most differently from the teacher at student layer "
                           f"{worst['student_layer']}")
    assert f"misalignment of the head-averaged map {worst['mean']:.3f} (95% CI {worst['ci_low']:.3f} to " \
           f"{worst['ci_high']:.3f}; larger = further apart)" in text


def test_no_link_is_stated_as_none_and_the_fallback_as_a_fallback(null_report):
    summary = _summary(null_report)
    found = report_findings(summary)
    assert not [r for r in summary["error_link"]["auroc"] if r["q_value"] < 0.05]  # the store's truth holds
    link = _topic(found, "error link")[0].text
    assert link.startswith("No link: no misalignment measure at any student layer predicts the student's errors")
    power = summary["recommended_targets"]["power"]
    assert f"AUROC {power['detectable_auroc']:.2f} or more" in link
    targets = summary["recommended_targets"]
    assert targets["source"] == "fallback_middle_band"
    sentence = _topic(found, "targets")[0]
    assert sentence.warning and sentence.text.startswith("The fine-tune targets are a fallback, not evidence")
    assert "'fallback_middle_band'" in sentence.text and "for a 4-layer student" in sentence.text
    pairs = [f"student layer {s} toward teacher layer" for s in targets["student_layers"]]
    assert pairs and all(p in sentence.text for p in pairs)


def test_findings_box_opens_the_report(small_report):
    html = (small_report[0] / "index.html").read_text()
    box = html.index('class="findings"')
    assert box < html.index("<details") and box < html.index("plotly")
    section = html[box:html.index("</section>", box)]
    assert "Fine-tune student layer 1 toward teacher layers 2-3" in section
    md = (small_report[0] / "report.md").read_text()
    assert md.index("## What was found") < md.index("## Accuracy by category")


def test_glossary_from_the_metric_registry(small_report):
    from cdviz.metrics import METRICS

    terms = {t.name: t for t in glossary()}
    for metric in METRICS:
        assert f"i2i:{metric}" in terms or f"t2i:{metric}" in terms
    assert terms["t2i:spearman"].range == "0 to 2" and terms["t2i:spearman"].meaning.endswith(
        "1 - Spearman rank correlation of the two maps' cell values.")
    assert terms["t2i:js"].range == "0 to 0.693" and terms["i2i:vat_cosine"].direction == "larger = further apart"
    html = (small_report[0] / "index.html").read_text()
    assert f'<dt id="{term_anchor("q_value")}">q_value</dt>' in html
    assert f'<th><a href="#{term_anchor("q_value")}">q_value</a></th>' in html


def test_findings_text_is_escaped():
    page = Page("t")
    page.findings([Finding("warning", 'category <script>alert("x")</script>', warning=True)])
    html = page.render()
    assert "<script>alert" not in html and "&lt;script&gt;alert(&quot;x&quot;)" in html


def test_change_words_and_notes():
    assert [change_word(-0.1, -0.2, -0.01), change_word(0.1, 0.01, 0.2), change_word(0.0, -0.1, 0.1),
            change_word(0.0, None, None)] == ["fell", "rose", "no change", "no change"]
    assert chance_note("teacher", 0.56, 600, 0.5) is None  # outside 46.0 .. 54.0
    assert chance_note("teacher", 0.486, 600, 0.5) == (
        "The teacher is at chance on this probe set: teacher 48.6% against 50% (n = 600; 95% band of guessing "
        "46.0% to 54.0%). A model that guesses has no skill to lose or explain, so read the misalignment and "
        "error-link results as a tour of the tool.")
    rows = [{"category": "a", "n": 10, "teacher": 1.0, "student": 0.2},
            {"category": "b", "n": 10, "teacher": 0.2, "student": 0.0},
            {"category": "all", "n": 20, "teacher": 0.6, "student": 0.1}]
    assert order_note(rows).startswith("Order bias: the teacher is right in some option orders and wrong in others "
                                       "for 60% of items (the student: 10%)")
    assert "in 1 of 2 categories for at least 90% of items (a 100%)" in order_note(rows)
    assert order_note([{**rows[2], "teacher": 0.1}]) is None


def test_compare_verdicts_from_hand_built_numbers():
    mis = [{"measure": "i2i:vat_cosine", "student_layer": 0, "before": 0.1, "after": 0.1, "delta": 0.0,
            "ci_low": -0.01, "ci_high": 0.01},
           {"measure": "i2i:vat_cosine", "student_layer": 1, "before": 0.2, "after": 0.05, "delta": -0.15,
            "ci_low": -0.2, "ci_high": -0.1},
           {"measure": "t2i:js", "student_layer": 1, "before": 0.05, "after": 0.06, "delta": 0.01,
            "ci_low": 0.005, "ci_high": 0.015}]
    acc = [{"model": "student", "category": "all", "before": 0.6, "after": 0.62, "delta": 0.02, "ci_low": -0.01,
            "ci_high": 0.05, "n": 100, "paired": True},
           {"model": "teacher", "category": "all", "before": 0.8, "after": 0.8, "delta": 0.0, "ci_low": 0.0,
            "ci_high": 0.0, "n": 100, "paired": True}]
    summary = {"misalignment": mis, "accuracy": acc, "error_link": [],
               "finetuned": {"student_layers": [1], "teacher_groups": [[2, 3]], "stages": ["dft"]}}
    text = [f.text for f in compare_findings(summary)]
    assert text[0] == ("Misalignment fell (the student moved closer to the teacher) in 1 and rose in 1 of 3 measure "
                       "x layer cells; no change in 1 (fine-tuned: student layer 1). Student accuracy: no change.")
    assert text[1] == ("i2i:vat_cosine misalignment fell at layer 1 (fine-tuned) by 75% (0.200 -> 0.050; change "
                       "-0.150, 95% CI -0.200 to -0.100); no change at layer 0.")
    assert text[2].startswith("t2i:js misalignment rose at layer 1 (fine-tuned) by 20%")
    assert text[3] == ("Student accuracy 60.0% -> 62.0%: no change (change +2.0 points, 95% CI -1.0 points to +5.0 "
                       "points, 100 paired items).")
    assert not [t for t in text if t.startswith("Teacher accuracy")]  # same teacher: nothing to say
    assert text[-1] == "Fine-tuned: student layer 1 toward teacher layers 2-3 (stage dft)."
    unknown = compare_findings({**summary, "finetuned": None})[-1]
    assert unknown.warning and unknown.text.startswith("Which layers were fine-tuned is not known")


def test_aligned_run_verdict(tmp_path):
    kw = dict(n_items=90, seed=0, shard_size=45)
    before = make_synthetic_run(tmp_path / "before", **kw)
    after = make_synthetic_run(tmp_path / "after", planted=(), **kw)
    out = compare_runs(before, after, tmp_path / "cmp", n_boot=200)
    found = compare_findings(_summary(out))
    vat = next(f.text for f in found if f.text.startswith("i2i:vat_cosine"))
    assert "fell at layer 1" in vat and "fell at layer 2" in vat and vat.endswith("no change at layers 0 and 3.")
    html = (out / "compare.html").read_text()
    assert html.index('class="findings"') < html.index("<details") and "fell at layer 1" in html


def test_finetune_record_follows_stage_sources(tmp_path):
    def stage(path, name, source, layer_map=None, vat=0.0):
        path.mkdir(parents=True)
        (path / "cdviz_stage.json").write_text(json.dumps({
            "stage": name, "source": str(source), "layer_map": layer_map,
            "weights": {"ce": 1.0, "kd": 0.0, "t2i": 0.0, "vat": vat}}))

    stage(tmp_path / "build" / "dft", "dft", tmp_path / "base",
          {"student_layers": [1, 2], "teacher_groups": [[2, 3], [4, 5]], "source": "report"}, vat=1.0)
    stage(tmp_path / "final", "sft", tmp_path / "build" / "dft")
    assert finetune_record(tmp_path / "final") == {"student_layers": [1, 2], "teacher_groups": [[2, 3], [4, 5]],
                                                   "stages": ["dft"]}
    stage(tmp_path / "plain", "ce", tmp_path / "missing")
    assert finetune_record(tmp_path / "plain") is None
    assert finetune_record(tmp_path / "nowhere") is None
    # Copied away from its build (as the zoo ships it), the checkpoint keeps the chain in its lineage file.
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    (shipped / "cdviz_stage.json").write_text((tmp_path / "final" / "cdviz_stage.json").read_text())
    (shipped / LINEAGE).write_text(json.dumps(stage_chain(tmp_path / "final")))
    shutil.rmtree(tmp_path / "build")
    assert finetune_record(tmp_path / "final") is None
    assert finetune_record(shipped) == {"student_layers": [1, 2], "teacher_groups": [[2, 3], [4, 5]], "stages": ["dft"]}
