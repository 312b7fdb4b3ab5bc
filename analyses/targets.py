"""Recommended fine-tune targets: the student layers (and teacher groups) to align with VAT.

A student layer is recommended when its misalignment predicts the student's errors, for one
measure (default "i2i:vat_cosine", the quantity the VAT loss trains):

  1. linked:  error-link AUROC lower 95% bound > 0.5 and q-value < ``alpha``, the q-value
              corrected over the error link's whole family of tests (category "all", items the
              teacher gets right; see analyses/error_link.py);
  2. ranked by the AUROC lower bound (then the AUROC); at most ``max_layers`` kept.

How large a layer's misalignment is does not enter: its scale depends on the layer (sharper maps
give every item a larger distance, and a layer's noise floor differs), so a rule such as "at least
the median over layers" dropped the only linked layers for a layer whose misalignment predicted
nothing. The AUROC is rank-based within a layer, so it is the same whatever that layer's scale.
Each layer's mean misalignment is still shown next to its own noise baseline (the teacher's
split-half value of the measure), as evidence.

When no layer is linked, the paper's middle band derived for the student's depth is returned with
``source = "fallback_middle_band"``: clamp(round(0.3 L), 1, 7) layers starting at round(L / 3)
(half-up rounding), which reproduces the paper's table (24 -> 8..14, 28 -> 9..15, 32 -> 11..17,
40 -> 13..19) and is the trainer's default band; only recorded layers are kept. ``rule`` says in
words which of the two chose the layers, and ``power`` how large a link the run could have found.

Schema written to summary.json["recommended_targets"] and read by `cdviz finetune --from-report RUN`:

    {
      "version": 1,
      "measure": "i2i:vat_cosine",                 # which misalignment measure chose them
      "source": "error_link" | "fallback_middle_band",
      "rule": "error link: ...",                   # the rule that chose them, in words
      "student_layers": [8, 9, 10],                # ascending decoder layer numbers
      "teacher_groups": [[13, 14], [15, 16], ...], # same order: teacher layers averaged for each
      "criteria": {"alpha": 0.05, "auroc_ci_low_above": 0.5, "rank_by": "auroc_ci_low",
                   "family": "228 tests corrected together (BH): ...", "max_layers": null},
      "power": {"n_pos": 142, "n_neg": 143, "alpha": 0.05, "power": 0.9,
                "detectable_auroc": 0.61,          # found 90% of the time by one test at alpha
                "detectable_auroc_family": 0.67},  # ... at alpha / n_tests (the family's worst case)
      "evidence": [                                # every recorded student layer, ascending
        {"student_layer": 8, "teacher_layers": [13, 14], "mean_misalignment": 0.41, "baseline": 0.05,
         "auroc": 0.78, "ci_low": 0.71, "ci_high": 0.85, "q_value": 0.002, "selected": true, "rank": 1,
         "reason": "linked"}, ...]
    }

``reason`` is one of "linked", "linked, beyond max_layers", "not linked: interval includes 0.5",
"not linked: q >= alpha", "not linked: lower than chance" or "not tested". Numbers are plain
JSON (NaN written as null). Reports written before ``rule``, ``power`` and ``baseline`` existed
still load (they come back empty / NaN).

    targets(store) -> TargetsResult; TargetsResult.to_dict() is the schema above
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analyses.common import Progress
from analyses.error_link import ALL, ErrorLinkResult, error_link as compute_error_link
from analyses.misalignment import MisalignmentResult, misalignment as compute_misalignment
from analyses.stats import detectable_auroc
from cdviz.layer_map import middle_band
from cdviz.store import RunStore

SCHEMA_VERSION = 1
DEFAULT_MEASURE = "i2i:vat_cosine"
EVIDENCE_COLUMNS = ["student_layer", "teacher_layers", "mean_misalignment", "baseline", "auroc", "ci_low", "ci_high",
                    "q_value", "selected", "rank", "reason"]
POWER = 0.9  # the detection probability the power figures are quoted at


@dataclass(frozen=True)
class TargetsResult:
    """``student_layers [K]``, ``teacher_groups [K][g]``: the recommendation; evidence: one row per
    recorded student layer (columns EVIDENCE_COLUMNS); source, measure, criteria, rule: how chosen;
    power: how large a link this run could detect."""

    student_layers: list[int]
    teacher_groups: list[list[int]]
    evidence: pd.DataFrame
    source: str
    measure: str
    criteria: dict
    rule: str = ""
    power: dict = field(default_factory=dict)

    def to_frame(self) -> pd.DataFrame:
        return self.evidence.copy()

    def power_text(self) -> str:
        """The run's detection power in words ("" when unknown)."""
        p = self.power
        if not p or p.get("detectable_auroc") is None or not math.isfinite(p["detectable_auroc"]):
            return ""
        family = p.get("detectable_auroc_family")
        worst = (f" (>= {family:.2f} in the worst case of the report's family of tests)"
                 if family is not None and math.isfinite(family) else "")
        return (f"With {p['n_pos'] + p['n_neg']} teacher-right items ({p['n_pos']} student errors), a link of AUROC >= "
                f"{p['detectable_auroc']:.2f} would be detected {p['power']:.0%} of the time at alpha {p['alpha']:g}"
                f"{worst}; weaker links can go unseen. Items needed per link strength: docs/targets_sweep.md.")

    def to_dict(self) -> dict:
        evidence = []
        for rec in self.evidence.to_dict(orient="records"):
            rec = {k: _plain(v) for k, v in rec.items()}
            rec["teacher_layers"] = [int(t) for t in rec["teacher_layers"]]
            evidence.append(rec)
        return {"version": SCHEMA_VERSION, "measure": self.measure, "source": self.source, "rule": self.rule,
                "student_layers": [int(s) for s in self.student_layers],
                "teacher_groups": [[int(t) for t in g] for g in self.teacher_groups],
                "criteria": dict(self.criteria), "power": {k: _plain(v) for k, v in self.power.items()},
                "evidence": evidence}

    @classmethod
    def from_dict(cls, d: dict) -> TargetsResult:
        if d.get("version") != SCHEMA_VERSION:
            raise ValueError(f"recommended_targets version {d.get('version')!r}; this cdviz reads {SCHEMA_VERSION}")
        ev = pd.DataFrame(d["evidence"], columns=EVIDENCE_COLUMNS)
        return cls([int(s) for s in d["student_layers"]], [[int(t) for t in g] for g in d["teacher_groups"]], ev,
                   d["source"], d["measure"], dict(d["criteria"]), d.get("rule", ""), dict(d.get("power") or {}))


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
    """Student layers whose misalignment predicts errors, with their teacher groups.

    Args:
        store: an open run.
        misalignment, error_link: computed results to reuse (computed here when missing; the
            error link's q-values are then corrected over that link's own family).
        measure: misalignment measure to decide by (default "i2i:vat_cosine" when present).
        alpha: level for the corrected q-value.
        max_layers: keep at most this many of the linked layers (best ranked).
    """
    mis = misalignment if misalignment is not None else compute_misalignment(store, progress=progress)
    link = error_link if error_link is not None else compute_error_link(store, misalignment=mis, by_category=False)
    measure = measure or (DEFAULT_MEASURE if DEFAULT_MEASURE in mis.measures else mis.measures[0])
    m = mis.measure_index(measure)
    with np.errstate(all="ignore"):
        mean_mis = np.nanmean(mis.values[:, :, -1, m], axis=0)  # [L]
    baseline = mis.layer_baseline()[m]  # [L]
    auc = link.auroc[(link.auroc.measure == measure) & (link.auroc.category == ALL)].set_index("student_layer")
    rows = []
    for j, s in enumerate(mis.student_layers):
        a = auc.loc[s] if s in auc.index else None
        ci_low = float(a.ci_low) if a is not None else np.nan
        q = float(a.q_value) if a is not None else np.nan
        rows.append({"student_layer": int(s), "teacher_layers": list(mis.teacher_groups[j]),
                     "mean_misalignment": float(mean_mis[j]), "baseline": float(baseline[j]),
                     "auroc": float(a.auroc) if a is not None else np.nan, "ci_low": ci_low,
                     "ci_high": float(a.ci_high) if a is not None else np.nan, "q_value": q,
                     "selected": bool(ci_low > 0.5 and q < alpha), "rank": None,
                     "reason": _reason(a, ci_low, q, alpha)})
    evidence = pd.DataFrame(rows, columns=EVIDENCE_COLUMNS)
    passing = evidence[evidence.selected].sort_values(["ci_low", "auroc"], ascending=False)
    if max_layers is not None:
        dropped = passing.index[max_layers:]
        evidence.loc[dropped, "selected"] = False
        evidence.loc[dropped, "reason"] = "linked, beyond max_layers"
        passing = passing.iloc[:max_layers]
    evidence["rank"] = evidence["rank"].astype(object)
    for r, i in enumerate(passing.index, start=1):
        evidence.at[i, "rank"] = r
    criteria = {"alpha": alpha, "auroc_ci_low_above": 0.5, "rank_by": "auroc_ci_low", "family": link.family,
                "max_layers": max_layers}
    power = _power(auc, link, alpha)
    groups = {int(r.student_layer): list(r.teacher_layers) for r in evidence.itertuples()}
    if len(passing):
        chosen = sorted(int(s) for s in passing.student_layer)
        rule = (f"error link: {_layers(chosen)} chosen because {measure} misalignment there predicts the student's "
                f"errors on items the teacher gets right (AUROC lower 95% bound > 0.5 and q < {alpha:g}, q corrected "
                f"over {link.n_tests or 'the error link'} tests), ranked by that bound; the size of a layer's "
                "misalignment is not compared across layers, as its scale differs by layer.")
        return TargetsResult(chosen, [groups[s] for s in chosen], evidence, "error_link", measure, criteria, rule,
                             power)
    n_layers = int(store.model_info("student")["n_layers"])
    recorded = set(mis.student_layers)
    band = [s for s in middle_band(n_layers) if s in recorded]
    rule = (f"fallback: no layer's {measure} misalignment predicts the student's errors (no AUROC lower 95% bound "
            f"> 0.5 with q < {alpha:g}), so the paper's middle band for a {n_layers}-layer student, {_layers(band)}, "
            "is used; it is a default, not evidence (see the power statement for the links this run could miss).")
    return TargetsResult(band, [groups[s] for s in band], evidence, "fallback_middle_band", measure, criteria, rule,
                         power)


def _reason(row, ci_low: float, q: float, alpha: float) -> str:
    if row is None or not math.isfinite(ci_low) or not math.isfinite(q):
        return "not tested"
    if ci_low > 0.5 and q < alpha:
        return "linked"
    if float(row.ci_high) < 0.5:
        return "not linked: lower than chance"  # errors are less misaligned: aligning would not help
    return "not linked: interval includes 0.5" if ci_low <= 0.5 else "not linked: q >= alpha"


def _layers(layers: list[int]) -> str:
    return ("layer " if len(layers) == 1 else "layers ") + ", ".join(map(str, layers)) if layers else "no layers"


def _power(auc: pd.DataFrame, link: ErrorLinkResult, alpha: float) -> dict:
    """The AUROC this run's test finds with probability POWER, alone and at the family's worst case."""
    if auc.empty:
        return {}
    n_pos, n_neg = int(auc.n_pos.max()), int(auc.n_neg.max())
    n_tests = max(1, int(link.n_tests))
    return {"n_pos": n_pos, "n_neg": n_neg, "alpha": alpha, "power": POWER,
            "detectable_auroc": detectable_auroc(n_pos, n_neg, alpha, POWER),
            "detectable_auroc_family": detectable_auroc(n_pos, n_neg, alpha / n_tests, POWER)}
