"""Glossary: one meaning per name, for every name the report, the comparison and the dashboard show.

    glossary()          -> [Term]   measures from the metric registry, then the tables' columns
    term_anchor(name)   -> "g-..."  the HTML anchor of a term (tables link their headers to it)

Measure entries are generated from the metric registry (`cdviz.metrics.METRICS` and
`HIGHER_IS_ALIGNED`): every measure is a misalignment, larger = further apart, so a similarity s
is shown as 1 - s with its range turned round. A metric registered without words here still
gets an entry (its function's docstring line, direction from the registry).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cdviz.metrics import HIGHER_IS_ALIGNED, METRICS

# metric -> (what it computes between two maps, its range as (low, high) or a text)
METRIC_WORDS: dict[str, tuple[str, tuple[float, float] | str]] = {
    "vat_cosine": ("cosine similarity of the two received-attention vectors over the image tokens (the quantity "
                   "the VAT loss trains)", (0.0, 1.0)),
    "js": ("Jensen-Shannon divergence of the two maps as distributions over the image (natural log)", (0.0, 0.693)),
    "spearman": ("Spearman rank correlation of the two maps' cell values", (-1.0, 1.0)),
    "topk_iou": ("overlap (intersection over union) of the two maps' most attended 10% of cells", (0.0, 1.0)),
    "emd": ("earth mover's distance between the two maps on the patch grid (exact)", "0 to the grid diagonal, in "
            "patch units"),
    "emd_sliced": ("sliced approximation of the earth mover's distance on the patch grid", "0 to the grid "
                   "diagonal, in patch units"),
}
FIELD_WORDS = {
    "i2i": "the attention each image token receives from the image tokens, student layer vs its teacher layer "
           "group",
    "t2i": "where the answer position looks over the image, student layer vs its teacher layer group",
}
FIELD_METRICS = {"i2i": ("vat_cosine",)}  # i2i is measured as VAT does; t2i with every other registered metric

TERMS: dict[str, str] = {
    "head-averaged map": "a layer's value in every table and plot (head = -1, 'avg map'): the misalignment of "
                         "the map averaged over heads, not the mean of the per-head misalignments.",
    "baseline": "noise floor: the same measure between two halves of the teacher's heads (each averaged over the "
                "teacher layer group); what two looks at one picture already differ by.",
    "teacher_layers": "the teacher layers a student layer is compared with (their maps averaged); the paper's "
                      "group matching generalised to any depth. The layer-correspondence map is a separate, "
                      "data-driven view and is not used by the other analyses.",
    "TR/SR": "items the teacher gets right and the student gets right (right in every option order).",
    "TR/SW": "items the teacher gets right and the student gets wrong: the student's own errors, which the error "
             "link explains.",
    "TW/SR": "items the teacher gets wrong and the student gets right.",
    "TW/SW": "items both get wrong.",
    "teacher": "teacher accuracy: the mean over option orders of being right (match protocol: pairwise).",
    "student": "student accuracy: the mean over option orders of being right (match protocol: pairwise).",
    "teacher_consistent": "share of items the teacher gets right in every option order (Winoground: group score); "
                          "this, not the mean accuracy, defines 'teacher right' in the outcome groups.",
    "student_consistent": "share of items the student gets right in every option order.",
    "delta": "in a report: student - teacher; in a comparison: after - before.",
    "auroc": "error link: the chance that a random student error (TR/SW) is more misaligned than a random right "
             "answer (TR/SR). 0.5 = no link; above 0.5 = errors are more misaligned.",
    "ci_low": "lower end of the 95% bootstrap interval.",
    "ci_high": "upper end of the 95% bootstrap interval.",
    "p_value": "two-sided p-value of one test on its own; do not mark results by it.",
    "q_value": "p-value corrected over the report's whole family of tests (Benjamini-Hochberg); a result counts "
               "when q < 0.05.",
    "n_pos": "student errors among the items the teacher gets right (TR/SW).",
    "n_neg": "student right answers among the items the teacher gets right (TR/SR).",
    "mean_gap": "grounding gap: the teacher's share of image attention inside the named objects' boxes minus the "
                "student's (positive: the student looks less at the objects).",
    "n_sinks": "image tokens receiving more than k times the uniform share of attention (attention sinks).",
    "sink_share": "share of received attention taken by the sink tokens, before the filter.",
    "sink_share_filt": "the same tokens' share after the mean + std filter VAT applies.",
    "cos_raw_filt": "cosine between the received-attention vector before and after the filter (1 = the filter "
                    "changes nothing about its shape).",
    "fallback_middle_band": "no layer qualified as a fine-tune target, so the paper's middle band of layers for "
                            "the student's depth was picked: a default, not evidence.",
    "error_link": "fine-tune targets chosen because their misalignment predicts the student's errors (AUROC lower "
                  "95% bound > 0.5 and q < 0.05).",
    "selected": "whether the layer is a fine-tune target by the error-link rule (false for every layer when the "
                "targets are the fallback).",
    "change": "fell / rose: the 95% interval of the change after - before lies below / above 0; no change: it "
              "includes 0.",
    "fine-tuned": "yes: the after run's student was aligned on this layer (from its checkpoint's stage markers).",
    "order dependence": "share of items a model gets right in some option orders and wrong in others: with two "
                        "options, it answered by position.",
}


@dataclass(frozen=True)
class Term:
    name: str
    meaning: str
    range: str = ""
    direction: str = ""


def _metric_term(field: str, metric: str) -> Term:
    higher = HIGHER_IS_ALIGNED.get(metric, False)
    words, span = METRIC_WORDS.get(metric, ((METRICS[metric].__doc__ or "a registered metric").strip().split("\n")[0],
                                            "see the metric"))
    if isinstance(span, tuple):
        lo, hi = (1 - span[1], 1 - span[0]) if higher else span
        span = f"{lo:g} to {hi:g}"
    formula = f"1 - {words}" if higher else words
    return Term(f"{field}:{metric}", f"misalignment of {FIELD_WORDS[field]}: {formula}.", span,
                "larger = further apart")


def measure_terms() -> list[Term]:
    """One term per measure the analyses can compute, from the registry."""
    out = [_metric_term("i2i", m) for m in FIELD_METRICS["i2i"] if m in METRICS]
    out += [_metric_term("t2i", m) for m in sorted(METRICS) if m not in FIELD_METRICS["i2i"]]
    return out


def glossary() -> list[Term]:
    return measure_terms() + [Term(name, meaning) for name, meaning in TERMS.items()]


def term_anchor(name: str) -> str:
    return "g-" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def term_names() -> set[str]:
    return {t.name for t in glossary()}
