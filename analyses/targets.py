"""Recommended fine-tune targets: the student layers (and teacher groups) to align with VAT.

A student layer is recommended when its misalignment is both large and linked to errors, for
one measure (default "i2i:vat_cosine", the quantity the VAT loss trains):

  1. linked:   error-link AUROC lower 95% bound > 0.5 and corrected q-value < ``alpha``
               (category "all", items the teacher gets right);
  2. large:    head-mean misalignment, averaged over items, at least the median over layers;
  3. ranked by AUROC lower bound, then mean misalignment; at most ``max_layers`` kept.

When no layer passes, the paper's middle band derived for the student's depth is returned with
``source = "fallback_middle_band"``: clamp(round(0.3 L), 1, 7) layers starting at round(L / 3)
(half-up rounding), which reproduces the paper's table (24 -> 8..14, 28 -> 9..15, 32 -> 11..17,
40 -> 13..19) and is the trainer's default band; only recorded layers are kept.

Schema written to summary.json["recommended_targets"] and read by `cdviz finetune --from-report RUN`:

    {
      "version": 1,
      "measure": "i2i:vat_cosine",                 # which misalignment measure chose them
      "source": "error_link" | "fallback_middle_band",
      "student_layers": [8, 9, 10],                # ascending decoder layer numbers
      "teacher_groups": [[13, 14], [15, 16], ...], # same order: teacher layers averaged for each
      "criteria": {"alpha": 0.05, "auroc_ci_low_above": 0.5, "misalignment": ">= median over layers",
                   "max_layers": null},
      "evidence": [                                # every recorded student layer, ascending
        {"student_layer": 8, "teacher_layers": [13, 14], "mean_misalignment": 0.41, "auroc": 0.78,
         "ci_low": 0.71, "ci_high": 0.85, "q_value": 0.002, "selected": true, "rank": 1,
         "reason": "linked and large"}, ...]
    }

Numbers are plain JSON (NaN written as null).

    targets(store) -> TargetsResult; TargetsResult.to_dict() is the schema above
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analyses.common import Progress
from analyses.error_link import ALL, ErrorLinkResult, error_link as compute_error_link
from analyses.misalignment import MisalignmentResult, misalignment as compute_misalignment
from cdviz.layer_map import middle_band
from cdviz.store import RunStore

SCHEMA_VERSION = 1
DEFAULT_MEASURE = "i2i:vat_cosine"
EVIDENCE_COLUMNS = ["student_layer", "teacher_layers", "mean_misalignment", "auroc", "ci_low", "ci_high", "q_value",
                    "selected", "rank", "reason"]


@dataclass(frozen=True)
class TargetsResult:
    """student_layers [K], teacher_groups [K][g]: the recommendation; evidence: one row per
    recorded student layer (columns EVIDENCE_COLUMNS); source, measure, criteria: how chosen."""

    student_layers: list[int]
    teacher_groups: list[list[int]]
    evidence: pd.DataFrame
    source: str
    measure: str
    criteria: dict

    def to_frame(self) -> pd.DataFrame:
        return self.evidence.copy()

    def to_dict(self) -> dict:
        evidence = []
        for rec in self.evidence.to_dict(orient="records"):
            rec = {k: _plain(v) for k, v in rec.items()}
            rec["teacher_layers"] = [int(t) for t in rec["teacher_layers"]]
            evidence.append(rec)
        return {"version": SCHEMA_VERSION, "measure": self.measure, "source": self.source,
                "student_layers": [int(s) for s in self.student_layers],
                "teacher_groups": [[int(t) for t in g] for g in self.teacher_groups],
                "criteria": dict(self.criteria), "evidence": evidence}

    @classmethod
    def from_dict(cls, d: dict) -> TargetsResult:
        if d.get("version") != SCHEMA_VERSION:
            raise ValueError(f"recommended_targets version {d.get('version')!r}; this cdviz reads {SCHEMA_VERSION}")
        ev = pd.DataFrame(d["evidence"], columns=EVIDENCE_COLUMNS)
        return cls([int(s) for s in d["student_layers"]], [[int(t) for t in g] for g in d["teacher_groups"]], ev,
                   d["source"], d["measure"], dict(d["criteria"]))


def _plain(v):
    """numpy scalars -> Python, NaN -> None (JSON has no NaN)."""
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating, float)):
        return None if not math.isfinite(float(v)) else float(v)
    if isinstance(v, np.bool_):
        return bool(v)
    return v


def targets(store: RunStore, *, misalignment: MisalignmentResult | None = None,
            error_link: ErrorLinkResult | None = None, measure: str | None = None, alpha: float = 0.05,
            max_layers: int | None = None, progress: Progress = None) -> TargetsResult:
    """Student layers whose misalignment is large and predicts errors, with their teacher groups.

    Args:
        store: an open run.
        misalignment, error_link: computed results to reuse (computed here when missing).
        measure: misalignment measure to decide by (default "i2i:vat_cosine" when present).
        alpha: level for the corrected q-value.
        max_layers: keep at most this many of the passing layers (best ranked).
    """
    mis = misalignment if misalignment is not None else compute_misalignment(store, progress=progress)
    link = error_link if error_link is not None else compute_error_link(store, misalignment=mis, by_category=False)
    measure = measure or (DEFAULT_MEASURE if DEFAULT_MEASURE in mis.measures else mis.measures[0])
    mean_mis = np.nanmean(mis.values[:, :, -1, mis.measure_index(measure)], axis=0)  # [L]
    median = float(np.nanmedian(mean_mis))
    auc = link.auroc[(link.auroc.measure == measure) & (link.auroc.category == ALL)].set_index("student_layer")
    rows = []
    for j, s in enumerate(mis.student_layers):
        a = auc.loc[s] if s in auc.index else None
        ci_low = float(a.ci_low) if a is not None else np.nan
        q = float(a.q_value) if a is not None else np.nan
        linked = bool(ci_low > 0.5 and q < alpha)
        large = bool(mean_mis[j] >= median)
        reason = "linked and large" if linked and large else "linked, not large" if linked else \
            "large, not linked" if large else "neither"
        rows.append({"student_layer": int(s), "teacher_layers": list(mis.teacher_groups[j]),
                     "mean_misalignment": float(mean_mis[j]), "auroc": float(a.auroc) if a is not None else np.nan,
                     "ci_low": ci_low, "ci_high": float(a.ci_high) if a is not None else np.nan, "q_value": q,
                     "selected": linked and large, "rank": None, "reason": reason})
    evidence = pd.DataFrame(rows, columns=EVIDENCE_COLUMNS)
    passing = evidence[evidence.selected].sort_values(["ci_low", "mean_misalignment"], ascending=False)
    if max_layers is not None:
        dropped = passing.index[max_layers:]
        evidence.loc[dropped, "selected"] = False
        evidence.loc[dropped, "reason"] = "linked and large, beyond max_layers"
        passing = passing.iloc[:max_layers]
    evidence["rank"] = evidence["rank"].astype(object)
    for r, i in enumerate(passing.index, start=1):
        evidence.at[i, "rank"] = r
    criteria = {"alpha": alpha, "auroc_ci_low_above": 0.5, "misalignment": ">= median over layers",
                "max_layers": max_layers}
    if len(passing):
        chosen = sorted(int(s) for s in passing.student_layer)
        groups = {int(r.student_layer): list(r.teacher_layers) for r in evidence.itertuples()}
        return TargetsResult(chosen, [groups[s] for s in chosen], evidence, "error_link", measure, criteria)
    n_layers = int(store.model_info("student")["n_layers"])
    recorded = set(mis.student_layers)
    band = [s for s in middle_band(n_layers) if s in recorded]
    groups = dict(zip(mis.student_layers, mis.teacher_groups))
    return TargetsResult(band, [list(groups[s]) for s in band], evidence, "fallback_middle_band", measure, criteria)
