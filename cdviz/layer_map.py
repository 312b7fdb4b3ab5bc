"""Which student layers VAT aligns, and which teacher layers each one is matched to.

    LayerMap(student_layers=(8, ..., 14), teacher_groups=((13, 14), ..., (23,)))
        student layer student_layers[i] is aligned to the mean of teacher_groups[i]

Three ways to get one (the trainer takes the first that applies):

  1. ``layer_map_from_report(RUN)``: the layers the misalignment report recommends, read from
     RUN/report/summary.json["recommended_targets"] (written by ``cdviz report RUN``).
  2. ``default_layer_map(n_student, n_teacher)``: the paper's middle band, derived for any depth,
     with each student layer matched to the teacher layers at the same relative depth.
  3. ``default_layer_map(..., paper_compat=True)``: the reference code's overlapping windows.

The band (the CompoDistill paper: 24 -> 8..14, 28 -> 9..15, 32 -> 11..17, 40 -> 13..19) is

    start = round(n / 3),   width = clamp(round(0.3 * n), 1, 7)

which reproduces the paper exactly: a third of the way in, 30% of the layers for shallow models,
and the paper's 7 layers for every depth it used (24-40). Deeper models keep 7 layers; the
report is the better guide there. Rounding is half-up.

Teacher groups, default: student layer s covers the slice [s, s+1) of a normalised depth axis;
its group is the teacher layers in that slice, [floor(s r), floor((s+1) r)) with r = n_t / n_s,
so groups have about r layers, sit at proportional positions and do not overlap (when the
teacher is shallower, each group is the one teacher layer at that depth).

Teacher groups, paper_compat: the i-th window starts at the teacher's own i-th band layer and
spans g = max(1, round(n_t / 6) - 2) layers, which reproduces the paper's g (24 -> 2, 28 -> 3,
32 -> 3, 40 -> 5); consecutive windows overlap by g - 1 layers.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from cdviz.errors import CdvizError

MAX_BAND = 7  # the paper's band width for 24- to 40-layer models


class LayerMapError(CdvizError, ValueError):
    """A layer map that cannot be used; the message says what to do."""


def _round(x: float) -> int:
    """Half-up rounding (Python's round() rounds halves to even)."""
    return math.floor(x + 0.5)


@dataclass(frozen=True)
class LayerMap:
    """student_layers[i] is aligned to the mean of the teacher layers teacher_groups[i]."""

    student_layers: tuple[int, ...]
    teacher_groups: tuple[tuple[int, ...], ...]
    source: str = ""

    def __post_init__(self) -> None:
        if not self.student_layers:
            raise LayerMapError("a layer map needs at least one student layer")
        if len(self.student_layers) != len(self.teacher_groups):
            raise LayerMapError(f"{len(self.student_layers)} student layers but {len(self.teacher_groups)} teacher "
                                "groups; give one group of teacher layers per student layer")
        if any(not g for g in self.teacher_groups):
            raise LayerMapError("every teacher group needs at least one layer")
        if len(set(self.student_layers)) != len(self.student_layers):
            raise LayerMapError(f"student layers {list(self.student_layers)} repeat a layer")

    @property
    def teacher_layers(self) -> list[int]:
        """Every teacher layer some group uses, sorted (the layers the teacher must capture)."""
        return sorted({t for g in self.teacher_groups for t in g})

    def check(self, n_student: int, n_teacher: int) -> LayerMap:
        """Raise if a layer is outside the models' depths; returns self for chaining."""
        bad_s = [s for s in self.student_layers if not 0 <= s < n_student]
        bad_t = [t for t in self.teacher_layers if not 0 <= t < n_teacher]
        if bad_s or bad_t:
            raise LayerMapError(
                f"layer map ({self.source or 'given'}) uses student layers {bad_s} / teacher layers {bad_t} "
                f"outside the models (student {n_student} layers, teacher {n_teacher}); was the report made "
                "for other models?")
        return self

    def to_dict(self) -> dict:
        return {"student_layers": list(self.student_layers),
                "teacher_groups": [list(g) for g in self.teacher_groups], "source": self.source}

    @classmethod
    def from_dict(cls, d: dict, source: str = "") -> LayerMap:
        try:
            student = tuple(int(s) for s in d["student_layers"])
            groups = tuple(tuple(int(t) for t in g) for g in d["teacher_groups"])
        except (KeyError, TypeError, ValueError) as e:
            raise LayerMapError(f"{source or 'layer map'}: expected {{'student_layers': [int, ...], "
                                f"'teacher_groups': [[int, ...], ...]}} ({type(e).__name__}: {e})") from e
        return cls(student, groups, source or d.get("source", ""))


def middle_band(n_layers: int) -> list[int]:
    """The paper's contiguous middle band of target layers, for any depth (see module docstring)."""
    if n_layers < 1:
        raise LayerMapError(f"a model with {n_layers} layers has no band")
    width = min(MAX_BAND, max(1, _round(0.3 * n_layers)))
    start = min(_round(n_layers / 3), n_layers - width)
    return list(range(start, start + width))


def paper_group_size(n_teacher: int) -> int:
    """The paper's teacher window size g: 24 -> 2, 28 -> 3, 32 -> 3, 40 -> 5, 1 for shallow teachers."""
    return max(1, _round(n_teacher / 6) - 2)


def proportional_groups(student_layers: list[int], n_student: int, n_teacher: int) -> list[tuple[int, ...]]:
    """For each student layer, the teacher layers at the same relative depth (no overlap)."""
    groups = []
    for s in student_layers:
        lo = min(s * n_teacher // n_student, n_teacher - 1)  # integer floor: no float edge cases
        hi = max(lo + 1, min((s + 1) * n_teacher // n_student, n_teacher))
        groups.append(tuple(range(lo, hi)))
    return groups


def overlapping_groups(n_targets: int, n_teacher: int) -> list[tuple[int, ...]]:
    """The reference code's windows: window i starts at the teacher's i-th band layer, g layers long."""
    g = min(paper_group_size(n_teacher), n_teacher)
    start = middle_band(n_teacher)[0]
    groups = []
    for i in range(n_targets):
        lo = min(start + i, n_teacher - g)
        groups.append(tuple(range(lo, lo + g)))
    return groups


def default_layer_map(n_student: int, n_teacher: int, *, paper_compat: bool = False) -> LayerMap:
    """The paper's scheme generalised to any pair of depths (see the module docstring)."""
    student = middle_band(n_student)
    if paper_compat:
        groups = overlapping_groups(len(student), n_teacher)
        source = f"paper-compat band for {n_student}/{n_teacher} layers"
    else:
        groups = proportional_groups(student, n_student, n_teacher)
        source = f"middle band for {n_student}/{n_teacher} layers, proportional teacher groups"
    return LayerMap(tuple(student), tuple(groups), source)


def layer_map_from_report(run_dir: str | Path) -> LayerMap:
    """The layer map ``cdviz report RUN`` recommends (RUN/report/summary.json["recommended_targets"])."""
    path = Path(run_dir) / "report" / "summary.json"
    if not path.is_file():
        raise LayerMapError(f"{path} does not exist; run `cdviz report {run_dir}` first")
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise LayerMapError(f"{path}:{e.lineno}: malformed JSON ({e.msg}); rerun `cdviz report {run_dir}`") from e
    targets = summary.get("recommended_targets")
    if not targets:
        raise LayerMapError(f"{path} has no 'recommended_targets'; run `cdviz report {run_dir}` first "
                            "(with a cdviz version that recommends target layers)")
    if isinstance(targets, dict) and not targets.get("student_layers"):
        raise LayerMapError(f"{path}: the report recommends no target layers ({targets.get('source') or 'none found'}); "
                            "drop --from-report to use the paper's middle band, or give student_layers in the recipe")
    return LayerMap.from_dict(targets, source=f"report {path}")


def resolve_layer_map(n_student: int, n_teacher: int, *, report: str | Path | None = None,
                      student_layers: list[int] | None = None, teacher_groups: list[list[int]] | None = None,
                      paper_compat: bool = False) -> LayerMap:
    """Explicit layers > a report > the default scheme; always checked against the depths."""
    if student_layers is not None:
        if teacher_groups is None:
            groups = (overlapping_groups(len(student_layers), n_teacher) if paper_compat
                      else proportional_groups(list(student_layers), n_student, n_teacher))
        else:
            groups = [tuple(g) for g in teacher_groups]
        lm = LayerMap(tuple(student_layers), tuple(tuple(g) for g in groups), "given")
    elif report is not None:
        lm = layer_map_from_report(report)
    else:
        lm = default_layer_map(n_student, n_teacher, paper_compat=paper_compat)
    return lm.check(n_student, n_teacher)
