"""app/state.py without a browser: settings, run discovery and its guard, tables, map comparison."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest

from app import results, state
from cdviz.store import StoreError


def test_settings_flags_win_over_env(monkeypatch, tmp_path):
    monkeypatch.setenv(state.RUNS_ROOT_ENV, str(tmp_path / "env"))
    assert state.settings([]).runs_root == tmp_path / "env"
    cfg = state.settings(["-q", "tests/app", "--runs-root", str(tmp_path / "cli"), "--run", "b"])
    assert cfg.runs_root == tmp_path / "cli" and cfg.run == "b"
    monkeypatch.delenv(state.RUNS_ROOT_ENV)
    assert state.settings(["--runxfail"]) == state.Settings(state.Path("runs"), None)


def test_discover_runs_lists_demo_first_and_nested(runs_root, tmp_path):
    assert state.discover_runs(runs_root) == ["demo", "after"]
    (tmp_path / "sweep" / "a").mkdir(parents=True)
    (tmp_path / "sweep" / "a" / "manifest.json").write_text("{}")
    (tmp_path / "not-a-run").mkdir()
    assert state.discover_runs(tmp_path) == ["sweep/a"]
    assert state.discover_runs(tmp_path / "missing") == []


def test_default_run_prefers_flag_then_demo():
    assert state.default_run(["a", "demo", "b"], "b") == 2
    assert state.default_run(["a", "demo", "b"], "gone") == 1
    assert state.default_run(["a", "b"], None) == 0


def test_resolve_run_refuses_escapes(runs_root, tmp_path):
    assert state.resolve_run(runs_root, "demo") == (runs_root / "demo").resolve()
    for name in ("../x", "/etc", "demo/../../x"):
        with pytest.raises(StoreError, match="outside the runs root"):
            state.resolve_run(runs_root / "demo", name)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    link_root = tmp_path / "root"
    link_root.mkdir()
    os.symlink(outside, link_root / "sneaky")
    (outside / "manifest.json").write_text("{}")
    with pytest.raises(StoreError, match="outside the runs root"):
        state.resolve_run(link_root, "sneaky")
    assert state.discover_runs(link_root) == []  # a symlinked run elsewhere is not even listed


def test_open_named_reports_corrupt_and_old_runs(tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "manifest.json").write_text("{not json")
    with pytest.raises(StoreError, match="corrupt manifest"):
        state.open_named(tmp_path, "bad")
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "manifest.json").write_text(json.dumps({"format": "cdviz-run", "version": 0}))
    with pytest.raises(StoreError, match="version 0"):
        state.open_named(tmp_path, "old")


def test_item_image_reads_only_inside_allowed_roots(runs_root, tmp_path, monkeypatch):
    run = state.open_named(runs_root, "demo")
    row = state.items(run).iloc[0]
    image, size, why = state.item_image(run, row["image"])
    assert why is None and size == (64, 64) and image.size == (64, 64)
    secret = tmp_path / "secret.png"
    image.save(secret)
    image2, size2, why2 = state.item_image(run, str(secret))
    assert image2 is None and size2 is None and state.IMAGE_ROOTS_ENV in why2
    monkeypatch.setenv(state.IMAGE_ROOTS_ENV, str(tmp_path))
    assert state.item_image(run, str(secret))[2] is None
    assert state.item_image(run, "../../../etc/passwd")[0] is None


def test_items_groups_and_filters(runs_root):
    run = state.open_named(runs_root, "demo")
    frame = state.items(run)
    expected = [f"T{'R' if t else 'W'}/S{'R' if s else 'W'}"
                for t, s in zip(frame.teacher_correct, frame.student_correct)]
    assert frame["group"].tolist() == expected
    sub = state.filter_items(frame, category="swap_att", group="TR/SW")
    assert len(sub) and set(sub.category) == {"swap_att"} and set(sub.group) == {"TR/SW"}
    assert state.filter_items(frame, category="no such category").empty


def test_accuracy_table_exact(runs_root):
    run = state.open_named(runs_root, "demo")
    frame = state.items(run)
    table = state.accuracy_table(run, "skill").set_index("skill")
    assert list(table.index) == ["perception", "recognition", "all"]
    for skill, sub in frame.groupby("skill"):
        assert table.loc[skill, "n"] == len(sub)
        assert table.loc[skill, "student"] == pytest.approx(sub.student_accuracy.mean())
        assert table.loc[skill, "student_consistent"] == pytest.approx(sub.student_correct.astype(float).mean())
    assert table.loc["all", "delta"] == pytest.approx(frame.student_accuracy.mean() - frame.teacher_accuracy.mean())


def test_item_map_slices_match_store(runs_root):
    run = state.open_named(runs_root, "demo")
    full = run.store.get("syn-00005", "student", "t2i")  # [L, H, Q, N]
    np.testing.assert_allclose(state.item_map(run, "syn-00005", "student", "t2i", 2, 1), full[2, 1, -1])
    np.testing.assert_allclose(state.item_map(run, "syn-00005", "student", "t2i", 2, None), full[2, :, -1].mean(0),
                               rtol=1e-6)
    paper = run.store.get("syn-00005", "teacher", "i2i_paper")
    np.testing.assert_allclose(state.item_map(run, "syn-00005", "teacher", "i2i_paper", 3, None), paper[3])


def test_compare_maps_identical_and_resampled():
    peak = np.zeros(16)
    peak[5] = 1.0
    same = state.compare_maps(peak, (4, 4), peak, (4, 4))
    assert same.metrics["js"] == pytest.approx(0.0, abs=1e-9)
    assert same.metrics["vat_cosine"] == pytest.approx(1.0)
    assert same.metrics["topk_iou"] == pytest.approx(1.0)
    np.testing.assert_allclose(same.diff, 0.0, atol=1e-6)
    assert same.teacher.sum() == pytest.approx(16.0)  # relative to uniform: mean 1
    uniform = np.ones(64)
    cmp = state.compare_maps(uniform, (8, 8), np.ones(16), (4, 4))
    assert cmp.grid == (4, 4)  # compared on the coarser grid
    np.testing.assert_allclose(cmp.teacher, 1.0, rtol=1e-6)
    np.testing.assert_allclose(cmp.diff, 0.0, atol=1e-5)


class _Mis:
    """The parts of a MisalignmentResult that layer_head_frame reads."""

    def __init__(self):
        self.items = pd.DataFrame({"uid": ["a", "b", "c"], "category": ["x", "x", "y"], "skill": ["s", "s", "s"],
                                   "group": ["TR/SR", "TR/SW", "TR/SW"]})
        self.student_layers = [3, 7]
        self.measures = ["i2i:vat_cosine", "t2i:js"]
        self.values = np.arange(3 * 2 * 3 * 2, dtype=np.float32).reshape(3, 2, 3, 2)  # [I, L, H+1, M]

    def head_labels(self):
        return [0, 1, -1]

    def measure_index(self, m):
        return self.measures.index(m)


def test_layer_head_frame_filters_and_means():
    mis = _Mis()
    frame = results.layer_head_frame(mis, "t2i:js", category="x")
    got = frame.set_index(["student_layer", "head"])["mean"]
    assert got[(7, -1)] == pytest.approx(mis.values[:2, 1, 2, 1].mean())
    assert frame["n"].iloc[0] == 2
    assert results.layer_head_frame(mis, "t2i:js", group="TR/SW", category="y")["n"].iloc[0] == 1
    assert results.layer_head_frame(mis, "t2i:js", category="none").empty


def test_md_escape_leaves_no_markdown_directive():
    escaped = state.md_escape("![x](http://e.vil/a.png) :red[hi] $x$ <b>")
    assert escaped == r"\!\[x\]\(http\:\/\/e\.vil\/a\.png\) \:red\[hi\] \$x\$ \<b\>"
    assert state.md_escape("plain words 12") == "plain words 12"


def test_markdown_table_escapes_formats_and_aligns():
    frame = pd.DataFrame({"name": ["a|b", "[x](http://e.vil)\nnext"], "value": [0.5, np.nan], "tiny": [2e-6, 0.0],
                          "n": [1, 2], "ok": [True, False]})
    lines = state.markdown_table(frame, formats={"n": "{:+d}"}).splitlines()
    assert lines[0] == "| name | value | tiny | n | ok |"
    assert lines[1] == "|:---|---:|---:|---:|:---|"  # numbers right-aligned, booleans and text left
    assert lines[2] == r"| a\|b | 0\.5000 | 2\.00e\-06 | \+1 | True |"  # a pipe cannot end the cell
    assert lines[3].startswith(r"| \[x\]\(http\:\/\/e\.vil\) next |  | 0\.0000 |")  # no link, one line, NaN blank
    indexed = state.markdown_table(frame[["value"]].rename_axis("layer"), index=True).splitlines()
    assert indexed[0] == "| layer | value |" and len(indexed) == 4


def test_chance_warning_only_when_the_teacher_cannot_be_told_from_guessing():
    import pandas as pd

    from app.state import chance_level, chance_warning

    assert "at chance" in chance_warning(pd.Series({"n": 600, "teacher": 0.486}))
    assert chance_warning(pd.Series({"n": 600, "teacher": 0.56})) is None  # outside 46.0 .. 54.0
    assert chance_warning(pd.Series({"n": 20, "teacher": 0.65})) is not None  # 20 items: band 28 .. 72
    assert chance_warning(pd.Series({"n": 0, "teacher": float("nan")})) is None
    four = pd.DataFrame({"options": ['["a", "b", "c", "d"]'] * 3 + ['["a", "b"]']})
    assert chance_level(four) == pytest.approx((3 * 0.25 + 0.5) / 4)
    assert chance_warning(pd.Series({"n": 400, "teacher": 0.5}), chance=0.25) is None
