"""Error link: does a student layer's misalignment predict the student's compositional errors?

Items fall into outcome groups TR/SR, TR/SW, TW/SR, TW/SW (teacher right/wrong x student
right/wrong). The question is asked where the teacher gets the item right (TR), so an error
is the student's own: for each measure and student layer (head mean),

  AUROC   of misalignment for "student wrong" among TR items (0.5 = no link; > 0.5 = errors
          are more misaligned), with a stratified bootstrap 95% interval and a two-sided
          permutation p-value, corrected across layers (Benjamini-Hochberg q-values by default,
          or Holm) separately for each measure and category;
  logit   P(student wrong) ~ z(misalignment) + category dummies among TR items (unpenalised,
          Wald 95% intervals from the Hessian); the "misalignment" coefficient is the log odds
          ratio per standard deviation of misalignment. Per category: without the dummies;
  groups  mean misalignment per outcome group with bootstrap intervals.

Everything is repeated per category (category "all" = every item).

    error_link(store) -> ErrorLinkResult(groups, auroc, logistic, by_outcome)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from analyses.common import GROUPS, Progress
from analyses.misalignment import MisalignmentResult, misalignment as compute_misalignment
from analyses.stats import adjust_pvalues, auroc_ci, bootstrap_ci, logistic_wald, permutation_p
from cdviz.store import RunStore

ALL = "all"


@dataclass(frozen=True)
class ErrorLinkResult:
    """Frames (one row per test):

    groups:     category, group, n, share
    auroc:      measure, student_layer, teacher_layers, category, auroc, ci_low, ci_high, p_value,
                q_value, n_pos (student wrong), n_neg (student right); among TR items
    logistic:   measure, student_layer, category, term, coef, se, ci_low, ci_high, odds_ratio, p_value, n
    by_outcome: measure, student_layer, group, mean, ci_low, ci_high, n (category "all")
    correction: "bh" or "holm"
    """

    groups: pd.DataFrame
    auroc: pd.DataFrame
    logistic: pd.DataFrame
    by_outcome: pd.DataFrame
    correction: str

    def to_frame(self) -> pd.DataFrame:
        """The AUROC table (the headline result)."""
        return self.auroc.copy()

    def overall(self, measure: str | None = None) -> pd.DataFrame:
        """AUROC rows over all categories, optionally for one measure."""
        a = self.auroc[self.auroc.category == ALL]
        return a[a.measure == measure] if measure is not None else a

    def to_dict(self) -> dict:
        return {"correction": self.correction, **{k: _records(getattr(self, k))
                                                  for k in ("groups", "auroc", "logistic", "by_outcome")}}

    @classmethod
    def from_dict(cls, d: dict) -> ErrorLinkResult:
        return cls(*(pd.DataFrame(d[k]) for k in ("groups", "auroc", "logistic", "by_outcome")), d["correction"])


def _records(frame: pd.DataFrame) -> dict:
    return frame.to_dict(orient="list")


def error_link(store: RunStore, *, misalignment: MisalignmentResult | None = None,
               measures: Sequence[str] | None = None, n_boot: int = 1000, n_perm: int = 1000, seed: int = 0,
               correction: str = "bh", by_category: bool = True, progress: Progress = None) -> ErrorLinkResult:
    """Link per-layer misalignment to student errors (see the module docstring).

    Args:
        store: an open run (read only when ``misalignment`` is not given).
        misalignment: a computed MisalignmentResult to reuse.
        measures: which of its measures to test (default all).
        n_boot, n_perm: bootstrap replicates and label permutations (0 skips intervals / p-values).
        seed: seeds every bootstrap and permutation.
        correction: "bh" (Benjamini-Hochberg) or "holm", applied across layers.
        by_category: repeat every test within each category.
    """
    if correction not in ("bh", "holm"):
        raise ValueError(f"unknown correction {correction!r}; use 'bh' or 'holm'")
    mis = misalignment if misalignment is not None else compute_misalignment(store, progress=progress)
    measures = list(measures) if measures is not None else list(mis.measures)
    items = mis.items
    cats = [ALL] + (sorted(items.category.unique()) if by_category else [])
    groups = _groups(items, cats)
    tr = items.teacher_correct.to_numpy(bool)
    wrong = ~items.student_correct.to_numpy(bool)
    category = items.category.to_numpy(dtype=object)
    group_of = items.group.to_numpy(dtype=object)
    in_cat = {cat: tr & (True if cat == ALL else category == cat) for cat in cats}
    auc_rows, logit_rows, outcome_rows = [], [], []
    for measure in measures:
        values = mis.values[:, :, -1, mis.measure_index(measure)]  # [I, L] head mean
        for li, layer in enumerate(mis.student_layers):
            x = values[:, li]
            info = {"measure": measure, "student_layer": layer, "teacher_layers": _fmt(mis.teacher_groups[li])}
            for cat in cats:
                sel = in_cat[cat]
                auc, lo, hi = auroc_ci(x[sel], wrong[sel], n_boot, seed)
                auc_rows.append({**info, "category": cat, "auroc": auc, "ci_low": lo, "ci_high": hi,
                                 "p_value": permutation_p(x[sel], wrong[sel], n_perm, seed),
                                 "n_pos": int(wrong[sel].sum()), "n_neg": int((~wrong[sel]).sum())})
                logit_rows.append(_logistic(x[sel], wrong[sel], category[sel] if cat == ALL else None)
                                  .assign(measure=measure, student_layer=layer, category=cat))
            for group in GROUPS:
                in_group = group_of == group
                mean, lo, hi = bootstrap_ci(x[in_group], n_boot, seed)
                outcome_rows.append({"measure": measure, "student_layer": layer, "group": group, "mean": mean,
                                     "ci_low": lo, "ci_high": hi, "n": int(in_group.sum())})
    auc = pd.DataFrame(auc_rows, columns=["measure", "student_layer", "teacher_layers", "category", "auroc", "ci_low",
                                          "ci_high", "p_value", "n_pos", "n_neg"])
    auc["q_value"] = np.nan
    for _key, sub in auc.groupby(["measure", "category"], sort=False):
        auc.loc[sub.index, "q_value"] = adjust_pvalues(sub.p_value.to_numpy(), correction)
    logit = pd.concat(logit_rows, ignore_index=True) if logit_rows else pd.DataFrame()
    if len(logit):
        front = ["measure", "student_layer", "category"]
        logit = logit[front + [c for c in logit.columns if c not in front]]
    return ErrorLinkResult(groups, auc, logit, pd.DataFrame(outcome_rows), correction)


def _fmt(group: Sequence[int]) -> str:
    return ",".join(str(t) for t in group)


def _groups(items: pd.DataFrame, cats: list[str]) -> pd.DataFrame:
    rows = []
    for cat in cats:
        sub = items if cat == ALL else items[items.category == cat]
        for group in GROUPS:
            n = int((sub.group == group).sum())
            rows.append({"category": cat, "group": group, "n": n, "share": n / len(sub) if len(sub) else np.nan})
    return pd.DataFrame(rows)


def _logistic(x: np.ndarray, wrong: np.ndarray, categories: np.ndarray | None) -> pd.DataFrame:
    """Logit of student error on standardised misalignment (+ category dummies when given)."""
    keep = np.isfinite(x)
    x, wrong = x[keep], wrong[keep]
    sd = x.std() if len(x) > 1 else 0.0
    z = (x - x.mean()) / sd if sd > 0 else np.zeros_like(x)
    cols, names = [z], ["misalignment"]
    if categories is not None:
        cats = categories[keep]
        # The first category (alphabetical) is the baseline; dummies of the others.
        for c in sorted(set(cats))[1:]:
            cols.append((cats == c).astype(np.float64))
            names.append(f"category={c}")
    return logistic_wald(np.column_stack(cols), wrong, names)
