"""Every dashboard page through Streamlit's AppTest on fixture runs: renders without an exception,
its widgets exist, and changing a selector changes what is shown."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

PAGES = sorted(p.stem for p in (Path(__file__).resolve().parents[2] / "app" / "app_pages").glob("*.py"))


def metrics(at) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def markdown_tables(at) -> list:
    """The tables drawn as markdown (state.markdown_table), parsed back: md_escape's backslashes
    removed, numeric columns as numbers, empty cells as NaN."""
    import pandas as pd

    out = []
    for e in at.markdown:
        lines = str(e.value).splitlines()
        if len(lines) < 2 or not lines[0].startswith("| ") or not set(lines[1]) <= set("|:-"):
            continue
        rows = [[plain(c.strip()) for c in re.split(r"(?<!\\)\|", line)[1:-1]] for line in lines]
        frame = pd.DataFrame(rows[2:], columns=rows[0]).replace("", float("nan"))
        for c in frame.columns:
            if set(frame[c].dropna()) <= {"True", "False"}:
                frame[c] = frame[c].map({"True": True, "False": False})
                continue
            try:
                frame[c] = pd.to_numeric(frame[c])
            except (ValueError, TypeError):
                pass
        out.append(frame)
    return out


def table(at, *columns: str):
    """The first dataframe, static table or markdown table shown that has all ``columns`` (AppTest
    does not expose dataframe keys)."""
    for frame in [*at.dataframe, *at.table]:
        value = frame.value
        if all(c in value.columns for c in columns):
            return value
    for value in markdown_tables(at):
        if all(c in value.columns for c in columns):
            return value
    raise AssertionError(f"no dataframe with columns {columns}")


def plain(text: str) -> str:
    """Markdown text with state.md_escape's backslashes removed."""
    return re.sub(r"\\(.)", r"\1", text)


def texts(at) -> str:
    return "\n".join(str(e.value) for kind in ("markdown", "text", "caption", "info", "warning", "error")
                     for e in getattr(at, kind))


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_on_a_plain_run(runs_root, open_app, page):
    at = open_app(runs_root, page)
    assert at.selectbox(key="run").value == "demo"
    assert not at.error


def test_overview(runs_root, open_app):
    at = open_app(runs_root)
    m = metrics(at)
    assert m["items recorded"] == "60" and m["categories"] == "6"
    acc = table(at, "category", "delta")
    assert "replace_att" in set(acc["category"])
    at.radio(key="ov_by").set_value("skill").run()
    assert set(table(at, "skill", "delta")["skill"]) == {"perception", "recognition", "all"}
    before = plain(texts(at))
    assert "need the misalignment and error-link analyses" in before and "Accuracy on 60 items" in before
    assert "The student looks most differently" not in before
    at.button(key="ov_compute").click().run()
    assert not at.exception
    lines = plain(texts(at))
    assert "The student looks most differently from the teacher at student layer" in lines
    assert "Fine-tune student layer" in lines or "The fine-tune targets are a fallback" in lines
    assert "need the misalignment and error-link analyses" not in lines


def test_overview_findings_come_from_the_report(reported_root, open_app):
    from cdviz.report.findings import report_findings

    at = open_app(reported_root)
    shown = plain(texts(at))
    assert "from the run's report" in shown
    assert not [b for b in at.button if b.key == "ov_compute"]
    summary = json.loads((reported_root / "demo" / "report" / "summary.json").read_text())
    found = report_findings(summary)
    assert {f.topic for f in found} >= {"accuracy", "difference", "error link", "targets"}
    for f in found:
        assert f.text in shown, f.text
    assert plain(at.markdown[0].value) == "- " + found[0].text  # the box comes first on the page
    targets = summary["recommended_targets"]
    assert all(f"student layer {s} toward" in shown for s in targets["student_layers"])


def test_run_picker_switches_runs(runs_root, open_app):
    at = open_app(runs_root, "item_explorer")
    first = at.metric[0].value
    at.selectbox(key="run").set_value("after").run()
    assert not at.exception
    assert at.selectbox(key="item").value == "syn-00000" and at.metric[0].value != first


def test_layers_measure_and_filters(runs_root, open_app):
    at = open_app(runs_root, "layers")
    for key in ("lh_measure", "lh_category", "lh_skill", "lh_group"):
        assert at.selectbox(key=key) is not None
    assert "lh_head_layer" not in {w.key for w in at.selectbox}  # the head matching is drawn when opened
    at.session_state["lh_heads_box"] = True  # what opening the expander sets
    at.run()
    assert at.selectbox(key="lh_head_layer").options
    before = metrics(at)
    assert before["items"] == "60"
    assert before["most misaligned head"].startswith(("layer 1", "layer 2"))  # the planted layers
    at.selectbox(key="lh_measure").set_value("t2i:js").run()
    assert metrics(at)["its misalignment"] != before["its misalignment"]
    at.selectbox(key="lh_category").set_value("swap_att").run()
    assert metrics(at)["items"] == "10"
    assert list(table(at, "student layer")["student layer"]) == [0, 1, 2, 3]
    assert not at.dataframe  # the layer x head table is drawn when its expander is opened
    at.session_state["lh_table_box"] = True
    at.run()
    heads = table(at, "avg map (the layer's value)", "mean of heads")
    per_head = heads[[c for c in heads.columns if c.startswith("head ")]]
    assert heads["mean of heads"].to_numpy() == pytest.approx(per_head.mean(axis=1).to_numpy())


def test_layers_empty_filter_says_so(runs_root, open_app):
    at = open_app(runs_root, "layers")
    at.selectbox(key="lh_category").set_value("swap_att").run()
    at.selectbox(key="lh_group").set_value("TW/SW").run()
    if metrics(at).get("items") is None:  # no teacher-wrong, student-wrong swap_att item in this seed
        assert "No item matches" in texts(at)


def test_item_explorer_navigation_and_selectors(runs_root, open_app):
    at = open_app(runs_root, "item_explorer")
    keys = {w.key for w in at.selectbox}
    assert {"category", "skill", "group", "item", "ie_field", "layer", "ie_teacher_layer",
            "head", "ie_teacher_head", "ie_query", "ie_metric"} <= keys
    assert at.selectbox(key="item").value == "syn-00000"
    first = at.metric[0].value
    at.button(key="ie_next").click().run()
    assert at.selectbox(key="item").value == "syn-00001" and at.metric[0].value != first
    at.button(key="ie_prev").click().run()
    at.button(key="ie_prev").click().run()
    assert at.selectbox(key="item").value == "syn-00059"  # wraps around
    at.selectbox(key="item").set_value("syn-00000").run()
    for key, value in (("ie_field", "i2i"), ("layer", 0), ("head", 2), ("ie_metric", "js")):
        shown = at.metric[0].value
        at.selectbox(key=key).set_value(value).run()
        assert not at.exception
        assert at.metric[0].value != shown, key
    assert at.metric[0].label == "js misalignment"
    pair = table(at, "misalignment (larger = further apart)", "metric value").set_index("metric")
    for name, row in pair.iterrows():  # one meaning per name: every value shown as a misalignment
        flipped = name in ("vat_cosine", "spearman", "topk_iou")
        assert row.iloc[0] == pytest.approx(1 - row["metric value"] if flipped else row["metric value"],
                                            abs=2e-4), name  # both shown with 4 decimals
    assert float(at.metric[0].value) == pytest.approx(pair.loc["js"].iloc[0], abs=1e-4)
    options = table(at, "option", "text")
    assert list(options["text"]) == ["option 0 true", "option 0 false"] and options["correct"].tolist() == [True, False]
    outcomes = table(at, "chosen_text")
    assert set(outcomes["model"]) == {"teacher", "student"} and len(outcomes) == 4


def test_item_explorer_teacher_right_student_wrong_filter(runs_root, open_app):
    at = open_app(runs_root, "item_explorer")
    at.selectbox(key="group").set_value("TR/SW").run()
    uids = at.selectbox(key="item").options
    from app import state

    frame = state.items(state.open_named(runs_root, "demo")).set_index("uid")
    assert uids and all(frame.loc[u, "group"] == "TR/SW" for u in uids)
    assert "teacher right, student wrong" in texts(at)


def test_item_explorer_empty_filter_message(runs_root, open_app):
    at = open_app(runs_root, "item_explorer")
    at.selectbox(key="category").set_value("existence").run()
    at.selectbox(key="skill").set_value("perception").run()  # existence is a recognition category
    assert not at.exception
    assert "No recorded item matches" in texts(at)


def test_error_link_selectors(runs_root, open_app):
    at = open_app(runs_root, "error_link")
    m = metrics(at)
    assert m["strongest layer"] in {"1", "2"}
    groups = table(at, "group", "share")
    assert groups["n"].sum() == 60
    at.selectbox(key="el_measure").set_value("t2i:spearman").run()
    assert metrics(at)["AUROC"] != m["AUROC"]
    auroc = table(at, "auroc", "student wrong")
    assert list(auroc["student_layer"]) == [0, 1, 2, 3]
    at.selectbox(key="el_category").set_value("replace_att").run()
    assert not at.exception
    assert table(at, "auroc", "student wrong")["student wrong"].sum() != auroc["student wrong"].sum()


def test_error_link_from_report(reported_root, open_app):
    at = open_app(reported_root, "error_link")
    assert metrics(at)["AUROC"]
    assert at.selectbox(key="el_layer") is not None


def test_before_after(runs_root, open_app):
    at = open_app(runs_root, "before_after")
    assert at.selectbox(key="ba_after").value == "after"
    layers = table(at, "measure", "delta", "ci_low_before")
    assert list(layers["student_layer"]) == [0, 1, 2, 3]
    # The after run has no planted misalignment: the planted layers get closer to the teacher.
    assert (layers.set_index("student_layer").loc[[1, 2], "delta"] < 0).all()
    at.selectbox(key="ba_measure").set_value("t2i:js").run()
    assert table(at, "measure", "delta", "ci_low_before")["measure"].unique().tolist() == ["t2i:js"]
    acc = table(at, "student_delta")
    assert "all" in set(acc["category"])
    assert "shown without colour" in texts(at) and "Verdict" not in [h.value for h in at.subheader]
    gray = type(at.metric[0].proto).MetricColor.GRAY
    assert all(m.proto.color == gray for m in at.metric)  # no interval: no colour claim


def test_before_after_shows_paired_intervals_from_cdviz_compare(runs_root, tmp_path, open_app):
    import shutil

    from cdviz.workflow import compare_runs

    for name in ("demo", "after"):
        shutil.copytree(runs_root / name, tmp_path / name)
    compare_runs(tmp_path / "demo", tmp_path / "after", tmp_path / "after" / "compare", n_boot=50)
    at = open_app(tmp_path, "before_after")
    assert "from `cdviz compare`" in texts(at)
    paired = table(at, "measure", "delta", "paired")
    assert set(paired["measure"]) == {"i2i:vat_cosine"} and paired["paired"].all()
    assert (paired["ci_high"] < 0).sum() >= 2  # the planted layers got closer, with intervals below 0
    from cdviz.report.findings import change_word, compare_findings

    summary = json.loads((tmp_path / "after" / "compare" / "summary.json").read_text())
    shown = plain(texts(at))
    for f in compare_findings(summary):
        assert f.text in shown, f.text
    vat = next(f.text for f in compare_findings(summary) if f.text.startswith("i2i:vat_cosine misalignment"))
    assert "fell at layer 1 by" in vat and "fell at layer 2 by" in vat  # the planted layers
    student = next(r for r in summary["accuracy"] if r["model"] == "student" and r["category"] == "all")
    word = change_word(student["delta"], student["ci_low"], student["ci_high"])
    colours = {m.label: m.proto.color for m in at.metric}
    gray = type(at.metric[0].proto).MetricColor.GRAY
    assert (colours["student accuracy"] == gray) == (word == "no change")


def test_before_after_needs_two_runs(reported_root, open_app):
    at = open_app(reported_root, "before_after")
    assert "needs a second run" in texts(at)


def test_attribution_without_result_says_how(runs_root, open_app):
    at = open_app(runs_root, "attribution")
    assert "attribution" in texts(at) and "cdviz report" in texts(at)


def test_attribution_from_report(reported_root, open_app):
    at = open_app(reported_root, "attribution")
    assert at.selectbox(key="at_uid").options == ["syn-00003", "syn-00007"]
    assert metrics(at)["spearman (attribution vs attention)"] == "0.400"  # teacher, middle layer 4 of 8
    at.selectbox(key="at_layer").set_value(3).run()
    assert metrics(at)["spearman (attribution vs attention)"] == "0.300"
    at.selectbox(key="at_model").set_value("student").run()
    assert not at.exception and metrics(at)["top-10% IoU"] == "0.150"  # student, layer 3 kept


@pytest.mark.parametrize("page", PAGES)
def test_no_runs_message(tmp_path, open_app, page):
    at = open_app(tmp_path / "empty", page)
    assert "No runs yet" in texts(at) and "make demo" in texts(at)


@pytest.mark.parametrize("page", PAGES)
def test_corrupt_and_old_runs_message(tmp_path, open_app, page):
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "manifest.json").write_text("{broken")
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "manifest.json").write_text(json.dumps({"format": "cdviz-run", "version": 0}))
    at = open_app(tmp_path, page)
    assert "corrupt manifest" in at.error[0].value
    at.selectbox(key="run").set_value("old").run()
    assert not at.exception and "store version 0" in at.error[0].value


@pytest.mark.parametrize("page", PAGES)
def test_run_with_every_item_skipped_says_so(runs_root, tmp_path, open_app, page):
    import shutil

    import pandas as pd

    shutil.copytree(runs_root / "demo", tmp_path / "demo")
    index = pd.read_parquet(tmp_path / "demo" / "index.parquet")
    index.assign(status="skipped", skip_reason="image missing").to_parquet(tmp_path / "demo" / "index.parquet")
    at = open_app(tmp_path, page)
    assert at.info or at.warning, "a page with nothing to show must say why"


def test_layers_says_when_the_saved_misalignment_is_the_detail_view(tmp_path, open_app):
    """A report made with --view detail: the Layers page says which maps its numbers compare."""
    from dataclasses import replace

    from analyses import pipeline
    from cdviz.synthetic import make_synthetic_run
    from cdviz.workflow import build_report

    run = make_synthetic_run(tmp_path / "demo", n_items=30, seed=4)
    out = build_report(run, n_boot=0, n_perm=0)
    results = pipeline.Results.load(out / "results")
    mis = results["misalignment"]
    results.add("misalignment", replace(mis, view="detail", skipped={"syn-00001": "teacher: an image of one piece"}))
    results.save(out / "results")
    at = open_app(tmp_path, "layers")
    notes = " ".join(i.value for i in at.info)
    assert "Detail view" in notes and "1 items without such a view" in notes
