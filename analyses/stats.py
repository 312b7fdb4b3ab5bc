"""Statistics shared by the analyses and the comparison: AUROC with intervals and permutation
p-values, multiple-testing corrections, logistic regression with Wald intervals, bootstrap means.

Each statistic comes from scipy or scikit-learn where one of them has it; what stays written here
is either missing there (Holm, rank-sum power, Wald standard errors) or an AUC statistic fed to
scipy's resampling that is measurably faster than scipy's own (``python -m cdviz.bench.stats``).
All randomness comes from ``np.random.default_rng(seed)``, so a report is reproducible.

    auroc(scores, labels)                      sklearn's ROC AUC, NaN when a class is missing
    auroc_ci(scores, labels, n_boot, seed)     (auc, low, high), scipy's stratified percentile bootstrap
    auroc_boot(scores, labels, n_boot, seed)   [n_boot] the bootstrap replicates themselves
    permutation_p(scores, labels, n_perm, seed) two-sided p of |AUC - 0.5|, scipy's permutation test
    rank_sum_p(scores, labels)                 the same test with every permutation (scipy's Mann-Whitney U)
    adjust_pvalues(p, method)                  Benjamini-Hochberg ("bh", scipy) or Holm ("holm")
    adjust_family(p_arrays, method)            one correction over the union of several tables
    rank_sum_power(auc, n_pos, n_neg, alpha)   chance the rank-sum test finds a link of that AUROC
    detectable_auroc(n_pos, n_neg, alpha, power)  the smallest AUROC found with that chance
    logistic_wald(x, y, names)                 unpenalised logistic fit (sklearn), Wald SEs from the Hessian
    bootstrap_ci(values, n_boot, seed)         (mean, low, high) of a sample mean, scipy's percentile bootstrap
"""

from __future__ import annotations

import math
import warnings
from typing import Sequence

import numpy as np
import pandas as pd
from scipy.linalg import LinAlgWarning
from scipy.optimize import brentq
from scipy.stats import bootstrap, false_discovery_control, mannwhitneyu, norm, permutation_test, rankdata
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
    """Mann-Whitney AUC per row from average ranks [..., n] and a positive mask [..., n].

    The statistic handed to scipy's bootstrap and permutation test. It equals
    ``mannwhitneyu(...).statistic / (n_pos n_neg)`` and sklearn's AUC (tests/analyses/test_stats.py)
    but is faster than using mannwhitneyu as the statistic: 1.1-1.3x in the bootstrap (every
    resample is ranked anyway; mannwhitneyu adds its tie term and p-value) and 5-6x in the
    permutation test (the fixed scores are ranked once; scipy's statistic re-ranks every
    permutation), at 200 and 1,000 items x 1,000 resamples, one core, four runs on a shared machine:
    ``OMP_NUM_THREADS=1 python -m cdviz.bench.stats --repeats 9``.
    """
    n1 = pos.sum(-1)
    n0 = pos.shape[-1] - n1
    u = (ranks * pos).sum(-1) - n1 * (n1 + 1) / 2
    return u / (n1 * n0)


def _percentile_bootstrap(samples: list[np.ndarray], statistic, n_boot: int, seed: int, level: float):
    """``scipy.stats.bootstrap`` with a percentile interval, each sample resampled on its own."""
    with warnings.catch_warnings():
        # scipy also returns the replicates' standard deviation, undefined for one replicate; unused here.
        warnings.filterwarnings("ignore", "Degrees of freedom <= 0", RuntimeWarning)
        warnings.filterwarnings("ignore", "invalid value encountered in scalar divide", RuntimeWarning)
        return bootstrap(samples, statistic, n_resamples=n_boot, vectorized=True, paired=False,
                         confidence_level=level, method="percentile", rng=np.random.default_rng(seed))


def _auroc_bootstrap(scores, labels, n_boot: int, seed: int, level: float):
    """scipy's stratified percentile bootstrap of the AUROC: (auc, replicates [n_boot], low, high),
    or None without both classes or replicates."""
    s, y = _clean(scores, labels)
    if y.all() or not y.any() or n_boot <= 0:
        return None
    classes = [s[y], s[~y]]  # [n_pos], [n_neg]
    auc = float(roc_auc_score(y, s))
    # scipy resamples samples of two or more only. A class of one is the same in every replicate,
    # and numpy draws nothing for it, so leaving it out keeps the replicates of resampling both.
    moving = [i for i, c in enumerate(classes) if len(c) > 1]
    if not moving:
        return auc, np.full(n_boot, auc), auc, auc
    n_pos = len(classes[0])

    def statistic(*resampled, axis=-1):  # each [B, n_class]
        parts = list(classes)
        for i, r in zip(moving, resampled):
            parts[i] = r
        lead = np.broadcast_shapes(*(p.shape[:-1] for p in parts))
        both = np.concatenate([np.broadcast_to(p, (*lead, p.shape[-1])) for p in parts], axis=-1)  # [B, n]
        first = np.arange(both.shape[-1]) < n_pos
        return _rank_auc(rankdata(both, axis=-1), first)

    res = _percentile_bootstrap([classes[i] for i in moving], statistic, n_boot, seed, level)
    ci = res.confidence_interval
    return auc, res.bootstrap_distribution, float(ci.low), float(ci.high)


def auroc_boot(scores, labels, n_boot: int = 1000, seed: int = 0) -> np.ndarray:
    """[n_boot] stratified bootstrap replicates of the AUROC (empty without both classes).

    Positives and negatives are resampled separately (``scipy.stats.bootstrap`` with the two
    classes as two samples), so every replicate has both classes and the class balance of the
    data. Replicates are scored by the rank (Mann-Whitney) form of the AUC, which equals
    sklearn's value, ties included.
    """
    boot = _auroc_bootstrap(scores, labels, n_boot, seed, LEVEL)
    return np.empty(0) if boot is None else boot[1]


def auroc_ci(scores, labels, n_boot: int = 1000, seed: int = 0, level: float = LEVEL) -> tuple[float, float, float]:
    """AUROC and the percentile interval of its `auroc_boot` replicates.

    The interval is scipy's ``method="percentile"``, not its default BCa: BCa needs a jackknife
    (n more AUCs per test) and the report's intervals have always been percentile ones.

    Returns:
        (auc, low, high); NaNs when a class is empty (interval NaN too when n_boot is 0).
    """
    boot = _auroc_bootstrap(scores, labels, n_boot, seed, level)
    if boot is None:
        return auroc(scores, labels), float("nan"), float("nan")
    auc, _, lo, hi = boot
    return auc, lo, hi


def permutation_p(scores, labels, n_perm: int = 1000, seed: int = 0) -> float:
    """Two-sided permutation p-value of |AUC - 0.5| (labels shuffled, scores fixed).

    ``scipy.stats.permutation_test`` over the labels (``permutation_type="pairings"`` with one
    sample: the labels are permuted against the fixed scores): p = (1 + #{|AUC_perm - 0.5| >=
    |AUC - 0.5|}) / (1 + n_perm), never 0; when n_perm covers every permutation (n! <= n_perm,
    n <= 6 at 1000) scipy runs them all and p is exact. NaN without both classes.
    """
    s, y = _clean(scores, labels)
    if y.all() or not y.any() or n_perm <= 0:
        return float("nan")
    ranks = rankdata(s)  # scores are fixed, so ranks are computed once

    def statistic(perm, axis=-1):  # perm [P, n] shuffled labels
        return np.abs(_rank_auc(ranks, perm) - 0.5)

    res = permutation_test((y,), statistic, permutation_type="pairings", vectorized=True, n_resamples=n_perm,
                           alternative="greater", rng=np.random.default_rng(seed))
    return float(res.pvalue)


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
    even AUROC 1 is not found that often, or a class is empty); scipy's Brent root finder, since
    power grows with the AUROC."""
    if n_pos < 1 or n_neg < 1 or rank_sum_power(1 - 1e-9, n_pos, n_neg, alpha) < power:
        return float("nan")
    if rank_sum_power(0.5, n_pos, n_neg, alpha) >= power:  # asked for no more than the test's level
        return 0.5
    return float(brentq(lambda a: rank_sum_power(a, n_pos, n_neg, alpha) - power, 0.5, 1 - 1e-9, xtol=1e-12))


def adjust_pvalues(p: Sequence[float], method: str = "bh") -> np.ndarray:
    """Multiple-testing adjusted p-values; NaNs stay NaN and do not count as tests.

    ``bh``: Benjamini-Hochberg false discovery rate (q-values, step-up, monotone), from
    ``scipy.stats.false_discovery_control``.
    ``holm``: Holm's step-down family-wise error rate.
    """
    p = np.asarray(p, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = len(ok)
    if m == 0:
        return out
    if method == "bh":
        out[ok] = false_discovery_control(p[ok], method="bh")
    elif method == "holm":  # scipy has no Holm; the step-down maximum, checked against its definition in tests
        order = ok[np.argsort(p[ok], kind="stable")]
        out[order] = np.minimum(np.maximum.accumulate(p[order] * (m - np.arange(m))), 1.0)
    else:
        raise ValueError(f"unknown correction {method!r}; use 'bh' or 'holm'")
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
    """Sample mean of ``values`` (NaNs dropped) and its percentile bootstrap interval
    (``scipy.stats.bootstrap``, ``method="percentile"`` as in `auroc_ci`)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return float("nan"), float("nan"), float("nan")
    if len(v) == 1 or n_boot <= 0:
        return float(v.mean()), float("nan"), float("nan")
    ci = _percentile_bootstrap([v], np.mean, n_boot, seed, level).confidence_interval
    return float(v.mean()), float(ci.low), float(ci.high)
