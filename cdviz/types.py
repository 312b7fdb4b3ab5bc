"""Core records shared by every stage: probe items and their object boxes.

A probe item is one question with known answer, whatever its source:

    kind == "choice":    one image, N candidate texts, ``correct`` indexes the true one
                         (SugarCrepe, ARO, What'sUp, shapes world, recognition QA).
    kind == "match2x2":  two images and two captions, caption i describes image i
                         (Winoground, BiVLC); ``correct`` is unused and kept at 0.

Boxes are in pixels of the image they belong to: (x, y) is the top-left corner.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from cdviz.errors import CdvizError

SKILLS = ("recognition", "perception")
KINDS = ("choice", "match2x2")
DEFAULT_QUESTION = "Which caption best describes the image?"


class ProbeError(CdvizError, ValueError):
    """A probe item or file that cannot be used; the message names the item and the fix."""


@dataclass(frozen=True)
class Box:
    """An object region: the phrase that names it and its pixel rectangle."""

    phrase: str
    x: float
    y: float
    w: float
    h: float
    image: int = 0  # index into ProbeItem.images

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ProbeItem:
    """One probing question with a known answer (see the module docstring for ``kind``)."""

    uid: str
    source: str
    category: str
    images: tuple[str, ...]
    options: tuple[str, ...]
    correct: int = 0
    skill: Literal["recognition", "perception"] = "perception"
    subcategory: str = ""
    kind: Literal["choice", "match2x2"] = "choice"
    question: str = DEFAULT_QUESTION
    boxes: tuple[Box, ...] = ()
    split: str = "test"
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ProbeError naming this item when it cannot be evaluated."""
        where = f"probe item {self.uid!r} ({self.source}/{self.category})"
        if not self.uid:
            raise ProbeError(f"{where}: empty uid; give every item a unique id")
        if self.kind not in KINDS:
            raise ProbeError(f"{where}: unknown kind {self.kind!r}; use one of {KINDS}")
        if self.skill not in SKILLS:
            raise ProbeError(f"{where}: unknown skill {self.skill!r}; use one of {SKILLS}")
        if len(self.options) < 2:
            raise ProbeError(f"{where}: {len(self.options)} option(s); an item needs at least two candidate texts")
        if any(not isinstance(o, str) or not o.strip() for o in self.options):
            raise ProbeError(f"{where}: an option is empty; every candidate text must be non-empty")
        if not self.images:
            raise ProbeError(f"{where}: no image; every probe item needs an image path")
        if self.kind == "choice":
            if not 0 <= self.correct < len(self.options):
                raise ProbeError(f"{where}: correct index {self.correct} outside 0..{len(self.options) - 1}")
        else:
            if len(self.images) != 2 or len(self.options) != 2:
                raise ProbeError(f"{where}: a match2x2 item needs exactly 2 images and 2 captions")
        for b in self.boxes:
            if not 0 <= b.image < len(self.images):
                raise ProbeError(f"{where}: box {b.phrase!r} refers to image {b.image}, item has {len(self.images)}")
            if b.w <= 0 or b.h <= 0:
                raise ProbeError(f"{where}: box {b.phrase!r} has non-positive size {b.w}x{b.h}")

    def to_dict(self) -> dict[str, Any]:
        # Shallow on purpose: dataclasses.asdict deep-copies metadata and dominates generation time.
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["images"] = list(self.images)
        d["options"] = list(self.options)
        d["boxes"] = [b.to_dict() for b in self.boxes]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ProbeItem:
        d = dict(d)
        d["images"] = tuple(d.get("images", ()))
        d["options"] = tuple(d.get("options", ()))
        d["boxes"] = tuple(Box(**b) for b in d.get("boxes", ()))
        d.setdefault("metadata", {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ProbeError(f"probe item {d.get('uid')!r}: unknown field(s) {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, sort_keys=True)
