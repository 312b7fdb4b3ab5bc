"""Statistics helpers against sklearn and values worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from analyses.stats import (
    adjust_family, adjust_pvalues, auroc, auroc_boot, auroc_ci, bootstrap_ci, logistic_wald, permutation_p, _rank_auc,
    rank_sum_p,
)
from scipy.stats import rankdata


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
