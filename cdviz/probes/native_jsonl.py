"""Generic JSONL loader: one probe item per line, for benchmarks without a dedicated loader.

    {"image": "imgs/cat.jpg", "options": ["a cat on a mat", "a mat on a cat"], "correct": 0}
    {"images": ["a.png", "b.png"], "kind": "match2x2", "options": ["c0", "c1"], "category": "swap"}
    {"image": "/data/x.jpg", "options": [...], "correct": 1, "boxes": [["cat", 10, 20, 30, 40]],
     "uid": "mine-7", "question": "Which caption fits?", "metadata": {"note": "..."}}

Fields (anything else is an error, so typos are caught; put extra data under "metadata"):
    image | images    one path, or a list of paths; relative paths resolve against the JSONL's folder
    options           list of at least two non-empty strings
    correct           index of the true option (required for kind "choice", the default)
    kind              "choice" or "match2x2"
    boxes             [[phrase, x, y, w, h], ...] or [{"phrase", "x", "y", "w", "h", "image"?}, ...]
    uid               default "{file stem}-{line number}"
    category          default the file stem
    subcategory, skill ("perception"), question, split ("test"), source ("jsonl"), metadata ({})

    load_source("jsonl", "my_probes.jsonl")
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any, Iterator

from cdviz.probes.native_common import ImageFinder, ItemStream, UidGuard, jsonl_steps, make_item, require_file, texts
from cdviz.types import DEFAULT_QUESTION, Box, ProbeError, ProbeItem

KNOWN = (
    "uid", "source", "category", "subcategory", "skill", "kind", "question",
    "image", "images", "options", "correct", "boxes", "split", "metadata",
)  # fmt: skip
STRINGS = {"uid": None, "source": "jsonl", "category": None, "subcategory": "", "skill": "perception",
           "kind": "choice", "question": DEFAULT_QUESTION, "split": "test"}  # fmt: skip
BOX_KEYS = ("phrase", "x", "y", "w", "h")


def load_jsonl(path: Path, *, check_images: bool = True) -> Iterator[ProbeItem]:
    """Read a generic JSONL probe file (format in the module docstring).

    Args:
        path: the ``.jsonl`` file.
        check_images: fail on an image file that does not exist.
    """
    file = require_file(Path(path), "a JSONL probe file")
    hint = f"fix the path (relative paths are taken from {file.parent})"
    finder = ImageFinder(file.parent, check=check_images, hint=hint)
    return ItemStream(jsonl_steps(file, partial(_item, file=file, finder=finder, guard=UidGuard())))


def _item(entry: Any, lineno: int, at: str, *, file: Path, finder: ImageFinder, guard: UidGuard) -> ProbeItem:
    if not isinstance(entry, dict):
        raise ProbeError(f"{at}: expected a JSON object, got {type(entry).__name__}; one item per line")
    unknown = sorted(set(entry) - set(KNOWN))
    if unknown:
        raise ProbeError(
            f"{at}: unknown field(s) {unknown}; known: {', '.join(KNOWN)} (put extra data under metadata)"
        )
    s = {k: _string(entry, k, default, at) for k, default in STRINGS.items()}
    if "image" in entry and "images" in entry:
        raise ProbeError(f"{at}: both 'image' and 'images' given; keep one")
    required = ("image", "options", "correct") if s["kind"] == "choice" else ("image", "options")
    missing = [k for k in required if k not in entry and not (k == "image" and "images" in entry)]
    if missing:
        raise ProbeError(
            f"{at}: missing field(s) {', '.join(repr(m) for m in missing)}; every line needs image (or images), "
            f"options and, for kind 'choice', correct"
        )
    correct = entry.get("correct", 0)
    if isinstance(correct, bool) or not isinstance(correct, int):
        raise ProbeError(f"{at}: field 'correct' must be an integer index, got {correct!r}")
    metadata = entry.get("metadata", {})
    if not isinstance(metadata, dict):
        raise ProbeError(f"{at}: field 'metadata' must be an object, got {type(metadata).__name__}")
    uid = s["uid"] or f"{file.stem}-{lineno}"
    item = make_item(
        at,
        uid=uid,
        source=s["source"],
        category=file.stem if s["category"] is None else s["category"],
        subcategory=s["subcategory"],
        skill=s["skill"],
        kind=s["kind"],
        question=s["question"],
        split=s["split"],
        images=tuple(finder.find([p], at) for p in _image_list(entry, at)),
        options=texts(entry, "options", at),
        correct=correct,
        boxes=tuple(_box(b, at) for b in _list(entry.get("boxes", []), "boxes", at)),
        metadata=metadata,
    )
    guard.add(uid, at)  # only once built: a skipped bad line does not claim its uid
    return item


def _string(entry: dict[str, Any], name: str, default: str | None, at: str) -> str | None:
    value = entry.get(name)
    if value is None:  # absent or null: the default
        return default
    if not isinstance(value, str):
        raise ProbeError(f"{at}: field {name!r} must be a string, got {value!r}")
    return value


def _list(value: Any, name: str, at: str) -> list[Any]:
    if not isinstance(value, list):
        raise ProbeError(f"{at}: field {name!r} must be a list, got {type(value).__name__}")
    return value


def _image_list(entry: dict[str, Any], at: str) -> list[str]:
    images = [entry["image"]] if "image" in entry else _list(entry["images"], "images", at)
    if not images or not all(isinstance(p, str) and p.strip() for p in images):
        raise ProbeError(f"{at}: image paths must be non-empty strings, got {images!r}")
    return images


def _box(b: Any, at: str) -> Box:
    if isinstance(b, list) and len(b) == 5:
        phrase, x, y, w, h = b
        image = 0
    elif isinstance(b, dict) and all(k in b for k in BOX_KEYS) and set(b) <= {*BOX_KEYS, "image"}:
        phrase, x, y, w, h = (b[k] for k in BOX_KEYS)
        image = b.get("image", 0)
    else:
        raise ProbeError(f"{at}: box {b!r} must be [phrase, x, y, w, h] or {{phrase, x, y, w, h, image?}}")
    numbers = (x, y, w, h, image)
    if not isinstance(phrase, str) or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in numbers):
        raise ProbeError(f"{at}: box {b!r} needs a string phrase and numeric x, y, w, h")
    if not isinstance(image, int):
        raise ProbeError(f"{at}: box {b!r}: image must be an integer index")
    return Box(phrase, x, y, w, h, image)
