"""``python -m cdviz.bench.stats``: the AUC statistic analyses.stats hands to scipy's resampling,
side by side with scipy's own (Mann-Whitney U / (n_pos n_neg)), at the report's sizes.

analyses.stats draws its bootstrap and permutation test from scipy; the one piece written by hand
is the statistic, `_rank_auc`, kept because it is faster than scipy's (this table) and checked equal
to it in tests/analyses/test_stats.py. Each row times the same resampling (same seed, 1000
replicates, 30% positives) with either statistic, best of ``--repeats``:

    bootstrap    scipy.stats.bootstrap, positives and negatives resampled apart (`auroc_ci`)
    permutation  scipy.stats.permutation_test: scipy's statistic re-ranks every permutation;
                 ours ranks the fixed scores once and permutes the labels (`permutation_p`)

    OMP_NUM_THREADS=1 .venv/bin/python -m cdviz.bench.stats            # a few seconds
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
from scipy.stats import bootstrap, mannwhitneyu, permutation_test

from analyses.stats import auroc_boot, permutation_p


def _scipy_auc(pos, neg, axis=-1):
    """AUC as scipy computes it: the Mann-Whitney U of positives over negatives / (n_pos n_neg)."""
    return mannwhitneyu(pos, neg, axis=axis, method="asymptotic").statistic / (pos.shape[axis] * neg.shape[axis])


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bench(sizes=(200, 1000), n_resamples: int = 1000, repeats: int = 3, seed: int = 0) -> pd.DataFrame:
    """One row per (what, n_items): seconds with scipy's statistic, with ours, and their ratio."""
    rows = []
    for n in sizes:
        rng = np.random.default_rng(seed)
        y = rng.uniform(size=n) < 0.3
        s = y * 0.5 + rng.normal(size=n)
        pos, neg = s[y], s[~y]

        def scipy_boot():
            bootstrap((pos, neg), _scipy_auc, n_resamples=n_resamples, vectorized=True, method="percentile",
                      rng=np.random.default_rng(seed))

        def scipy_perm():
            permutation_test((pos, neg), lambda a, b, axis=-1: np.abs(_scipy_auc(a, b, axis) - 0.5),
                             n_resamples=n_resamples, vectorized=True, alternative="greater",
                             rng=np.random.default_rng(seed))

        for what, theirs, ours in [("bootstrap", scipy_boot, lambda: auroc_boot(s, y, n_resamples, seed)),
                                   ("permutation", scipy_perm, lambda: permutation_p(s, y, n_resamples, seed))]:
            t_scipy, t_ours = _best(theirs, repeats), _best(ours, repeats)
            rows.append({"what": what, "n_items": n, "n_resamples": n_resamples, "scipy_s": round(t_scipy, 4),
                         "ours_s": round(t_ours, 4), "scipy / ours": round(t_scipy / t_ours, 2)})
    return pd.DataFrame(rows)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[200, 1000])
    parser.add_argument("--n-resamples", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    print(bench(tuple(args.sizes), args.n_resamples, args.repeats).to_string(index=False))


if __name__ == "__main__":
    main()
