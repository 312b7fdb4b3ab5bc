"""Statistics shared by the analyses and the comparison: AUROC with intervals and permutation
p-values, multiple-testing corrections, logistic regression with Wald intervals, bootstrap means.

All randomness comes from ``np.random.default_rng(seed)``, so a report is reproducible.

    auroc(scores, labels)                      sklearn's ROC AUC, NaN when a class is missing
    auroc_ci(scores, labels, n_boot, seed)     (auc, low, high), stratified percentile bootstrap
    auroc_boot(scores, labels, n_boot, seed)   [n_boot] the bootstrap replicates themselves
    permutation_p(scores, labels, n_perm, seed) two-sided p of |AUC - 0.5| under shuffled labels
    rank_sum_p(scores, labels)                 the same test with every permutation (Mann-Whitney U)
    adjust_pvalues(p, method)                  Benjamini-Hochberg ("bh") or Holm ("holm")
    adjust_family(p_arrays, method)            one correction over the union of several tables
    rank_sum_power(auc, n_pos, n_neg, alpha)   chance the rank-sum test finds a link of that AUROC
    detectable_auroc(n_pos, n_neg, alpha, power)  the smallest AUROC found with that chance
    logistic_wald(x, y, names)                 unpenalised logistic fit, Wald SEs from the Hessian
    bootstrap_ci(values, n_boot, seed)         (mean, low, high) of a sample mean
"""

from __future__ import annotations

import math
import warnings
from typing import Sequence

import numpy as np
import pandas as pd
from scipy.linalg import LinAlgWarning
from scipy.stats import mannwhitneyu, norm, rankdata
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

LEVEL = 0.95


def _clean(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    s, y = np.asarray(scores, dtype=np.float64), np.asarray(labels).astype(bool)
    keep = np.isfinite(s)
    return s[keep], y[keep]


def auroc(scores, labels) -> float:
    """Area under the ROC curve of ``scores`` for predicting ``labels`` (True = positive).

    0.5 is chance; above 0.5 means positives tend to score higher. NaN scores are dropped; NaN
    when either class is empty.
    """
    s, y = _clean(scores, labels)
    if y.all() or not y.any():
        return float("nan")
    return float(roc_auc_score(y, s))


def _rank_auc(ranks: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUC per row from average ranks [..., n] and a positive mask [..., n]."""
    n1 = pos.sum(-1)
    n0 = pos.shape[-1] - n1
    u = (ranks * pos).sum(-1) - n1 * (n1 + 1) / 2
    return u / (n1 * n0)


def auroc_boot(scores, labels, n_boot: int = 1000, seed: int = 0) -> np.ndarray:
    """[n_boot] stratified bootstrap replicates of the AUROC (empty without both classes).

    Positives and negatives are resampled separately, so every replicate has both classes and
    the class balance of the data. Replicates are scored by the rank (Mann-Whitney) form of the
    AUC, vectorised over replicates; it equals sklearn's value, ties included.
    """
    s, y = _clean(scores, labels)
    if y.all() or not y.any() or n_boot <= 0:
        return np.empty(0)
    rng = np.random.default_rng(seed)
    pos, neg = s[y], s[~y]
    boot = np.concatenate([pos[rng.integers(0, len(pos), (n_boot, len(pos)))],
                           neg[rng.integers(0, len(neg), (n_boot, len(neg)))]], axis=1)  # [B, n]
    mask = np.zeros(boot.shape, dtype=bool)
    mask[:, : len(pos)] = True
    return _rank_auc(rankdata(boot, axis=1), mask)


def auroc_ci(scores, labels, n_boot: int = 1000, seed: int = 0, level: float = LEVEL) -> tuple[float, float, float]:
    """AUROC and its percentile interval from `auroc_boot` replicates.

    Returns:
        (auc, low, high); NaNs when a class is empty (interval NaN too when n_boot is 0).
    """
    auc = auroc(scores, labels)
    boot = auroc_boot(scores, labels, n_boot, seed)
    if np.isnan(auc) or len(boot) == 0:
        return auc, float("nan"), float("nan")
    a = (1 - level) / 2
    lo, hi = np.quantile(boot, [a, 1 - a])
    return auc, float(lo), float(hi)


def permutation_p(scores, labels, n_perm: int = 1000, seed: int = 0) -> float:
    """Two-sided permutation p-value of |AUC - 0.5| (labels shuffled, scores fixed).

    p = (1 + #{|AUC_perm - 0.5| >= |AUC - 0.5|}) / (1 + n_perm), never 0. NaN without both classes.
    """
    s, y = _clean(scores, labels)
    if y.all() or not y.any() or n_perm <= 0:
        return float("nan")
    ranks = rankdata(s)  # scores are fixed, so ranks are computed once
    observed = abs(_rank_auc(ranks, y) - 0.5)
    rng = np.random.default_rng(seed)
    perms = rng.permuted(np.broadcast_to(y, (n_perm, len(y))), axis=1)  # [P, n]
    null = np.abs(_rank_auc(ranks[None, :], perms) - 0.5)
    # A relative tolerance keeps exact ties (e.g. a permutation equal to the data) counted.
    return float((1 + np.sum(null >= observed - 1e-12)) / (1 + n_perm))


def rank_sum_p(scores, labels) -> float:
    """Two-sided p-value of AUC = 0.5: the Mann-Whitney U test, whose statistic is the AUC times
    n_pos n_neg. It is the permutation test of `permutation_p` with every permutation (exact for
    small samples without ties, else the normal approximation with tie correction), so it is not
    floored at 1 / (n_perm + 1): a report correcting hundreds of tests at once needs p-values
    below 0.05 / 200. NaN without both classes.
    """
    s, y = _clean(scores, labels)
    if y.all() or not y.any():
        return float("nan")
    if np.ptp(s) == 0:  # every score tied: no ranking, no evidence
        return 1.0
    return float(mannwhitneyu(s[y], s[~y], alternative="two-sided", method="auto").pvalue)


def adjust_family(p_arrays: Sequence[Sequence[float]], method: str = "bh") -> list[np.ndarray]:
    """`adjust_pvalues` over the union of several arrays (one family of tests), split back.

    Returns:
        one array of adjusted values per input, same shapes; NaN where the input is NaN.
    """
    arrays = [np.asarray(p, dtype=np.float64).reshape(-1) for p in p_arrays]
    if not arrays:
        return []
    q = adjust_pvalues(np.concatenate(arrays), method)
    edges = np.cumsum([0] + [len(a) for a in arrays])
    return [q[lo:hi].reshape(np.shape(p)) for lo, hi, p in zip(edges[:-1], edges[1:], p_arrays)]


def rank_sum_power(auc: float, n_pos: int, n_neg: int, alpha: float = 0.05) -> float:
    """Chance that the two-sided rank-sum test at ``alpha`` rejects AUROC = 0.5 when the true
    AUROC is ``auc`` (normal approximation; AUC variance under the alternative from Hanley and
    McNeil 1982, exact for exponential scores and close for others). Checked against simulation
    in tests/analyses/test_power.py."""
    if n_pos < 1 or n_neg < 1:
        return float("nan")
    a = float(auc)
    var0 = (n_pos + n_neg + 1) / (12 * n_pos * n_neg)
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    var1 = (a * (1 - a) + (n_pos - 1) * (q1 - a * a) + (n_neg - 1) * (q2 - a * a)) / (n_pos * n_neg)
    z = norm.ppf(1 - alpha / 2)
    shift = abs(a - 0.5)
    sd1 = math.sqrt(max(var1, 1e-300))
    return float(norm.cdf((shift - z * math.sqrt(var0)) / sd1) + norm.cdf((-shift - z * math.sqrt(var0)) / sd1))


def detectable_auroc(n_pos: int, n_neg: int, alpha: float = 0.05, power: float = 0.9) -> float:
    """The smallest AUROC > 0.5 that `rank_sum_power` finds with probability ``power`` (NaN when
    even AUROC 1 is not found that often, or a class is empty)."""
    if n_pos < 1 or n_neg < 1 or rank_sum_power(1 - 1e-9, n_pos, n_neg, alpha) < power:
        return float("nan")
    lo, hi = 0.5, 1 - 1e-9
    for _ in range(60):  # bisection: power grows with the AUROC
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if rank_sum_power(mid, n_pos, n_neg, alpha) < power else (lo, mid)
    return hi


def adjust_pvalues(p: Sequence[float], method: str = "bh") -> np.ndarray:
    """Multiple-testing adjusted p-values; NaNs stay NaN and do not count as tests.

    ``bh``: Benjamini-Hochberg false discovery rate (q-values, step-up, monotone).
    ``holm``: Holm's step-down family-wise error rate.
    """
    p = np.asarray(p, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = len(ok)
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    ps = p[order]
    if method == "bh":
        q = ps * m / np.arange(1, m + 1)
        q = np.minimum.accumulate(q[::-1])[::-1]  # monotone from the largest p down
    elif method == "holm":
        q = np.maximum.accumulate(ps * (m - np.arange(m)))
    else:
        raise ValueError(f"unknown correction {method!r}; use 'bh' or 'holm'")
    out[order] = np.minimum(q, 1.0)
    return out


def logistic_wald(x: np.ndarray, y: np.ndarray, names: Sequence[str], level: float = LEVEL) -> pd.DataFrame:
    """Unpenalised logistic regression of ``y`` on ``x`` (+ intercept) with Wald intervals.

    Fitted by sklearn (``C=inf``: no penalty); standard errors are the square roots of the diagonal
    of the inverse observed information X'WX, W = diag(p (1 - p)). A singular information
    matrix (a constant column) or a fit that did not converge (separation: the estimate runs
    off to infinity) gives NaN standard errors rather than a made-up one.

    Args:
        x: [n, k] covariates. y: [n] bool outcome. names: k covariate names.

    Returns:
        frame with rows "intercept", *names and columns term, coef, se, ci_low, ci_high,
        odds_ratio, p_value, n.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y).astype(int)
    terms = ["intercept", *names]
    empty = pd.DataFrame({"term": terms, "coef": np.nan, "se": np.nan, "ci_low": np.nan, "ci_high": np.nan,
                          "odds_ratio": np.nan, "p_value": np.nan, "n": len(y)})
    if len(np.unique(y)) < 2 or len(y) <= x.shape[1] + 1:
        return empty
    with warnings.catch_warnings():
        # Separation makes the unpenalised optimum infinite; reported below as NaN SEs.
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", LinAlgWarning)  # a singular Hessian: NaN SEs below
        fit = LogisticRegression(C=np.inf, solver="newton-cholesky", max_iter=200, tol=1e-10).fit(x, y)
    beta = np.concatenate([fit.intercept_, fit.coef_[0]])
    x1 = np.column_stack([np.ones(len(y)), x])  # [n, k + 1]
    p = fit.predict_proba(x)[:, 1]
    info = x1.T @ (x1 * (p * (1 - p))[:, None])  # [k + 1, k + 1]
    if np.linalg.cond(info) > 1e12 or fit.n_iter_.max() >= 200:
        se = np.full(len(beta), np.nan)
    else:
        se = np.sqrt(np.clip(np.diag(np.linalg.inv(info)), 0, None))
    z = norm.ppf(0.5 + level / 2)
    with np.errstate(over="ignore"):  # a separated fit's huge slope has an infinite odds ratio
        odds = np.exp(beta)
    return pd.DataFrame({
        "term": terms, "coef": beta, "se": se, "ci_low": beta - z * se, "ci_high": beta + z * se,
        "odds_ratio": odds, "p_value": 2 * norm.sf(np.abs(beta / se)), "n": len(y),
    })


def bootstrap_ci(values, n_boot: int = 1000, seed: int = 0, level: float = LEVEL) -> tuple[float, float, float]:
    """Sample mean of ``values`` (NaNs dropped) and its percentile bootstrap interval."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return float("nan"), float("nan"), float("nan")
    if len(v) == 1 or n_boot <= 0:
        return float(v.mean()), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), (n_boot, len(v)))].mean(1)
    a = (1 - level) / 2
    lo, hi = np.quantile(means, [a, 1 - a])
    return float(v.mean()), float(lo), float(hi)
