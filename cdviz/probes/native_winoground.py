"""Winoground loader: 400 two-image, two-caption items (caption i describes image i).

    WINOGROUND/                  the data/ folder of facebook/winoground, images.zip unpacked
      examples.jsonl             {"id": 0, "image_0": "ex_0_img_0", "image_1": "ex_0_img_1",
                                  "caption_0": ..., "caption_1": ..., "tag": "Noun", "secondary_tag": "",
                                  "num_main_preds": 1, "collapsed_tag": "Object"}
      images/ex_0_img_0.png      image_0 / image_1 are stems; .png is tried first, then .jpg

    load_source("winoground", "WINOGROUND")
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Iterator

from typing import Any

from cdviz.probes.native_common import (
    ImageFinder,
    ItemStream,
    UidGuard,
    fields,
    jsonl_steps,
    make_item,
    require_file,
    text,
)
from cdviz.types import ProbeError, ProbeItem

IMAGE_EXTS = (".png", ".jpg")  # the release has .png; some re-packagings re-encode to .jpg
REQUIRED = ("id", "image_0", "image_1", "caption_0", "caption_1", "tag", "collapsed_tag")
EXTRA = ("secondary_tag", "num_main_preds")  # copied into metadata when present


def load_winoground(
    path: Path, *, images_dir: str | Path | None = None, check_images: bool = True
) -> Iterator[ProbeItem]:
    """Winoground as ``match2x2`` items.

    Args:
        path: the folder holding ``examples.jsonl`` (or that file itself).
        images_dir: the image folder; default ``images/`` next to ``examples.jsonl``.
        check_images: fail on a missing image; without it, ``.png`` is assumed unchecked.

    uid ``winoground-{id}``, images (image_0, image_1), options (caption_0, caption_1),
    category = collapsed_tag as written (Object / Relation / Both), subcategory = tag,
    metadata = secondary_tag and num_main_preds, skill "perception".
    """
    path = Path(path)
    file = path / "examples.jsonl" if path.is_dir() else path
    require_file(file, "Winoground's examples.jsonl (or the folder holding it)")
    images = Path(images_dir) if images_dir is not None else file.parent / "images"
    if check_images and not images.is_dir():
        raise ProbeError(f"{images}: image folder not found; unpack images.zip there or pass images_dir=")
    build = partial(_item, finder=ImageFinder(images, check=check_images), guard=UidGuard())
    return ItemStream(jsonl_steps(file, build))


def _item(entry: Any, lineno: int, at: str, *, finder: ImageFinder, guard: UidGuard) -> ProbeItem:
    fields(entry, at, REQUIRED, "winoground")
    ex_id = entry["id"]
    if isinstance(ex_id, bool) or not isinstance(ex_id, (int, str)):
        raise ProbeError(f"{at}: field 'id' must be an integer or string, got {ex_id!r}; fix the line")
    item = make_item(
        at,
        uid=f"winoground-{ex_id}",
        source="winoground",
        category=text(entry, "collapsed_tag", at),
        subcategory=text(entry, "tag", at),
        kind="match2x2",
        images=tuple(finder.find(_names(text(entry, f"image_{k}", at)), at) for k in (0, 1)),
        options=(text(entry, "caption_0", at), text(entry, "caption_1", at)),
        correct=0,
        skill="perception",
        metadata={k: entry[k] for k in EXTRA if k in entry},
    )
    guard.add(item.uid, at)  # only once built: a skipped bad line does not claim its uid
    return item


def _names(stem: str) -> list[str]:
    if Path(stem).suffix.lower() in (*IMAGE_EXTS, ".jpeg"):
        return [stem]
    return [stem + ext for ext in IMAGE_EXTS]
