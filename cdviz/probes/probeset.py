"""A probe set on disk: ``DIR/probeset.json`` (metadata), ``DIR/items.jsonl`` (one ProbeItem
per line) and usually ``DIR/images/``. Relative image paths resolve against DIR; absolute paths
point into a user's local copy of a benchmark, which is never copied.

    save_probeset(items, DIR, name=...)  ->  load_probeset(DIR)  round-trips exactly.

A relative image path must stay inside DIR: "../x.png" (or "a/../../x.png") is refused, so a probe
set cannot make cdviz read files beside it.
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
    """Write ``items`` as a probe set under ``root`` (images must already be in place)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    seen: set[str] = set()
    n = 0
    with atomic_path(root / "items.jsonl") as tmp, open(tmp, "w", encoding="utf-8") as f:
        for item in items:
            if item.uid in seen:
                raise ProbeError(f"probe item {item.uid!r}: duplicate uid; every uid in a probe set must be unique")
            seen.add(item.uid)
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
                        raise ProbeError(f"{where}: {e}") from e
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


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ProbeError(f"{path}:{e.lineno}: malformed JSON ({e.msg}); fix the file") from e
