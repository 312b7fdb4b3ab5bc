"""compare_runs on synthetic runs whose difference is known."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from analyses.compare import diff_ci
from cdviz.synthetic import make_synthetic_run
from cdviz.workflow import build_report, compare_runs


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cmp")
    kw = dict(n_items=150, seed=0, shard_size=50)
    return {"linked": make_synthetic_run(root / "linked", link=6.0, **kw),
            "unlinked": make_synthetic_run(root / "unlinked", link=0.0, **kw),
            "aligned": make_synthetic_run(root / "aligned", planted=(), **kw)}


def _table(out, name):
    return pd.DataFrame(json.loads((out / "summary.json").read_text())[name])


def test_weaker_link_lowers_auroc_in_planted_layers(runs, tmp_path):
    out = compare_runs(runs["linked"], runs["unlinked"], tmp_path / "c1", n_boot=300)
    link = _table(out, "error_link")
    link = link[link.measure == "i2i:vat_cosine"].set_index("student_layer")
    for layer in (1, 2):
        assert link.delta[layer] < -0.15 and link.ci_high[layer] < 0
    mis = _table(out, "misalignment")
    # Same seed, same maps: only the outcomes changed.
    np.testing.assert_allclose(mis.delta, 0.0, atol=1e-7)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["paired"] and summary["n_shared"] == 150
    assert (out / "compare.html").is_file() and (out / "tables" / "misalignment_delta.parquet").is_file()


def test_aligned_student_closes_the_gap(runs, tmp_path):
    out = compare_runs(runs["linked"], runs["aligned"], tmp_path / "c2", n_boot=300)
    mis = _table(out, "misalignment")
    mis = mis[mis.measure == "i2i:vat_cosine"].set_index("student_layer")
    for layer in (1, 2):
        assert mis.delta[layer] < -0.2 and mis.ci_high[layer] < 0
    for layer in (0, 3):
        assert mis.delta[layer] == pytest.approx(0.0, abs=1e-7)
    acc = _table(out, "accuracy")
    assert set(acc.model) == {"teacher", "student"} and "all" in set(acc.category)
    np.testing.assert_allclose(acc[acc.model == "teacher"].delta, 0.0)


def test_diff_ci_paired_and_independent():
    b, a = np.array([1.0, 2.0, 3.0]), np.array([2.0, 3.0, 4.0])
    d, lo, hi = diff_ci(b, a, paired=True, n_boot=100, seed=0)
    assert d == lo == hi == 1.0  # every paired difference is exactly 1
    d, lo, hi = diff_ci(np.array([0.0, 1.0]), np.array([5.0, 6.0, 7.0]), paired=False, n_boot=200, seed=0)
    assert d == pytest.approx(5.5) and lo < d < hi


def test_runs_scored_with_different_protocols_are_refused(runs, tmp_path):
    import shutil

    from cdviz.store import StoreError

    match = tmp_path / "match-run"
    shutil.copytree(runs["linked"], match)
    manifest = json.loads((match / "manifest.json").read_text())
    manifest.setdefault("options", {})["protocol"] = "match"
    (match / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(StoreError, match="record both with the same --protocol"):
        compare_runs(runs["unlinked"], match, tmp_path / "c-mixed", n_boot=10)
    out = compare_runs(match, match, tmp_path / "c-same", n_boot=10)
    assert json.loads((out / "summary.json").read_text())["protocol"] == "match"
    assert "match protocol" in (out / "compare.html").read_text()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_resampled_auroc_equals_sklearn_on_the_expanded_resample(seed):
    from sklearn.metrics import roc_auc_score

    from analyses.compare import resampled_auroc

    rng = np.random.default_rng(seed)
    scores = np.round(rng.normal(size=60), 1)  # rounded: ties inside and across classes
    labels, keep = rng.random(60) < 0.3, rng.random(60) < 0.8
    idx = rng.integers(0, 60, (20, 60))
    got = resampled_auroc(scores, labels, keep, idx)
    for b in range(20):
        take = [i for i in idx[b] if keep[i]]
        y = labels[take]
        expected = roc_auc_score(y, scores[take]) if 0 < y.sum() < len(y) else np.nan
        np.testing.assert_allclose(got[b], expected, atol=1e-12, equal_nan=True)


def test_identical_runs_compare_to_zero_auroc_change(runs, tmp_path):
    out = compare_runs(runs["linked"], runs["linked"], tmp_path / "same", n_boot=300)
    link = _table(out, "error_link")
    assert link.paired.all() and np.allclose(link.delta, 0.0)
    assert ((link.ci_high - link.ci_low).dropna() < 0.02).all() and link.ci_low.notna().any()


def test_comparison_links_to_the_reports_of_both_runs(runs, tmp_path):
    import shutil

    for name in ("linked", "aligned"):
        shutil.copytree(runs[name], tmp_path / name)
    out = compare_runs(tmp_path / "linked", tmp_path / "aligned", tmp_path / "aligned" / "compare", n_boot=20)
    assert "run's report" not in (out / "compare.html").read_text()  # no report written yet: no dead link
    build_report(tmp_path / "linked", n_boot=20, n_perm=20)
    out = compare_runs(tmp_path / "linked", tmp_path / "aligned", tmp_path / "aligned" / "compare", n_boot=20)
    html = (out / "compare.html").read_text()
    assert '<a href="../../linked/report/index.html">before run&#x27;s report</a>' in html
    assert "after run" not in html.split("<nav")[1].split("</nav>")[0]  # the after run has no report
