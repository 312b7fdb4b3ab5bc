"""Shared plumbing for the native-format loaders: the item stream they return, reading files,
checking fields, finding images.

Every failure is a ProbeError whose message starts with a location (``FILE:LINE``,
``FILE (key '3')`` or ``FILE (item 3)``) and ends with the fix.
"""

from __future__ import annotations

import json
import os
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from cdviz.types import ProbeError, ProbeItem

# Builds one entry's item (or items, e.g. a SugarCrepe++ pair), or raises the ProbeError that stops it.
Step = Callable[[], "ProbeItem | tuple[ProbeItem, ...]"]


class ItemStream(Iterator[ProbeItem]):
    """The iterator every loader returns: items built lazily, one step per entry.

    A ProbeError raised by ``next()`` concerns one entry (or one unreadable file), and the next
    ``next()`` carries on after it. Loaders never skip; a caller that wants to (``cdviz probes
    import --skip-bad``) records the error and calls ``next()`` again. A plain generator could not
    offer that: once it raises it is finished and the rest of the benchmark would be lost.
    """

    def __init__(self, steps: Iterator[Step]) -> None:
        self._steps = steps  # a generator that never raises ProbeError itself
        self._pending: list[ProbeItem] = []  # the rest of a multi-item entry, in reverse

    def __next__(self) -> ProbeItem:
        if self._pending:
            return self._pending.pop()
        built = next(self._steps)()
        if isinstance(built, ProbeItem):
            return built
        self._pending = list(reversed(built[1:]))
        return built[0]


def fail(error: ProbeError) -> Step:
    """A step that raises ``error``: how a steps generator reports a bad file and moves on."""

    def step() -> ProbeItem:
        raise error

    return step


def where(path: Path, *, line: int | None = None, key: str | None = None, index: int | None = None) -> str:
    """The location prefix of an error message."""
    if line is not None:
        return f"{path}:{line}"
    if key is not None:
        return f"{path} (key {key!r})"
    if index is not None:
        return f"{path} (item {index})"
    return str(path)


def absolute(path: str | os.PathLike) -> Path:
    # abspath, not resolve: image files in a Hugging Face cache are symlinks to hash-named blobs,
    # and following them would lose the file name and extension.
    return Path(os.path.abspath(os.path.expanduser(path)))


def require_file(path: Path, what: str) -> Path:
    if path.is_dir():
        raise ProbeError(f"{path}: is a folder, not a file; pass the path to {what}")
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
    except OSError as e:
        raise ProbeError(f"{path}: cannot read ({e.strerror}); check the path and its permissions") from e
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ProbeError(
            f"{path}:{e.lineno}: malformed JSON ({e.msg} at column {e.colno}); fix the file or restore it from "
            f"the benchmark release"
        ) from e


def jsonl_steps(path: Path, build: Callable[[Any, int, str], ProbeItem]) -> Iterator[Step]:
    """One step per non-blank line: parse it, then ``build(row, line number, location)``."""
    lineno = 0
    try:
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if line.strip():
                    at = where(path, line=lineno)
                    yield partial(_build_line, build, line, lineno, at)
    except UnicodeDecodeError as e:
        yield fail(ProbeError(f"{path}:{lineno + 1}: not UTF-8 text ({e.reason}); fix the file's encoding"))
    except OSError as e:
        yield fail(ProbeError(f"{path}: cannot read ({e.strerror}); check the path and its permissions"))


def _build_line(build: Callable[[Any, int, str], ProbeItem], line: str, lineno: int, at: str) -> ProbeItem:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        raise ProbeError(f"{at}: malformed JSON ({e.msg} at column {e.colno}); fix or delete the line") from e
    return build(row, lineno, at)


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

    ``candidates`` lists the relative names to try, best first (an absolute name stays as is).
    With ``check`` the first existing one wins and none existing is an error whose fix is
    ``hint``; without it the first is taken unchecked, touching no file.
    """

    def __init__(self, root: Path, *, check: bool, hint: str = "pass images_dir= the folder that holds it") -> None:
        self.root = str(absolute(root))
        self.check = check
        self.hint = hint
        self._found: set[str] = set()  # benchmarks reuse images; stat each file once

    def find(self, candidates: Sequence[str], at: str) -> str:
        paths = [os.path.normpath(os.path.join(self.root, c)) for c in candidates]
        if not self.check:
            return paths[0]
        for p in paths:
            if p in self._found or os.path.isfile(p):
                self._found.add(p)
                return p
        raise ProbeError(
            f"{at}: image {' or '.join(paths)} not found; {self.hint}, restore the file, or pass "
            f"check_images=False to skip this check"
        )
