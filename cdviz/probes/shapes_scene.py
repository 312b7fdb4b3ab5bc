"""The shapes world: procedural scenes of coloured shapes, their renderer, language and truth checker.

A scene holds 1-4 objects (colour x shape x size), each in its own cell of a 3x3 grid with its
centre jittered by at most JITTER of a cell. Along either axis two centres are therefore either
< 2 * JITTER cell apart (same row / column) or > 1 - 2 * JITTER cell apart, and a half-cell margin
decides left of / right of / above / below without any borderline case.

    generate_scenes(seed, image_size) -> Scene (pixel boxes) -> render_scene(scene) -> PIL image
    caption(claim), noun_phrase(desc), ... -> texts whose words(...) all lie in VOCABULARY
    claim_holds(scene.to_dict(), claim) -> bool     the checker the tests prove items against

No command of its own: cdviz/probes/shapes.py turns scenes into probe items and instruction data.
"""

from __future__ import annotations

import hashlib
import itertools
import random
import re
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

from PIL import Image, ImageDraw

from cdviz.errors import OptionError
from cdviz.prompts import ANSWER_INSTRUCTION, CAPTION_PROMPT, MATCH_QUESTION, VERIFY_QUESTION, format_choice_prompt
from cdviz.prompts import LETTERS as PROMPT_LETTERS
from cdviz.types import DEFAULT_QUESTION

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 205, 30),
    "purple": (140, 60, 180),
    "orange": (245, 135, 25),
}
SHAPES = ("circle", "square", "triangle", "cross")
SIZES = ("small", "large")
ATTRIBUTES = ("size", "colour", "shape")  # also the order in which a phrase names them
RELATIONS = ("left_of", "right_of", "above", "below")
SPLITS = ("train", "validation", "test")
DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)

GRID = 3
JITTER = 0.08  # of a cell, per axis
SIZE_OF_CELL = {"small": 0.38, "large": 0.72}  # side of the object's square box
# Jitter plus half a large object stays 0.06 cell inside its cell: neighbours never touch.
N_OBJECTS_WEIGHTS = (1, 3, 3, 3)  # for 1..4 objects; most categories need two objects or more
BACKGROUND_GRAY = (200, 240)  # inclusive range of the plain gray background level

Box4 = tuple[int, int, int, int]  # x, y, w, h in pixels; the object covers x..x+w-1, y..y+h-1


@dataclass(frozen=True)
class ShapeObject:
    colour: str
    shape: str
    size: str
    row: int  # grid cell, 0 = top
    col: int  # grid cell, 0 = left
    box: Box4

    @property
    def phrase(self) -> str:
        return f"{self.size} {self.colour} {self.shape}"

    def describe(self, keys: Sequence[str]) -> dict[str, str]:
        """The description naming ``keys`` of this object, e.g. ``{"colour": "red", "shape": "circle"}``."""
        return {k: getattr(self, k) for k in ATTRIBUTES if k in keys}

    def to_dict(self) -> dict[str, Any]:
        return {
            "colour": self.colour,
            "shape": self.shape,
            "size": self.size,
            "row": self.row,
            "col": self.col,
            "box": list(self.box),
        }


@dataclass(frozen=True)
class Scene:
    """One shapes-world image as a scene graph; ``index`` is unique per seed and names the image."""

    seed: int
    index: int
    split: str
    image_size: int
    background: int  # gray level of every background pixel
    objects: tuple[ShapeObject, ...]

    def find(self, desc: dict[str, str]) -> list[int]:
        """Indices of the objects that have every attribute in ``desc``."""
        return [
            i for i, o in enumerate(self.objects) if all(getattr(o, k) == v for k, v in desc.items())
        ]

    def unique(self, i: int, bases=(("colour", "shape"), ATTRIBUTES)) -> dict[str, str] | None:
        """The first description of object i by ``bases`` that no other object fits (None: a twin)."""
        for keys in bases:
            desc = self.objects[i].describe(keys)
            if len(self.find(desc)) == 1:
                return desc
        return None

    def relations(self, i: int, j: int) -> list[str]:
        """The relations "object i REL object j" that hold, read off the grid cells."""
        a, b = self.objects[i], self.objects[j]
        out = []
        if a.col < b.col:
            out.append("left_of")
        if a.col > b.col:
            out.append("right_of")
        if a.row < b.row:
            out.append("above")
        if a.row > b.row:
            out.append("below")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "index": self.index,
            "split": self.split,
            "image_size": self.image_size,
            "background": self.background,
            "objects": [o.to_dict() for o in self.objects],
        }


def scene_split(seed: int, index: int, fractions: Sequence[float] = DEFAULT_FRACTIONS) -> str:
    """The split of scene ``index``: a hash of (seed, index), so it never depends on what else is made."""
    if len(fractions) != len(SPLITS) or any(f < 0 for f in fractions) or sum(fractions) <= 0:
        raise OptionError(f"fractions {tuple(fractions)}: give {len(SPLITS)} non-negative numbers for {SPLITS}")
    digest = hashlib.sha256(f"shapes-split:{seed}:{index}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64 * sum(fractions)
    for name, cumulative in zip(SPLITS, itertools.accumulate(fractions)):
        if u < cumulative:
            return name
    return SPLITS[-1]  # float rounding at the very top of the range


def make_scene(seed: int, index: int, image_size: int = 64, fractions: Sequence[float] = DEFAULT_FRACTIONS) -> Scene:
    """Scene ``index`` of ``seed``; the layout is drawn in cell units, so it is the same at every size."""
    if image_size < 32:
        raise OptionError(f"image_size {image_size}: use at least 32 px so that small shapes stay drawable")
    rng = random.Random(f"shapes-scene:{seed}:{index}")  # a str seed is hashed with sha512: stable everywhere
    n = rng.choices(range(1, len(N_OBJECTS_WEIGHTS) + 1), weights=N_OBJECTS_WEIGHTS)[0]
    cells = rng.sample(range(GRID * GRID), n)
    cell = image_size / GRID
    objects = []
    for c in cells:
        row, col = divmod(c, GRID)
        colour, shape, size = rng.choice(list(COLOURS)), rng.choice(SHAPES), rng.choice(SIZES)
        cx = (col + 0.5 + rng.uniform(-JITTER, JITTER)) * cell
        cy = (row + 0.5 + rng.uniform(-JITTER, JITTER)) * cell
        side = round(SIZE_OF_CELL[size] * cell)
        x = min(max(round(cx - side / 2), 0), image_size - side)
        y = min(max(round(cy - side / 2), 0), image_size - side)
        objects.append(ShapeObject(colour, shape, size, row, col, (x, y, side, side)))
    background = rng.randint(*BACKGROUND_GRAY)
    return Scene(seed, index, scene_split(seed, index, fractions), image_size, background, tuple(objects))


def generate_scenes(
    seed: int,
    image_size: int = 64,
    *,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    splits: Sequence[str] = SPLITS,
    start: int = 0,
    n: int | None = None,
) -> Iterator[Scene]:
    """Scenes ``start, start+1, ...`` of ``seed`` that fall in ``splits`` (endless when ``n`` is None)."""
    unknown = set(splits) - set(SPLITS)
    if unknown:
        raise OptionError(f"unknown split(s) {sorted(unknown)}; use some of {SPLITS}")
    produced = 0
    for index in itertools.count(start):
        if n is not None and produced >= n:
            return
        if scene_split(seed, index, fractions) in splits:
            produced += 1
            yield make_scene(seed, index, image_size, fractions)


def render_scene(scene: Scene) -> Image.Image:
    """Draw the scene at ``scene.image_size``: flat gray background, filled shapes, no anti-aliasing."""
    s = scene.image_size
    image = Image.new("RGB", (s, s), (scene.background,) * 3)
    draw = ImageDraw.Draw(image)
    for o in scene.objects:
        x, y, w, h = o.box
        x1, y1 = x + w - 1, y + h - 1  # PIL rectangles include both corners
        fill = COLOURS[o.colour]
        if o.shape == "circle":
            draw.ellipse((x, y, x1, y1), fill=fill)
        elif o.shape == "square":
            draw.rectangle((x, y, x1, y1), fill=fill)
        elif o.shape == "triangle":
            draw.polygon([(x, y1), (x1, y1), ((x + x1) / 2, y)], fill=fill)
        elif o.shape == "cross":
            t = max(2, round(w / 3))  # bar thickness
            bx, by = x + (w - t) // 2, y + (h - t) // 2
            draw.rectangle((x, by, x1, by + t - 1), fill=fill)
            draw.rectangle((bx, y, bx + t - 1, y1), fill=fill)
        else:
            raise ValueError(f"scene {scene.index}: unknown shape {o.shape!r}; known: {SHAPES}")
    return image


# --- language -----------------------------------------------------------------------------------
# Every text of the shapes world is built by the functions below from structured descriptions,
# and every word it can contain is in VOCABULARY (a word-level tokenizer is built from that list).

VALUES = {"size": SIZES, "colour": tuple(COLOURS), "shape": SHAPES}
PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles", "cross": "crosses"}
NUMBER_WORDS = ("zero", "one", "two", "three", "four")
REL_TEXT = {"left_of": "to the left of", "right_of": "to the right of", "above": "above", "below": "below"}
REL_ANSWER = {"left_of": "left", "right_of": "right", "above": "above", "below": "below"}
POSITIONS = {  # (row, col) -> name
    (0, 0): "top left", (0, 1): "top", (0, 2): "top right",
    (1, 0): "left", (1, 1): "centre", (1, 2): "right",
    (2, 0): "bottom left", (2, 1): "bottom", (2, 2): "bottom right",
}  # fmt: skip
DESCRIBE_PROMPT = CAPTION_PROMPT
LETTERS = PROMPT_LETTERS[:2]
WORD_PATTERN = re.compile(r"[A-Za-z0-9]+|[^A-Za-z0-9\s]")


def words(text: str) -> list[str]:
    """Split text into words: runs of letters/digits, and every other non-space character alone.

    ``"the option's letter."`` -> ``["the", "option", "'", "s", "letter", "."]``
    """
    return WORD_PATTERN.findall(text)


def _dedupe(seq: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(seq))


_TEMPLATE_WORDS = "a an and the at of ( ) . , ? Is there in image What colour is How many are Where relative yes no"
VOCABULARY: list[str] = _dedupe(
    [*LETTERS, *COLOURS, *SHAPES, *PLURALS.values(), *SIZES, "object", "objects", *NUMBER_WORDS]
    + words(" ".join([_TEMPLATE_WORDS, DEFAULT_QUESTION, DESCRIBE_PROMPT, ANSWER_INSTRUCTION]))
    + words(" ".join([*REL_TEXT.values(), *REL_ANSWER.values(), *POSITIONS.values()]))
    + words(" ".join([MATCH_QUESTION.format(caption=""), VERIFY_QUESTION.format(question="", option="")]))  # the match protocol's queries (cdviz.prompts)
)


def noun_phrase(desc: dict[str, str], article: str = "a", plural: bool = False) -> str:
    """``{"colour": "orange", "shape": "circle"}`` -> "an orange circle"; no shape -> "object"."""
    shape = desc.get("shape")
    noun = (PLURALS[shape] if shape else "objects") if plural else (shape or "object")
    body = [desc[k] for k in ("size", "colour") if k in desc] + [noun]
    if article == "a" and body[0][0] in "aeiou":
        article = "an"
    return " ".join([article, *body] if article else body)


def caption(claim: dict[str, Any]) -> str:
    """The sentence that states ``claim`` (the claim shapes the caption categories make)."""
    if claim.get("counts"):
        [(desc, n)] = claim["counts"]
        return f"{NUMBER_WORDS[n]} {noun_phrase(desc, article='', plural=n != 1)}."
    phrases = [noun_phrase(d) for d in claim["objects"]]
    if claim.get("relations"):
        [(i, rel, j)] = claim["relations"]
        if (i, j) != (0, 1) or len(phrases) != 2:
            raise ValueError(f"claim {claim}: a relation caption names two objects, related 0 -> 1")
        return f"{phrases[0]} {REL_TEXT[rel]} {phrases[1]}."
    return _enumerate(phrases) + "."


def describe_scene(scene: Scene) -> str:
    """Every object with size, colour and position, in reading order."""
    objects = sorted(scene.objects, key=lambda o: (o.row, o.col))
    parts = [f"{noun_phrase(o.describe(ATTRIBUTES))} at the {POSITIONS[o.row, o.col]}" for o in objects]
    return _enumerate(parts) + "."


def _enumerate(parts: Sequence[str]) -> str:
    """["a", "b", "c"] -> "a, b and c"."""
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def choice_prompt(question: str, options: Sequence[str]) -> str:
    """The two-choice instruction, worded exactly as cdviz evaluation asks it (cdviz.prompts)."""
    return format_choice_prompt(question, options)


# --- the truth checker --------------------------------------------------------------------------
# It reads only the serialised scene (attributes and pixel boxes), never the grid cells the
# generator reasons with, so agreement between the two is evidence rather than a tautology.
#
# A claim is a dict with three optional parts:
#   "objects":   [desc, ...]          distinct scene objects, one per desc, carry those attributes
#   "relations": [[i, rel, j], ...]   ... and the objects chosen for desc i and desc j stand in rel
#   "counts":    [[desc, n], ...]     exactly n scene objects carry the attributes of desc
# A desc maps some of "size", "colour", "shape" to a value; a missing attribute matches anything.

CLAIM_PARTS = ("objects", "relations", "counts")


def claim_holds(scene: dict[str, Any], claim: dict[str, Any]) -> bool:
    """Whether ``claim`` is true of ``scene`` (a ``Scene.to_dict()``), by exhaustive search.

    Relations compare box centres with a margin of half a grid cell (image_size / 6): "a left_of b"
    means centre_x(a) < centre_x(b) - margin, and so on.
    """
    unknown = set(claim) - set(CLAIM_PARTS)
    if unknown:
        raise ValueError(f"claim {claim}: unknown part(s) {sorted(unknown)}; known: {CLAIM_PARTS}")
    objects = scene["objects"]
    margin = scene["image_size"] / 6
    for desc, n in claim.get("counts", []):
        if sum(_has(o, desc) for o in objects) != n:
            return False
    descs = claim.get("objects", [])
    relations = claim.get("relations", [])
    for chosen in itertools.permutations(objects, len(descs)):
        if all(_has(o, d) for o, d in zip(chosen, descs)) and all(
            _stands(chosen[i], rel, chosen[j], margin) for i, rel, j in relations
        ):
            return True
    return False


def _has(obj: dict[str, Any], desc: dict[str, str]) -> bool:
    for key, value in desc.items():
        if key not in ATTRIBUTES:
            raise ValueError(f"description {desc}: unknown attribute {key!r}; known: {ATTRIBUTES}")
        if obj[key] != value:
            return False
    return True


def _stands(a: dict[str, Any], rel: str, b: dict[str, Any], margin: float) -> bool:
    ax, ay, aw, ah = a["box"]
    bx, by, bw, bh = b["box"]
    dx = (ax + aw / 2) - (bx + bw / 2)  # > 0: a is further right
    dy = (ay + ah / 2) - (by + bh / 2)  # > 0: a is further down
    if rel == "left_of":
        return dx < -margin
    if rel == "right_of":
        return dx > margin
    if rel == "above":
        return dy < -margin
    if rel == "below":
        return dy > margin
    raise ValueError(f"unknown relation {rel!r}; known: {RELATIONS}")
