"""Statistics helpers against scipy / sklearn, their textbook definitions and values worked out by hand."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.stats import bootstrap, false_discovery_control, mannwhitneyu, rankdata
from sklearn.metrics import roc_auc_score

from analyses.stats import (
    adjust_family, adjust_pvalues, auroc, auroc_boot, auroc_ci, bootstrap_ci, logistic_wald, permutation_p, _rank_auc,
    rank_sum_p,
)

SIZES = [(2, 3), (1, 9), (17, 40), (150, 350)]  # (n_pos, n_neg), a class of one included


def _scores(n_pos: int, n_neg: int, seed: int, nan: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Scores with many ties (rounded) and, when asked, two NaNs (dropped by every statistic)."""
    rng = np.random.default_rng(seed)
    y = np.r_[np.ones(n_pos, bool), np.zeros(n_neg, bool)]
    s = np.round(y * 0.5 + rng.normal(size=len(y)), 1)
    if nan:
        s, y = np.r_[s, np.nan, np.nan], np.r_[y, True, False]
    order = rng.permutation(len(y))
    return s[order], y[order]


def test_rank_auc_equals_sklearn_with_ties():
    rng = np.random.default_rng(0)
    s = rng.integers(0, 5, 60).astype(float)  # many ties
    y = rng.uniform(size=60) < 0.4
    assert _rank_auc(rankdata(s), y) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_auroc_nan_without_both_classes_and_drops_nan_scores():
    assert np.isnan(auroc([0.1, 0.2], [True, True]))
    assert auroc([0.1, np.nan, 0.9, 0.2], [False, True, True, False]) == 1.0
    assert len(auroc_boot([1.0, 2.0], [False, False])) == 0


def test_auroc_ci_brackets_the_estimate_and_is_seeded():
    rng = np.random.default_rng(1)
    y = rng.uniform(size=200) < 0.5
    s = y + rng.normal(size=200)
    auc, lo, hi = auroc_ci(s, y, n_boot=400, seed=3)
    assert lo < auc < hi and 0.6 < auc < 0.9
    assert auroc_ci(s, y, n_boot=400, seed=3) == (auc, lo, hi)


def test_permutation_p_small_for_separated_large_for_noise():
    y = np.array([False] * 20 + [True] * 20)
    assert permutation_p(np.arange(40.0), y, n_perm=199, seed=0) == pytest.approx(1 / 200)
    noise = np.random.default_rng(2).normal(size=40)
    assert permutation_p(noise, y, n_perm=199, seed=0) > 0.05


def test_benjamini_hochberg_and_holm_by_hand():
    p = [0.01, 0.04, 0.03, 0.5, np.nan]
    np.testing.assert_allclose(adjust_pvalues(p, "bh"), [0.04, 0.16 / 3, 0.16 / 3, 0.5, np.nan])
    np.testing.assert_allclose(adjust_pvalues(p, "holm"), [0.04, 0.09, 0.09, 0.5, np.nan])
    with pytest.raises(ValueError, match="bh"):
        adjust_pvalues(p, "bonferroni-ish")


def test_logistic_wald_interval_covers_the_true_slope():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, 1))
    y = rng.uniform(size=4000) < 1 / (1 + np.exp(-(0.5 + 1.0 * x[:, 0])))
    fit = logistic_wald(x, y, ["x"]).set_index("term")
    assert fit.loc["x", "ci_low"] < 1.0 < fit.loc["x", "ci_high"]
    assert fit.loc["intercept", "ci_low"] < 0.5 < fit.loc["intercept", "ci_high"]
    # Wald SE of a slope shrinks like 1/sqrt(n): about 0.04 here.
    assert 0.02 < fit.loc["x", "se"] < 0.06


def test_logistic_wald_nan_se_when_information_is_singular():
    x = np.column_stack([np.linspace(-1, 1, 50), np.ones(50)])  # second column duplicates the intercept
    y = np.arange(50) % 3 == 0
    assert logistic_wald(x, y, ["a", "const"]).se.isna().all()


def test_bootstrap_ci_mean_and_degenerate_cases():
    mean, lo, hi = bootstrap_ci([1.0, 2.0, 3.0, 4.0], n_boot=500, seed=0)
    assert mean == 2.5 and 1.0 <= lo < 2.5 < hi <= 4.0
    assert np.isnan(bootstrap_ci([np.nan])[0])
    assert bootstrap_ci([5.0])[0] == 5.0


def test_rank_sum_p_is_the_permutation_test_without_its_floor():
    rng = np.random.default_rng(4)
    y = rng.uniform(size=120) < 0.4
    s = np.round(y * 0.4 + rng.normal(size=120), 1)  # ties included
    assert rank_sum_p(s, y) == pytest.approx(permutation_p(s, y, n_perm=20000, seed=1), abs=0.01)
    separated = rank_sum_p(np.arange(200.0), np.arange(200) >= 100)
    assert separated < 1e-20  # a Monte-Carlo p-value stops at 1 / (n_perm + 1)
    assert np.isnan(rank_sum_p([1.0, 2.0], [True, True])) and rank_sum_p([1.0, 1.0, 1.0], [True, False, True]) == 1.0


def test_adjust_family_is_one_correction_split_back():
    a, b = [0.01, np.nan, 0.04], [[0.03], [0.5]]
    qa, qb = adjust_family([a, b], "bh")
    whole = adjust_pvalues([0.01, np.nan, 0.04, 0.03, 0.5], "bh")
    np.testing.assert_allclose(qa, whole[:3])
    np.testing.assert_allclose(qb, whole[3:].reshape(2, 1))
    assert adjust_family([]) == []


def test_rank_auc_equals_scipy_mann_whitney_and_sklearn_row_by_row():
    rng = np.random.default_rng(5)
    for n_pos, n_neg in SIZES:
        pos = rng.integers(0, 6, (20, n_pos)).astype(float)  # [rows, n_pos], ties within and across
        neg = rng.integers(0, 6, (20, n_neg)).astype(float)
        both = np.concatenate([pos, neg], axis=1)
        first = np.arange(n_pos + n_neg) < n_pos
        ours = _rank_auc(rankdata(both, axis=1), first)
        scipy_auc = mannwhitneyu(pos, neg, axis=1).statistic / (n_pos * n_neg)
        np.testing.assert_allclose(ours, scipy_auc, rtol=0, atol=1e-12)
        for row, auc in zip(both, ours):
            if np.ptp(row) > 0:
                assert auc == pytest.approx(roc_auc_score(first, row), abs=1e-12)


@pytest.mark.parametrize("n_pos, n_neg", SIZES)
def test_auroc_boot_replicates_are_sklearn_aucs_of_stratified_resamples(n_pos, n_neg):
    s, y = _scores(n_pos, n_neg, seed=n_pos)
    boot = auroc_boot(s, y, n_boot=30, seed=7)
    keep = np.isfinite(s)
    pos, neg = s[keep & y], s[keep & ~y]
    rng = np.random.default_rng(7)  # positives drawn first, then negatives, as scipy does
    i_pos, i_neg = rng.integers(0, len(pos), (30, len(pos))), rng.integers(0, len(neg), (30, len(neg)))
    label = np.r_[np.ones(len(pos), bool), np.zeros(len(neg), bool)]
    ref = [roc_auc_score(label, np.r_[pos[a], neg[b]]) for a, b in zip(i_pos, i_neg)]
    np.testing.assert_allclose(boot, ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("n_pos, n_neg", [(2, 3), (17, 40), (150, 350)])
def test_auroc_ci_is_scipy_percentile_bootstrap_with_scipys_own_auc(n_pos, n_neg):
    s, y = _scores(n_pos, n_neg, seed=n_neg)
    keep = np.isfinite(s)
    res = bootstrap((s[keep & y], s[keep & ~y]),
                    lambda a, b, axis=-1: mannwhitneyu(a, b, axis=axis).statistic / (a.shape[axis] * b.shape[axis]),
                    n_resamples=200, vectorized=True, method="percentile", confidence_level=0.9,
                    rng=np.random.default_rng(3))
    auc, lo, hi = auroc_ci(s, y, n_boot=200, seed=3, level=0.9)
    assert auc == pytest.approx(roc_auc_score(y[keep], s[keep]), abs=1e-12)
    assert (lo, hi) == pytest.approx(tuple(res.confidence_interval), abs=1e-9)


def test_bootstrap_ci_is_the_percentile_interval_of_resampled_means():
    v = np.r_[np.round(np.random.default_rng(6).normal(size=57), 1), np.nan]  # ties and a NaN
    idx = np.random.default_rng(2).integers(0, 57, (300, 57))
    means = v[:57][idx].mean(1)
    assert bootstrap_ci(v, n_boot=300, seed=2, level=0.8) == pytest.approx(
        (v[:57].mean(), *np.quantile(means, [0.1, 0.9])), abs=1e-12)
    assert np.isnan(bootstrap_ci([1.0, 2.0], n_boot=0)[1])
    mean, lo, hi = bootstrap_ci([1.0, 3.0], n_boot=1, seed=0)  # one replicate: the interval is that replicate
    assert mean == 2.0 and lo == hi


@pytest.mark.parametrize("n_pos, n_neg", [(1, 9), (17, 40), (150, 350)])
def test_permutation_p_counts_sklearn_aucs_of_shuffled_labels(n_pos, n_neg):
    s, y = _scores(n_pos, n_neg, seed=11)
    keep = np.isfinite(s)
    s0, y0 = s[keep], y[keep]
    perms = np.random.default_rng(4).permuted(np.broadcast_to(y0, (200, len(y0))), axis=1)  # the labels scipy draws
    observed = abs(roc_auc_score(y0, s0) - 0.5)
    null = np.array([abs(roc_auc_score(p, s0) - 0.5) for p in perms])
    assert permutation_p(s, y, n_perm=200, seed=4) == pytest.approx((1 + np.sum(null >= observed - 1e-12)) / 201)


def test_permutation_p_is_exact_when_the_permutations_run_out():
    s, y = np.array([0.3, 1.2, 0.3, 2.0, -0.4]), np.array([True, False, False, True, False])
    observed = abs(roc_auc_score(y, s) - 0.5)
    every = [abs(roc_auc_score(y[list(p)], s) - 0.5) >= observed - 1e-12 for p in itertools.permutations(range(5))]
    assert permutation_p(s, y, n_perm=1000, seed=0) == pytest.approx(np.mean(every), abs=1e-12)  # 5! = 120 <= 1000


def _step_procedure_q(p: np.ndarray, method: str) -> np.ndarray:
    """Adjusted p-values from the definition: the smallest level at which the procedure rejects each test.

    BH (step-up): reject every p <= the largest p_(k) with p_(k) <= k alpha / m.
    Holm (step-down): reject p_(1), p_(2), ... while p_(k) <= alpha / (m - k + 1).
    """
    ok = np.isfinite(p)
    ps, m = np.sort(p[ok]), int(ok.sum())
    k = np.arange(1, m + 1)
    factor = m / k if method == "bh" else m - k + 1.0
    candidates = np.unique(np.r_[np.outer(ps, factor).ravel(), 1.0])
    q = np.full(p.shape, np.nan)
    for i in np.flatnonzero(ok):
        for alpha in candidates:  # ascending: the first level that rejects test i
            fits = ps <= alpha / factor * (1 + 1e-12)
            if method == "bh":
                rejected = fits.any() and p[i] <= ps[np.flatnonzero(fits).max()]
            else:
                n_rejected = m if fits.all() else int(np.argmin(fits))
                rejected = n_rejected > 0 and p[i] <= ps[n_rejected - 1]
            if rejected or alpha == 1.0:
                q[i] = min(alpha, 1.0)
                break
    return q


@pytest.mark.parametrize("method", ["bh", "holm"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_adjust_pvalues_matches_the_step_procedures_brute_force(method, seed):
    rng = np.random.default_rng(seed)
    p = rng.uniform(size=25) ** 3
    p[:4] = p[4]  # ties
    p[rng.integers(0, 25, 3)] = np.nan
    p[-1] = 1.0
    np.testing.assert_allclose(adjust_pvalues(p, method), _step_procedure_q(p, method), rtol=1e-9, atol=0)
    if method == "bh":
        ok = np.isfinite(p)
        np.testing.assert_allclose(adjust_pvalues(p, method)[ok], false_discovery_control(p[ok]), rtol=1e-12)
