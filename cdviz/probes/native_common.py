"""Shared plumbing for the native-format loaders: reading files, checking fields, finding images.

Every failure is a ProbeError whose message starts with a location (``FILE:LINE``,
``FILE [key '3']`` or ``FILE [item 3]``) and ends with the fix.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator, Sequence

from cdviz.types import ProbeError, ProbeItem


def where(path: Path, *, line: int | None = None, key: str | None = None, index: int | None = None) -> str:
    """The location prefix of an error message."""
    if line is not None:
        return f"{path}:{line}"
    if key is not None:
        return f"{path} [key {key!r}]"
    if index is not None:
        return f"{path} [item {index}]"
    return str(path)


def absolute(path: str | os.PathLike) -> Path:
    # abspath, not resolve: image files in a Hugging Face cache are symlinks to hash-named blobs,
    # and following them would lose the file name and extension.
    return Path(os.path.abspath(os.path.expanduser(path)))


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise ProbeError(f"{path}: file not found; pass the path to {what}")
    return path


def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise ProbeError(f"{path}: not a directory; pass the folder holding {what}")
    return path


def read_json(path: Path) -> Any:
    """Parse a whole JSON file; a syntax error names the file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ProbeError(f"{path}: not UTF-8 text ({e.reason}); restore the file from the benchmark release") from e
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ProbeError(
            f"{path}:{e.lineno}: malformed JSON ({e.msg} at column {e.colno}); fix the file or restore it from "
            f"the benchmark release"
        ) from e


def read_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    """Yield ``(line number, parsed object)`` for each non-blank line."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as e:
                raise ProbeError(
                    f"{path}:{lineno}: malformed JSON ({e.msg} at column {e.colno}); fix or delete the line"
                ) from e


def fields(entry: Any, at: str, required: Sequence[str], source: str) -> dict[str, Any]:
    """Check that ``entry`` is an object holding every ``required`` field, and return it."""
    if not isinstance(entry, dict):
        raise ProbeError(
            f"{at}: expected an object with fields {', '.join(required)}, got {type(entry).__name__}; "
            f"is this a {source} file?"
        )
    missing = [name for name in required if name not in entry]
    if missing:
        raise ProbeError(
            f"{at}: missing field(s) {', '.join(repr(m) for m in missing)}; every {source} entry needs "
            f"{', '.join(required)} (is this the right file for source {source!r}?)"
        )
    return entry


def text(entry: dict[str, Any], name: str, at: str) -> str:
    """A non-empty string field, stripped: some SugarCrepe++ captions end in a newline, which would
    otherwise leak into prompts."""
    value = entry[name]
    if not isinstance(value, str) or not value.strip():
        raise ProbeError(f"{at}: field {name!r} must be a non-empty string, got {value!r}; fix the entry")
    return value.strip()


def number(entry: dict[str, Any], name: str, at: str) -> float:
    value = entry[name]
    # bool is an int subclass; a true/false coordinate is a corrupted file, not 1 or 0.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ProbeError(f"{at}: field {name!r} must be a number, got {value!r}; fix the entry")
    return value


def texts(entry: dict[str, Any], name: str, at: str, min_len: int = 2) -> tuple[str, ...]:
    value = entry[name]
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ProbeError(f"{at}: field {name!r} must be a list of non-empty strings, got {value!r}; fix the entry")
    if len(value) < min_len:
        raise ProbeError(f"{at}: field {name!r} has {len(value)} option(s); an item needs at least {min_len}")
    return tuple(v.strip() for v in value)


def make_item(at: str, **kwargs: Any) -> ProbeItem:
    """Build a ProbeItem; its own validation errors get the file location prepended."""
    try:
        return ProbeItem(**kwargs)
    except ProbeError as e:
        raise ProbeError(f"{at}: {e}") from e


class UidGuard:
    """Remembers where each uid came from, so a duplicate names both places."""

    def __init__(self) -> None:
        self._seen: dict[str, str] = {}

    def add(self, uid: str, at: str) -> None:
        if uid in self._seen:
            raise ProbeError(f"{at}: duplicate uid {uid!r} (first at {self._seen[uid]}); ids must be unique")
        self._seen[uid] = at


class ImageFinder:
    """Turns relative image names into absolute paths inside the user's copy.

    ``candidates`` lists the relative names to try, best first. With ``check`` the first
    existing one wins and none existing is an error; without it the first is taken unchecked
    (no file-system access beyond the one ``abspath`` of the folder).
    """

    def __init__(self, root: Path, *, check: bool, option: str = "images_dir") -> None:
        self.root = absolute(root)
        self.check = check
        self.option = option
        self._found: set[str] = set()  # benchmarks reuse images; stat each file once

    def find(self, candidates: Sequence[str], at: str) -> str:
        paths = [str(self.root / c) for c in candidates]
        if not self.check:
            return paths[0]
        for p in paths:
            if p in self._found or os.path.isfile(p):
                self._found.add(p)
                return p
        tried = " or ".join(paths)
        raise ProbeError(
            f"{at}: image {tried} not found; pass {self.option}= the folder that holds it, restore the file, "
            f"or pass check_images=False to skip this check"
        )
