"""Did the gap close? Before/after differences between two runs of one probe set (e.g. the KD
student, then the same probes recorded after VAT fine-tuning): an analysis of two stores.

    compare(before, after, *, misalignment_before=None, misalignment_after=None, measures=None,
            n_boot=1000, seed=0, progress=None) -> CompareResult

All deltas are after - before with percentile bootstrap 95% intervals (seeded; ``n_boot=0``
gives the differences without intervals, which is what the dashboard shows before `cdviz compare`
has run). Where both runs hold the same items (same uids), differences are paired by uid
(``paired``); otherwise the two runs are resampled independently. Per student layer recorded in
both runs:

    misalignment  head-mean misalignment per measure (negative delta: the student moved closer),
                  with each run's own interval beside the interval of the difference
    categories    the same per item category (means only)
    error_link    AUROC of misalignment for student errors among teacher-right items (paired
                  replicates score both runs on one resample)
and per category (and "all"), for teacher and student, accuracy averaged over query orders.

CompareResult.summary() is the dict `cdviz compare` writes to summary.json and the findings read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from analyses.common import Progress, usable_items
from analyses.error_link import error_link
from analyses.misalignment import DEFAULT_T2I_METRICS, MisalignmentResult, misalignment
from analyses.stats import LEVEL, auroc_boot, bootstrap_ci
from cdviz.io import records
from cdviz.lineage import finetune_record
from cdviz.store import RunStore, StoreError, item_accuracy

MIN_PAIRED = 2  # fewer shared items than this: compare the runs as independent samples


@dataclass(frozen=True)
class CompareResult:
    """Before/after differences (frames described in the module docstring).

    misalignment: measure, student_layer, before, after, delta, ci_low, ci_high, n, paired,
                  ci_low_before, ci_high_before, ci_low_after, ci_high_after
    categories:   measure, student_layer, category, before, after, delta
    accuracy:     model, category, before, after, delta, ci_low, ci_high, n, paired, n_before, n_after
    error_link:   measure, student_layer, before, after, delta, ci_low, ci_high, paired
    finetuned:    None or {student_layers, teacher_groups, stages} of the after run's student
    """

    before: str
    after: str
    protocol: str
    paired: bool
    n_shared: int
    n_before: int
    n_after: int
    n_boot: int
    misalignment: pd.DataFrame
    categories: pd.DataFrame
    accuracy: pd.DataFrame
    error_link: pd.DataFrame
    finetuned: dict | None

    FRAMES = ("misalignment", "categories", "accuracy", "error_link")

    def to_frame(self) -> pd.DataFrame:
        return self.misalignment

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in ("before", "after", "protocol", "paired", "n_shared", "n_before",
                                           "n_after", "n_boot", "finetuned")}
        d.update({k: getattr(self, k).to_dict(orient="list") for k in self.FRAMES})
        return d

    @classmethod
    def from_dict(cls, d: dict) -> CompareResult:
        frames = {k: pd.DataFrame(d[k]) for k in cls.FRAMES}
        return cls(str(d["before"]), str(d["after"]), str(d["protocol"]), bool(d["paired"]), int(d["n_shared"]),
                   int(d["n_before"]), int(d["n_after"]), int(d["n_boot"]), finetuned=d.get("finetuned"), **frames)

    def summary(self) -> dict:
        """Records per table (what summary.json and the findings read)."""
        return {"before": self.before, "after": self.after, "protocol": self.protocol, "paired": self.paired,
                "n_shared": self.n_shared, "n_before": self.n_before, "n_after": self.n_after,
                "misalignment": records(self.misalignment.drop(columns=[
                    "ci_low_before", "ci_high_before", "ci_low_after", "ci_high_after"], errors="ignore")),
                "accuracy": records(self.accuracy.drop(columns=["n_before", "n_after"], errors="ignore")),
                "error_link": records(self.error_link), "finetuned": self.finetuned}


def compare(before: RunStore, after: RunStore, *, misalignment_before: MisalignmentResult | None = None,
            misalignment_after: MisalignmentResult | None = None, measures: Sequence[str] | None = None,
            t2i_metrics=DEFAULT_T2I_METRICS, n_boot: int = 1000, seed: int = 0,
            progress: Progress = None) -> CompareResult:
    """Compare two runs (see the module docstring).

    Args:
        before, after: open run stores (the same probe set gives paired differences).
        misalignment_before, misalignment_after: each run's misalignment, computed here when missing.
        measures: misalignment measures to compare (default every measure both runs have).
        n_boot, seed: bootstrap replicates (0: no intervals) and seed.
        progress: called with items done (one misalignment pass per run that is computed here).

    Raises StoreError when the two runs were scored with different protocols.
    """
    stores = {"before": before, "after": after}
    protocols = {k: s.manifest.get("options", {}).get("protocol", "letters") for k, s in stores.items()}
    if protocols["before"] != protocols["after"]:
        raise StoreError(f"{before.root} was scored with the {protocols['before']} protocol and {after.root} with "
                         f"{protocols['after']}; accuracies differ in meaning, so record both with the same --protocol")
    given = {"before": misalignment_before, "after": misalignment_after}
    mis = {k: given[k] if given[k] is not None else misalignment(s, t2i_metrics=t2i_metrics, progress=progress)
           for k, s in stores.items()}
    use = {k: usable_items(s).set_index("uid") for k, s in stores.items()}
    shared = sorted(set(use["before"].index) & set(use["after"].index))
    paired = len(shared) >= MIN_PAIRED
    measures = [m for m in (measures or mis["before"].measures) if m in mis["after"].measures]
    layers = [s for s in mis["before"].student_layers if s in mis["after"].student_layers]
    return CompareResult(
        before=str(before.root.resolve()), after=str(after.root.resolve()), protocol=protocols["before"],
        paired=paired, n_shared=len(shared), n_before=len(use["before"]), n_after=len(use["after"]), n_boot=n_boot,
        misalignment=_misalignment_deltas(mis, measures, layers, shared, paired, n_boot, seed),
        categories=_category_means(mis, measures, layers),
        accuracy=_accuracy_deltas(use, shared, paired, n_boot, seed),
        error_link=pd.DataFrame(_auroc_deltas(stores, mis, measures, layers, n_boot, seed, shared if paired else None),
                                columns=["measure", "student_layer", "before", "after", "delta", "ci_low", "ci_high",
                                         "paired"]),
        finetuned=finetune_record(after.model_info("student").get("path", "")))


def diff_ci(before: np.ndarray, after: np.ndarray, paired: bool, n_boot: int, seed: int) -> tuple[float, float, float]:
    """Mean of after - before and its bootstrap interval.

    Args:
        before, after: [n] values; with ``paired`` they are aligned item by item.
    """
    if paired:
        return bootstrap_ci(after - before, n_boot, seed)
    b, a = before[np.isfinite(before)], after[np.isfinite(after)]
    if len(a) == 0 or len(b) == 0:
        return float("nan"), float("nan"), float("nan")
    if n_boot <= 0:
        return float(a.mean() - b.mean()), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    boot = a[rng.integers(0, len(a), (n_boot, len(a)))].mean(1) - b[rng.integers(0, len(b), (n_boot, len(b)))].mean(1)
    lo, hi = np.quantile(boot, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return float(a.mean() - b.mean()), float(lo), float(hi)


def _misalignment_deltas(mis, measures, layers, shared, paired, n_boot, seed) -> pd.DataFrame:
    own = {k: r.by_layer().set_index(["measure", "student_layer"]) for k, r in mis.items()}
    rows = []
    for m in measures:
        tb, ta = mis["before"].item_layer(m), mis["after"].item_layer(m)  # [I, L] each
        for s in layers:
            b, a = (tb.loc[shared, s].to_numpy(), ta.loc[shared, s].to_numpy()) if paired else \
                (tb[s].to_numpy(), ta[s].to_numpy())
            d, lo, hi = diff_ci(b, a, paired, n_boot, seed)
            row = {"measure": m, "student_layer": int(s), "before": float(np.nanmean(tb[s])),
                   "after": float(np.nanmean(ta[s])), "delta": d, "ci_low": lo, "ci_high": hi,
                   "n": len(shared) if paired else len(tb) + len(ta), "paired": paired}
            for k in ("before", "after"):
                r = own[k].loc[(m, s)]
                row[f"ci_low_{k}"], row[f"ci_high_{k}"] = float(r["ci_low"]), float(r["ci_high"])
            rows.append(row)
    return pd.DataFrame(rows, columns=["measure", "student_layer", "before", "after", "delta", "ci_low", "ci_high", "n",
                                       "paired", "ci_low_before", "ci_high_before", "ci_low_after", "ci_high_after"])


def _category_means(mis, measures, layers) -> pd.DataFrame:
    keys = ["measure", "student_layer", "category"]
    frames = {k: r.by("category") for k, r in mis.items()}
    cats = frames["before"][keys + ["mean"]].merge(frames["after"][keys + ["mean"]], on=keys,
                                                   suffixes=("_before", "_after"))
    cats = cats[cats["measure"].isin(measures) & cats["student_layer"].isin(layers)]
    cats = cats.rename(columns={"mean_before": "before", "mean_after": "after"})
    cats["delta"] = cats["after"] - cats["before"]
    return cats.reset_index(drop=True)


def _accuracy_deltas(use, shared, paired, n_boot, seed) -> pd.DataFrame:
    rows = []
    for model in ("teacher", "student"):
        col = f"{model}_item_accuracy"
        ub, ua = (use[k].assign(**{col: item_accuracy(use[k], model)}) for k in ("before", "after"))
        cats = ["all", *sorted(set(ub.category.astype(str)) | set(ua.category.astype(str)))]
        for cat in cats:
            sb = ub if cat == "all" else ub[ub.category.astype(str) == cat]
            sa = ua if cat == "all" else ua[ua.category.astype(str) == cat]
            common = sorted(set(sb.index) & set(sa.index)) if paired else []
            if paired:
                b, a = sb.loc[common, col].to_numpy(float), sa.loc[common, col].to_numpy(float)
            else:
                b, a = sb[col].to_numpy(float), sa[col].to_numpy(float)
            d, lo, hi = diff_ci(b, a, paired, n_boot, seed)
            rows.append({"model": model, "category": cat, "before": float(sb[col].mean()),
                         "after": float(sa[col].mean()), "delta": d, "ci_low": lo, "ci_high": hi,
                         "n": len(common) if paired else len(sb) + len(sa), "paired": paired,
                         "n_before": len(sb), "n_after": len(sa)})
    return pd.DataFrame(rows)


def _auroc_deltas(stores, mis, measures, layers, n_boot, seed, shared: list[str] | None = None) -> list[dict]:
    """Per measure and layer: AUROC before / after and the interval of their difference.

    With ``shared`` items (paired runs on one probe set) every bootstrap replicate resamples the
    shared items once and scores both runs on that same resample (each on its own teacher-right
    items), so identical runs differ by exactly zero; otherwise the replicates are independent.
    """
    links = {k: error_link(stores[k], misalignment=mis[k], measures=measures, n_boot=0, n_perm=0, by_category=False)
             for k in stores}
    paired_idx = None
    if shared:
        paired_idx = np.random.default_rng(seed).integers(0, len(shared), (max(n_boot, 0), len(shared)))
    rows = []
    for m in measures:
        for s in layers:
            auc, boot = {}, {}
            for i, k in enumerate(("before", "after")):
                res, r = mis[k], links[k].overall(m)
                auc[k] = float(r[r.student_layer == s].auroc.iloc[0])
                if paired_idx is not None:
                    items = res.items.set_index("uid").loc[shared]
                    x = res.item_layer(m).loc[shared, s].to_numpy(float)
                    keep = items.teacher_correct.to_numpy(bool) & np.isfinite(x)
                    boot[k] = resampled_auroc(x, ~items.student_correct.to_numpy(bool), keep, paired_idx)
                else:
                    x = res.item_layer(m)[s].to_numpy()
                    tr = res.items.teacher_correct.to_numpy(bool)
                    boot[k] = auroc_boot(x[tr], ~res.items.student_correct.to_numpy(bool)[tr], n_boot, seed + i)
            diff = boot["after"] - boot["before"] if len(boot["before"]) and len(boot["after"]) else np.empty(0)
            diff = diff[np.isfinite(diff)]
            lo, hi = np.quantile(diff, [(1 - LEVEL) / 2, (1 + LEVEL) / 2]) if len(diff) else (np.nan, np.nan)
            rows.append({"measure": m, "student_layer": int(s), "before": auc["before"], "after": auc["after"],
                         "delta": auc["after"] - auc["before"], "ci_low": float(lo), "ci_high": float(hi),
                         "paired": paired_idx is not None})
    return rows


def resampled_auroc(scores: np.ndarray, labels: np.ndarray, keep: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """[B] AUROC of ``scores`` for ``labels`` over the items ``keep`` selects, in each bootstrap
    resample ``idx`` [B, n] (rows of item indices); NaN where a resample lacks a class.

    Each resample is scored by the rank form with tie-averaged ranks of its item copies: an item
    drawn c times counts as c tied copies, so this equals the AUROC of the expanded sample.
    """
    n = len(scores)
    counts = np.zeros((len(idx), n))
    np.add.at(counts, (np.repeat(np.arange(len(idx)), idx.shape[1]), idx.ravel()), 1.0)
    counts[:, ~keep] = 0.0
    values, group = np.unique(np.where(keep, scores, np.inf), return_inverse=True)
    onehot = np.zeros((n, len(values)))
    onehot[np.arange(n), group] = 1.0
    in_group = counts @ onehot                                  # [B, G] copies per tied score
    before = np.cumsum(in_group, axis=1) - in_group             # copies ranked below each group
    midrank = before + (in_group + 1) / 2
    pos = labels.astype(bool)
    n_pos, n_neg = counts[:, pos].sum(1), counts[:, ~pos].sum(1)
    rank_sum = (counts[:, pos] * midrank[:, group[pos]]).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return np.where((n_pos > 0) & (n_neg > 0), auc, np.nan)
