"""Findings: what a report or a comparison found, in plain sentences generated from its numbers.

    report_findings(summary)   -> [Finding]   a report's summary.json (schema: cdviz/report/__init__.py)
    compare_findings(summary)  -> [Finding]   a comparison's summary.json (schema: cdviz/report/compare.py)

The report, the comparison and the dashboard's Overview put these first. Every sentence is made
from the numbers it quotes; nothing is written for a result that is not there. Text is plain
(no markup): callers escape it for HTML (`cdviz.report.html.esc`) or markdown.

Conventions: misalignment is always "larger = further apart"; a layer's misalignment is that of
the head-averaged map; an interval is a 95% bootstrap interval; a result "predicts errors" when
its q-value (corrected over the report's whole family of tests) is below the targets' alpha; a
change "fell" or "rose" when its 95% interval excludes 0, else "no change".
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

ALPHA = 0.05            # used when the summary's targets carry no alpha
FEW_ERRORS = 30         # fewer teacher-right student errors than this: the error link rests on few items
ORDER_WARN = 0.25       # the teacher's outcome depends on the option order in at least this share of items
ORDER_CATEGORY = 0.9    # categories at or above this share are named
Z95 = 1.96


@dataclass(frozen=True)
class Finding:
    """One sentence. topic: accuracy | difference | error link | targets | verdict | fine-tuned |
    warning; warning: shown as a caution."""

    topic: str
    text: str
    warning: bool = False

    def to_dict(self) -> dict:
        return {"topic": self.topic, "text": self.text, "warning": self.warning}


# ----------------------------------------------------------------------------------- formatting

def _ok(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)


def num(x: Any, spec: str = ".3f") -> str:
    """A number as text, "n/a" for null / NaN."""
    return format(x, spec) if _ok(x) else "n/a"


def pct(x: Any, digits: int = 1) -> str:
    return f"{100 * x:.{digits}f}%" if _ok(x) else "n/a"


def points(x: Any) -> str:
    """An accuracy difference in percentage points, signed."""
    return f"{100 * x:+.1f} points" if _ok(x) else "n/a"


def interval(lo: Any, hi: Any, spec: str = ".3f") -> str:
    return f"95% CI {num(lo, spec)} to {num(hi, spec)}"


def layer_list(layers: Iterable) -> str:
    """[1] -> "layer 1", [1, 2, 4] -> "layers 1, 2 and 4"."""
    layers = [str(x) for x in layers]
    if not layers:
        return "no layer"
    if len(layers) == 1:
        return f"layer {layers[0]}"
    return f"layers {', '.join(layers[:-1])} and {layers[-1]}"


def group_text(group: Any) -> str:
    """A teacher layer group ([2, 3] or the tables' "2,3") as "2-3" when consecutive."""
    g = [int(t) for t in (str(group).split(",") if isinstance(group, str) else group) if str(t).strip() != ""]
    if len(g) > 1 and g == list(range(g[0], g[0] + len(g))):
        return f"{g[0]}-{g[-1]}"
    return ", ".join(map(str, g))


def _teachers(group: Any) -> str:
    text = group_text(group)
    return f"teacher layer{'s' if ('-' in text or ',' in text) else ''} {text}"


# ------------------------------------------------------------------------------------- the report

def report_findings(summary: dict) -> list[Finding]:
    """Sentences for a report: accuracy, where the student looks differently, whether that
    predicts its errors, what to fine-tune and why, then warnings. Missing parts are skipped."""
    out: list[Finding] = []
    targets = summary.get("recommended_targets") or {}
    alpha = (targets.get("criteria") or {}).get("alpha") or ALPHA
    out += _accuracy(summary)
    out += _difference(summary, targets.get("measure"))
    out += _error_link(summary, alpha, targets.get("power") or {})
    out += _targets(summary, targets, alpha)
    out += _warnings(summary)
    return out


def _accuracy(summary: dict) -> list[Finding]:
    acc = (summary.get("accuracy") or {}).get("overall") or {}
    if not _ok(acc.get("teacher")) or not _ok(acc.get("student")):
        return []
    match = summary.get("protocol") == "match"
    how = "pairwise, match protocol" if match else "mean over option orders"
    right = "pairwise right" if match else "right in every option order"
    groups = summary.get("outcome_groups") or {}
    n_tr = groups.get("TR/SR", 0) + groups.get("TR/SW", 0)
    text = (f"Accuracy on {acc['n']} items ({how}): teacher {pct(acc['teacher'])}, student {pct(acc['student'])} "
            f"(student - teacher {points(acc.get('delta'))}). {right.capitalize()}: teacher "
            f"{pct(acc.get('teacher_consistent'))}, student {pct(acc.get('student_consistent'))}.")
    if groups:
        text += (f" The error link uses the {n_tr} items the teacher gets {right} ('TR'), of which the student gets "
                 f"{groups.get('TR/SW', 0)} wrong ('TR/SW').")
    return [Finding("accuracy", text)]


def _rows(summary: dict, measure: str | None) -> list[dict]:
    rows = (summary.get("misalignment") or {}).get("by_layer") or []
    return sorted((r for r in rows if r.get("measure") == measure and _ok(r.get("mean"))),
                  key=lambda r: r["student_layer"])


def _difference(summary: dict, measure: str | None) -> list[Finding]:
    measures = list((summary.get("misalignment") or {}).get("measures") or [])
    if not measures:
        return []
    main = measure if measure in measures else measures[0]
    out = []
    rows = _rows(summary, main)
    if rows:
        worst, best = max(rows, key=lambda r: r["mean"]), min(rows, key=lambda r: r["mean"])
        text = (f"The student looks most differently from the teacher at student layer {worst['student_layer']} "
                f"(vs {_teachers(worst['teacher_layers'])}): {main} misalignment of the head-averaged map "
                f"{num(worst['mean'])} ({interval(worst.get('ci_low'), worst.get('ci_high'))}; larger = further "
                f"apart)")
        text += _against_noise(worst) + "."
        if len(rows) > 1:
            text += f" It is smallest at layer {best['student_layer']} ({num(best['mean'])})."
        out.append(Finding("difference", text))
    others = []
    for m in measures:
        rows = _rows(summary, m)
        if m == main or not rows:
            continue
        worst = max(rows, key=lambda r: r["mean"])
        others.append(f"{m} at layer {worst['student_layer']} ({num(worst['mean'])}, "
                      f"{interval(worst.get('ci_low'), worst.get('ci_high'))}{_against_noise(worst, short=True)})")
    if others:
        out.append(Finding("difference", "The other measures are largest at: " + "; ".join(others) + "."))
    return out


def _against_noise(row: dict, short: bool = False) -> str:
    """The layer's value read against the teacher's split-half noise floor."""
    base, mean = row.get("baseline"), row.get("mean")
    if not _ok(base) or not _ok(mean) or base <= 0:
        return ""
    if short:
        return f"; noise floor {num(base)}"
    if mean > base:
        return f", {mean / base:.1f} times the teacher's own split-half noise floor of {num(base)}"
    return (f", no more than the teacher's own split-half noise floor of {num(base)} (two halves of the teacher's "
            "heads already differ this much)")


def _significant(summary: dict, alpha: float) -> list[tuple[str, dict]]:
    """(what, row) for every error-link AUROC and grounding-gap test with q < alpha, by q."""
    found = [(r["measure"], r) for r in (summary.get("error_link") or {}).get("auroc") or []
             if _ok(r.get("q_value")) and r["q_value"] < alpha]
    found += [("the grounding gap (teacher minus student share of attention on the named objects)", r)
              for r in (summary.get("grounding") or {}).get("gap_auroc") or []
              if _ok(r.get("q_value")) and r["q_value"] < alpha]
    return sorted(found, key=lambda f: (f[1]["q_value"], -abs(f[1]["auroc"] - 0.5)))


def _error_link(summary: dict, alpha: float, power: dict) -> list[Finding]:
    link = summary.get("error_link") or {}
    rows = [r for r in link.get("auroc") or [] if _ok(r.get("auroc"))]
    if not link.get("auroc"):
        return []
    if not rows:
        return [Finding("error link", "Whether misalignment predicts the student's errors cannot be measured: among "
                        "items the teacher gets right, the student is always right or always wrong.")]
    n_pos, n_neg = rows[0].get("n_pos"), rows[0].get("n_neg")
    base = (f"among the items the teacher gets right ({n_pos} student errors, {n_neg} right answers), after "
            f"correcting for {link.get('n_tests', 'all')} tests at once")
    sig = _significant(summary, alpha)
    if sig:
        parts = []
        for what, r in sig[:4]:
            inverse = " (inverse: the errors are less misaligned)" if r["auroc"] < 0.5 else ""
            parts.append(f"{what} at student layer {r['student_layer']}: AUROC {num(r['auroc'], '.2f')} "
                         f"({interval(r.get('ci_low'), r.get('ci_high'), '.2f')}, q = {num(r['q_value'], '.2g')})"
                         f"{inverse}")
        more = f" and {len(sig) - 4} more" if len(sig) > 4 else ""
        text = (f"Misalignment predicts the student's errors in {len(sig)} test{'s' if len(sig) > 1 else ''} with "
                f"q < {alpha:g}, {base}: " + "; ".join(parts) + more + ".")
        return [Finding("error link", text)]
    closest = min(rows, key=lambda r: (r["q_value"] if _ok(r.get("q_value")) else 2.0,
                                       r["p_value"] if _ok(r.get("p_value")) else 2.0))
    text = (f"No link: no misalignment measure at any student layer predicts the student's errors (no q < {alpha:g}), "
            f"{base}. Closest: {closest['measure']} at layer {closest['student_layer']}, AUROC "
            f"{num(closest['auroc'], '.2f')} ({interval(closest.get('ci_low'), closest.get('ci_high'), '.2f')}, "
            f"p = {num(closest.get('p_value'), '.2g')}, q = {num(closest.get('q_value'), '.2g')}).")
    if _ok(power.get("detectable_auroc")):
        text += (f" This run would find a link of AUROC {num(power['detectable_auroc'], '.2f')} or more "
                 f"{pct(power.get('power', 0.9), 0)} of the time with one test"
                 + (f" ({num(power['detectable_auroc_family'], '.2f')} in the worst case of the whole family)"
                    if _ok(power.get("detectable_auroc_family")) else "") + "; weaker links can go unseen.")
    return [Finding("error link", text)]


def _targets(summary: dict, targets: dict, alpha: float) -> list[Finding]:
    if not targets:
        return []
    measure, layers, groups = targets.get("measure", ""), targets.get("student_layers") or [], \
        targets.get("teacher_groups") or []
    pairs = ", ".join(f"student layer {s} toward {_teachers(g)}" for s, g in zip(layers, groups))
    if targets.get("source") == "error_link":
        evidence = {e["student_layer"]: e for e in targets.get("evidence") or []}
        why = "; ".join(f"layer {s}: AUROC {num(evidence[s].get('auroc'), '.2f')}, lower bound "
                        f"{num(evidence[s].get('ci_low'), '.2f')}, q = {num(evidence[s].get('q_value'), '.2g')}"
                        for s in layers if s in evidence)
        text = (f"Fine-tune {pairs} (VAT on {measure}): {'these are' if len(layers) > 1 else 'this is'} where "
                f"{measure} misalignment predicts the student's errors ({why}).")
        return [Finding("targets", text)]
    if targets.get("source") == "fallback_middle_band":
        n_layers = ((summary.get("models") or {}).get("student") or {}).get("n_layers")
        depth = f" for a {n_layers}-layer student" if n_layers else ""
        text = (f"The fine-tune targets are a fallback, not evidence: no student layer's {measure} misalignment "
                f"predicts the student's errors (none has an AUROC lower 95% bound above 0.5 with q < {alpha:g}), so "
                f"the paper's middle band{depth} was picked ('fallback_middle_band'): {pairs or 'no recorded layer'}.")
        other = sorted({f"{r['measure']} at layer {r['student_layer']}" for w, r in _significant(summary, alpha)
                        if r.get("measure") not in (None, measure) and r["auroc"] > 0.5})
        if other:
            text += (f" The links found for other measures ({', '.join(other)}) do not choose targets: VAT trains "
                     f"{measure}.")
        return [Finding("targets", text, warning=True)]
    return [Finding("targets", f"Fine-tune targets: {pairs or 'none'}. {targets.get('rule', '')}".strip())]


def _warnings(summary: dict) -> list[Finding]:
    out = []
    acc = (summary.get("accuracy") or {}).get("overall") or {}
    chance = (summary.get("accuracy") or {}).get("chance")
    guessing = [m for m in ("teacher", "student") if chance_note(m, acc.get(m), acc.get("n"), chance)]
    if guessing:
        out.append(Finding("warning", chance_note(guessing, [acc[m] for m in guessing], acc["n"], chance),
                           warning=True))
    errors = (summary.get("outcome_groups") or {}).get("TR/SW")
    if errors is not None and errors < FEW_ERRORS:
        out.append(Finding("warning", f"Few errors to explain: only {errors} items are teacher right, student wrong; "
                                      "every error-link result rests on them.", warning=True))
    order = order_note(summary.get("order_dependence") or [])
    if order:
        out.append(Finding("warning", order, warning=True))
    if summary.get("n_skipped"):
        out.append(Finding("warning", f"{summary['n_skipped']} of {summary.get('n_items')} items were not analysed "
                                      "(skipped while recording or without an outcome for both models).",
                           warning=True))
    return out


def chance_note(model: str | Sequence[str], acc: Any, n: Any, chance: Any) -> str | None:
    """A sentence when the accuracy ``acc`` over ``n`` items cannot be told from ``chance`` (it lies
    inside the 95% normal-approximation band of a guesser's accuracy), else None. ``model`` and
    ``acc`` may be lists (every model named must be at chance)."""
    models = [model] if isinstance(model, str) else list(model)
    accs = [acc] if not isinstance(acc, (list, tuple)) else list(acc)
    if not models or not all(_ok(a) for a in accs) or not _ok(chance) or not n:
        return None
    half = Z95 * math.sqrt(chance * (1 - chance) / n)
    if any(abs(a - chance) > half for a in accs):
        return None
    who = "both models are" if len(models) == 2 else f"the {models[0]} is"
    values = ", ".join(f"{m} {pct(a)}" for m, a in zip(models, accs))
    return (f"{who.capitalize()} at chance on this probe set: {values} against {pct(chance, 0)} (n = {n}; 95% band "
            f"of guessing {pct(chance - half)} to {pct(chance + half)}). A model that guesses has no skill to lose or "
            "explain, so read the misalignment and error-link results as a tour of the tool.")


def order_note(rows: Sequence[dict]) -> str | None:
    """A sentence when the teacher's outcome depends on the option order in many items."""
    overall = next((r for r in rows if r.get("category") == "all"), None)
    if overall is None or not _ok(overall.get("teacher")) or overall["teacher"] < ORDER_WARN:
        return None
    cats = [r for r in rows if r.get("category") != "all" and _ok(r.get("teacher"))]
    named = sorted((r for r in cats if r["teacher"] >= ORDER_CATEGORY), key=lambda r: -r["teacher"])
    text = (f"Order bias: the teacher is right in some option orders and wrong in others for "
            f"{pct(overall['teacher'], 0)} of items (the student: {pct(overall.get('student'), 0)}), so its answer "
            "follows where an option is placed rather than what it says")
    if named:
        text += (f"; in {len(named)} of {len(cats)} categories for at least {pct(ORDER_CATEGORY, 0)} of items ("
                 + ", ".join(f"{r['category']} {pct(r['teacher'], 0)}" for r in named) + ")")
    return text + ". The teacher's attention is a weak reference there."


# --------------------------------------------------------------------------------- the comparison

def change_word(delta: Any, lo: Any, hi: Any, rise: str = "rose", fall: str = "fell") -> str:
    """"fell" / "rose" when the 95% interval excludes 0, else "no change"."""
    if _ok(lo) and lo > 0:
        return rise
    if _ok(hi) and hi < 0:
        return fall
    return "no change"


def compare_findings(summary: dict) -> list[Finding]:
    """Sentences for a comparison: a verdict, one per measure (fell / rose / no change per
    student layer, the fine-tuned layers marked), accuracy, the error link and which layers
    were fine-tuned."""
    tuned = set((summary.get("finetuned") or {}).get("student_layers") or [])
    mis = summary.get("misalignment") or []
    words = [change_word(r.get("delta"), r.get("ci_low"), r.get("ci_high")) for r in mis]
    out = []
    student = next((r for r in summary.get("accuracy") or [] if r["model"] == "student" and r["category"] == "all"),
                   None)
    if mis:
        verdict = (f"Misalignment fell (the student moved closer to the teacher) in {words.count('fell')} "
                   f"and rose in {words.count('rose')} of {len(mis)} measure x layer cells")
        if words.count("no change"):
            verdict += f"; no change in {words.count('no change')}"
        if tuned:
            verdict += f" (fine-tuned: student {layer_list(sorted(tuned))})"
        if student is not None:
            verdict += (f". Student accuracy: "
                        f"{change_word(student['delta'], student.get('ci_low'), student.get('ci_high'))}")
        out.append(Finding("verdict", verdict + "."))
    measures = list(dict.fromkeys(r["measure"] for r in mis))
    for m in measures:
        out.append(Finding("verdict", _measure_verdict(m, [r for r in mis if r["measure"] == m], tuned)))
    out += _accuracy_change(summary)
    out += _link_change(summary.get("error_link") or [])
    out.append(_finetuned(summary))
    return out


def _measure_verdict(measure: str, rows: list[dict], tuned: set) -> str:
    parts, same = [], []
    for r in sorted(rows, key=lambda r: r["student_layer"]):
        word = change_word(r.get("delta"), r.get("ci_low"), r.get("ci_high"))
        mark = " (fine-tuned)" if r["student_layer"] in tuned else ""
        if word == "no change":
            same.append(f"{r['student_layer']}{mark}")
            continue
        rel = (f" by {abs(r['delta']) / r['before']:.0%}" if _ok(r.get("before")) and r["before"] > 0 and
               _ok(r.get("delta")) else "")
        parts.append(f"{word} at layer {r['student_layer']}{mark}{rel} ({num(r.get('before'))} -> "
                     f"{num(r.get('after'))}; change {num(r.get('delta'), '+.3f')}, "
                     f"{interval(r.get('ci_low'), r.get('ci_high'), '+.3f')})")
    if not parts:
        return (f"{measure} misalignment: no change at any student layer (every 95% interval of the change "
                "includes 0).")
    text = f"{measure} misalignment " + "; ".join(parts)
    if same:
        text += f"; no change at {layer_list(same)}"
    return text + "."


def _accuracy_change(summary: dict) -> list[Finding]:
    rows = summary.get("accuracy") or []
    out = []
    for model in ("student", "teacher"):
        r = next((r for r in rows if r["model"] == model and r["category"] == "all"), None)
        if r is None:
            continue
        word = change_word(r["delta"], r.get("ci_low"), r.get("ci_high"))
        if model == "teacher" and word == "no change":
            continue  # the same teacher in both runs: nothing to say
        n = f", {r['n']} paired items" if r.get("paired") else ""
        text = (f"{model.capitalize()} accuracy {pct(r['before'])} -> {pct(r['after'])}: {word} "
                f"(change {points(r['delta'])}, 95% CI {points(r.get('ci_low'))} to {points(r.get('ci_high'))}{n}).")
        if model == "student":
            cats = [c for c in rows if c["model"] == "student" and c["category"] != "all"
                    and change_word(c["delta"], c.get("ci_low"), c.get("ci_high")) != "no change"]
            if cats:
                text += " Categories that changed: " + ", ".join(
                    f"{c['category']} {points(c['delta'])}" for c in cats) + "."
        out.append(Finding("verdict", text))
    return out


def _link_change(rows: list[dict]) -> list[Finding]:
    if not rows:
        return []
    changed = [r for r in rows if change_word(r.get("delta"), r.get("ci_low"), r.get("ci_high")) != "no change"]
    if not changed:
        return [Finding("verdict", "The error link did not change: no AUROC change has a 95% interval that "
                                   "excludes 0.")]
    parts = [f"{r['measure']} at layer {r['student_layer']} {num(r.get('before'), '.2f')} -> "
             f"{num(r.get('after'), '.2f')} ({interval(r.get('ci_low'), r.get('ci_high'), '+.2f')})" for r in changed]
    return [Finding("verdict", "The error link (AUROC for student errors) changed at: " + "; ".join(parts) + ".")]


def _finetuned(summary: dict) -> Finding:
    tuned = summary.get("finetuned")
    if not tuned or not tuned.get("student_layers"):
        return Finding("fine-tuned", "Which layers were fine-tuned is not known: the after run's student checkpoint "
                                     "records no VAT or t2i stage with a layer map (cdviz_stage.json), so the changes "
                                     "above cannot be tied to fine-tuned layers.", warning=True)
    pairs = ", ".join(f"student layer {s} toward {_teachers(g)}"
                      for s, g in zip(tuned["student_layers"], tuned.get("teacher_groups") or []))
    stages = ", ".join(tuned.get("stages") or [])
    return Finding("fine-tuned", f"Fine-tuned: {pairs}" + (f" (stage {stages})" if stages else "") + ".")
