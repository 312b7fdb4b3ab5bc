"""A probe set on disk: ``DIR/probeset.json`` (metadata), ``DIR/items.jsonl`` (one ProbeItem
per line) and usually ``DIR/images/``. Relative image paths resolve against DIR; absolute paths
point into a user's local copy of a benchmark, which is never copied.

    save_probeset(items, DIR, name=...)  ->  load_probeset(DIR)  round-trips exactly.

Image paths stay inside: a relative path must not leave DIR ("../x.png", "a/../../x.png"), and an
absolute one must lie in DIR or in a folder probeset.json lists under ``image_roots``, which
`save_probeset` (and so `cdviz probes import`) fills with the folders of the images it was given.
An item added or edited later cannot make cdviz read a file elsewhere; the check is lexical, as a
Hugging Face cache holds images as links to blobs outside their folder. probeset.json is part of
the probe set: a set crafted to list "/" is trusted as far as its own items are (the dashboard
keeps its own allow-list).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from cdviz import __version__
from cdviz.io import atomic_path, write_json_atomic
from cdviz.types import ProbeError, ProbeItem

FORMAT = "cdviz-probeset"
FORMAT_VERSION = 1


@dataclass
class Skip:
    """An item left out, and why (recorded, never silent)."""

    where: str
    reason: str
    # The item itself when the line parsed but its image is missing: `cdviz record --skip-bad` then
    # keeps a "skipped" row for it in the run's index (not saved in probeset.json).
    item: ProbeItem | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict[str, str]:
        return {"where": self.where, "reason": self.reason}


@dataclass
class ProbeSet:
    root: Path
    items: list[ProbeItem]
    meta: dict[str, Any] = field(default_factory=dict)
    skipped: list[Skip] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[ProbeItem]:
        return iter(self.items)

    def image_path(self, item: ProbeItem, index: int = 0) -> Path:
        return resolve_image(self.root, item, index)

    def counts(self) -> dict[str, Counter]:
        return {
            "category": Counter(i.category for i in self.items),
            "skill": Counter(i.skill for i in self.items),
            "split": Counter(i.split for i in self.items),
            "source": Counter(i.source for i in self.items),
        }

    def by_uid(self) -> dict[str, ProbeItem]:
        return {i.uid: i for i in self.items}


def save_probeset(
    items: Iterable[ProbeItem],
    root: str | Path,
    *,
    name: str,
    params: dict[str, Any] | None = None,
    skipped: Iterable[Skip] = (),
) -> Path:
    """Write ``items`` as a probe set under ``root`` (images must already be in place); the folders of
    absolute image paths outside ``root`` become its ``image_roots``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    seen: set[str] = set()
    n = 0
    outside: set[str] = set()
    with atomic_path(root / "items.jsonl") as tmp, open(tmp, "w", encoding="utf-8") as f:
        for item in items:
            if item.uid in seen:
                raise ProbeError(f"probe item {item.uid!r}: duplicate uid; every uid in a probe set must be unique")
            seen.add(item.uid)
            for k in range(len(item.images)):
                path = _lexical(resolve_image(root, item, k))
                if not _inside(path, [_lexical(root)]):
                    outside.add(os.path.dirname(path))
            f.write(item.to_json() + "\n")
            n += 1
    skipped = [s.to_dict() for s in skipped]
    write_json_atomic(
        root / "probeset.json",
        {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "name": name,
            "n_items": n,
            "cdviz_version": __version__,
            "params": params or {},
            "skipped": skipped,
            "image_roots": _outermost(outside),
        },
    )
    return root


def load_probeset(root: str | Path, *, check_images: bool = True, skip_bad: bool = False) -> ProbeSet:
    """Read a probe set; malformed lines raise ProbeError naming file and line (or are skipped)."""
    root = Path(root)
    meta_path, items_path = root / "probeset.json", root / "items.jsonl"
    if not items_path.is_file():
        raise ProbeError(
            f"{root}: no items.jsonl; make a probe set with `cdviz probes make shapes --out {root}` "
            f"or `cdviz probes import SOURCE PATH --out {root}`"
        )
    meta: dict[str, Any] = {}
    if meta_path.is_file():
        meta = _read_json(meta_path)
        if meta.get("format") != FORMAT or meta.get("version", 0) > FORMAT_VERSION:
            raise ProbeError(
                f"{meta_path}: format {meta.get('format')!r} v{meta.get('version')} is not a probe set this "
                f"cdviz ({__version__}) reads; regenerate it or upgrade cdviz"
            )
    roots = [_lexical(root), *(_lexical(Path(r)) for r in meta.get("image_roots", []) if isinstance(r, str) and r)]
    items: list[ProbeItem] = []
    skipped = [Skip(**s) for s in meta.get("skipped", [])]
    seen: set[str] = set()
    with open(items_path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{items_path}:{lineno}"
            parsed = None  # set when the line is a valid item whose image is missing
            try:
                try:
                    d = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ProbeError(f"{where}: malformed JSON ({e.msg} at column {e.colno}); fix or delete the line") from e
                if not isinstance(d, dict):
                    raise ProbeError(f"{where}: a {type(d).__name__} ({line.strip()[:40]!r}), not an item; every line "
                                     "must be a JSON object with uid, source, category, images, options")
                try:
                    item = ProbeItem.from_dict(d)
                except (TypeError, ValueError, AttributeError) as e:
                    if isinstance(e, ProbeError):
                        raise ProbeError(f"{where}: {e}") from e
                    raise ProbeError(f"{where}: {e}; every item needs uid, source, category, images, options") from e
                except ProbeError as e:
                    raise ProbeError(f"{where}: {e}") from e
                if item.uid in seen:
                    raise ProbeError(f"{where}: duplicate uid {item.uid!r}; uids must be unique")
                paths = []
                for k in range(len(item.images)):
                    try:
                        paths.append(resolve_image(root, item, k))
                    except ProbeError as e:
                        parsed = item
                        raise ProbeError(f"{where}: {e}") from e
                    if not _inside(_lexical(paths[-1]), roots):
                        parsed = item
                        raise ProbeError(
                            f"{where}: probe item {item.uid!r}: image {item.images[k]!r} lies outside the probe set "
                            f"folder {root} and the image folders its probeset.json lists; copy the image into "
                            f"{root}, import the benchmark with `cdviz probes import ... --images-dir DIR` (which "
                            "lists DIR), or pass --skip-bad to record the item as a skip")
                if check_images:
                    for p in paths:
                        if not p.is_file():
                            parsed = item
                            raise ProbeError(
                                f"{where}: probe item {item.uid!r}: image {p} not found; restore the file, fix the "
                                f"path, or pass --skip-bad to leave the item out"
                            )
            except ProbeError as e:
                if not skip_bad:
                    raise
                skipped.append(Skip(where=where, reason=str(e), item=parsed))
                continue
            seen.add(item.uid)
            items.append(item)
    return ProbeSet(root=root, items=items, meta=meta, skipped=skipped)


def resolve_image(root: Path, item: ProbeItem, index: int = 0) -> Path:
    """The path of ``item``'s image ``index``: absolute as given, relative under ``root``; ProbeError
    when a relative path leaves ``root`` (``..``)."""
    raw = item.images[index]
    if not isinstance(raw, str) or not raw:
        raise ProbeError(f"probe item {item.uid!r}: image {index} is {raw!r}; give a file path")
    p = Path(raw)
    if p.is_absolute():
        return p
    if os.path.normpath(p).split(os.sep)[0] == os.pardir:
        raise ProbeError(f"probe item {item.uid!r}: image path {raw!r} leaves the probe set folder {root}; "
                         "give a path inside it, or an absolute path to the benchmark's own copy")
    return Path(root) / p


def _lexical(path: Path) -> str:
    # abspath, not resolve: a Hugging Face cache holds images as links to blobs elsewhere.
    return os.path.abspath(os.path.expanduser(path))


def _inside(path: str, roots: list[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip(os.sep) + os.sep) for r in roots)


def _outermost(folders: set[str]) -> list[str]:
    """The folders none of whose ancestors is also listed, sorted."""
    kept: list[str] = []
    for f in sorted(folders):  # an ancestor sorts before its descendants
        if not _inside(f, kept):
            kept.append(f)
    return kept


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ProbeError(f"{path}:{e.lineno}: malformed JSON ({e.msg}); fix the file") from e
