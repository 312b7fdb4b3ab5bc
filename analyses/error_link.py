"""Error link: does a student layer's misalignment predict the student's compositional errors?

Items fall into outcome groups TR/SR, TR/SW, TW/SR, TW/SW (teacher right/wrong x student
right/wrong). The question is asked where the teacher gets the item right (TR), so an error
is the student's own: for each measure and student layer (head mean),

  AUROC   of misalignment for "student wrong" among TR items (0.5 = no link; > 0.5 = errors
          are more misaligned), with a stratified bootstrap 95% interval and a two-sided p-value
          of the rank-sum test (the label-permutation test with every permutation);
  logit   P(student wrong) ~ z(misalignment) + category dummies among TR items (unpenalised,
          Wald 95% intervals from the Hessian); the "misalignment" coefficient is the log odds
          ratio per standard deviation of misalignment. Per category: without the dummies;
  groups  mean misalignment per outcome group with bootstrap intervals.

Everything is repeated per category (category "all" = every item).

Multiple testing: every test of a link is one family, corrected once (Benjamini-Hochberg
q-values by default, or Holm): the AUROC test of every measure x layer x category and the
logistic "misalignment" term of every measure x layer x category. A report that prints all of
them can then mark q < alpha anywhere without inflating false discoveries (corrected per
(measure, category) alone, 7 of 10 seeds without any link showed a "significant" entry). The
intercept and category terms are covariates, not tests of a link: their q is NaN.
`joint_family` widens the family to other tables the report shows (the grounding gap).

    error_link(store) -> ErrorLinkResult(groups, auroc, logistic, by_outcome, correction, family, n_tests)
    joint_family(link, grounding) -> (link, grounding) with q-values over both
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
import pandas as pd

from analyses.common import GROUPS, Progress
from analyses.misalignment import MisalignmentResult, misalignment as compute_misalignment
from analyses.stats import adjust_family, auroc_ci, bootstrap_ci, logistic_wald, rank_sum_p
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
    family:     which tests the q-values were corrected over, in words (``n_tests`` of them)
    """

    groups: pd.DataFrame
    auroc: pd.DataFrame
    logistic: pd.DataFrame
    by_outcome: pd.DataFrame
    correction: str
    family: str = ""
    n_tests: int = 0

    def to_frame(self) -> pd.DataFrame:
        """The AUROC table (the headline result)."""
        return self.auroc.copy()

    def overall(self, measure: str | None = None) -> pd.DataFrame:
        """AUROC rows over all categories, optionally for one measure."""
        a = self.auroc[self.auroc.category == ALL]
        return a[a.measure == measure] if measure is not None else a

    def to_dict(self) -> dict:
        return {"correction": self.correction, "family": self.family, "n_tests": self.n_tests,
                **{k: _records(getattr(self, k)) for k in ("groups", "auroc", "logistic", "by_outcome")}}

    @classmethod
    def from_dict(cls, d: dict) -> ErrorLinkResult:
        return cls(*(pd.DataFrame(d[k]) for k in ("groups", "auroc", "logistic", "by_outcome")), d["correction"],
                   d.get("family", ""), int(d.get("n_tests", 0)))


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
        n_boot: bootstrap replicates (0 skips the intervals).
        n_perm: 0 skips the AUROC p-values; otherwise they come from the rank-sum test, which is
            the permutation test with every permutation, so the count itself no longer matters.
        seed: seeds every bootstrap.
        correction: "bh" (Benjamini-Hochberg) or "holm", applied once over the whole family
            (every AUROC test and logistic misalignment term; see the module docstring).
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
                                 "p_value": rank_sum_p(x[sel], wrong[sel]) if n_perm > 0 else np.nan,
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
    logit = pd.concat(logit_rows, ignore_index=True) if logit_rows else pd.DataFrame()
    if len(logit):
        front = ["measure", "student_layer", "category"]
        logit = logit[front + [c for c in logit.columns if c not in front]]
    link = ErrorLinkResult(groups, auc, logit, pd.DataFrame(outcome_rows), correction)
    return joint_family(link)[0]


def joint_family(link: ErrorLinkResult, grounding=None) -> tuple:
    """Correct the link's tests, and the grounding gap's when given, as one family.

    Sets q_value on every AUROC row and on the logistic "misalignment" rows (NaN on covariate
    terms) of ``link``, and on ``grounding.gap_auroc`` (a GroundingResult), with the link's
    correction method; ``family`` says which tests were counted.

    Returns:
        (link, grounding) new results (grounding None when not given).
    """
    auc = link.auroc.copy()
    logit = link.logistic.copy()
    is_slope = (logit.term == "misalignment").to_numpy() if len(logit) else np.zeros(0, bool)
    p_logit = np.where(is_slope, logit.p_value.to_numpy(float), np.nan) if len(logit) else np.zeros(0)
    p_arrays = [auc.p_value.to_numpy(float), p_logit]
    if grounding is not None:
        p_arrays.append(grounding.gap_auroc.p_value.to_numpy(float))
    q = adjust_family(p_arrays, link.correction)
    auc["q_value"] = q[0]
    if len(logit):
        logit["q_value"] = q[1]
    n_tests = int(sum(np.isfinite(p).sum() for p in p_arrays))
    n_measures, n_layers = auc.measure.nunique(), auc.student_layer.nunique()
    n_cats = auc.category.nunique()
    family = (f"{n_tests} tests corrected together ({link.correction.upper()}): error-link AUROC and logistic "
              f"misalignment slope for {n_measures} measures x {n_layers} layers x {n_cats} categories "
              "(all items as one of them)")
    if grounding is not None:
        family += ", and the grounding-gap AUROC per layer"
    new_link = replace(link, auroc=auc, logistic=logit, family=family, n_tests=n_tests)
    if grounding is None:
        return new_link, None
    gap = grounding.gap_auroc.copy()
    gap["q_value"] = q[2]
    return new_link, replace(grounding, gap_auroc=gap)


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
