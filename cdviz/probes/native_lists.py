"""Loaders for benchmarks stored as one JSON list of single-image records: ARO's Visual Genome
Relation / Attribution and What'sUp's controlled images.

    ARO/                                   (mertyg/vision-language-models-are-bows layout)
      visual_genome_relation.json          [{"image_path": "2316480.jpg", "bbox_x": .., "bbox_y": .., "bbox_w": ..,
                                             "bbox_h": .., "true_caption": .., "false_caption": ..,
                                             "relation_name": "wearing"}, ...]
      visual_genome_attribution.json       same, with "attributes": ["white", "black"] instead of relation_name
      images/2316480.jpg
    WHATSUP/data/                          (amitakamath/whatsup_vlms layout)
      controlled_images_dataset.json       [{"image_path": "data/controlled_images/mug_on_table.jpeg",
                                             "caption_options": [4 captions, the first true]}, ...]
      controlled_clevr_dataset.json        subset B, images under data/controlled_clevr/
      controlled_images/mug_on_table.jpeg

    load_source("aro_vg_relation", "ARO/visual_genome_relation.json")
    load_source("whatsup", "WHATSUP/data/controlled_images_dataset.json")
"""

from __future__ import annotations

from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterator

from cdviz.probes.native_common import (
    ImageFinder,
    ItemStream,
    Step,
    fail,
    fields,
    make_item,
    number,
    read_json,
    require_file,
    text,
    texts,
    where,
)
from cdviz.types import Box, ProbeError, ProbeItem

ARO_FIELDS = ("image_path", "bbox_x", "bbox_y", "bbox_w", "bbox_h", "true_caption", "false_caption")
WHATSUP_SUBSETS = {"controlled_images_dataset": "controlled_a", "controlled_clevr_dataset": "controlled_b"}


def load_aro_vg_relation(
    path: Path, *, images_dir: str | Path | None = None, check_images: bool = True
) -> Iterator[ProbeItem]:
    """ARO VG-Relation: uid ``aro-vgr-{index}``, category "vg_relation", subcategory = relation_name.

    See ``load_aro_vg_attribution`` for the item layout and options.
    """
    return _aro(Path(path), images_dir, check_images, relation=True)


def load_aro_vg_attribution(
    path: Path, *, images_dir: str | Path | None = None, check_images: bool = True
) -> Iterator[ProbeItem]:
    """ARO VG-Attribution: uid ``aro-vga-{index}``, category "vg_attribution", subcategory = the two
    attributes joined by a space (e.g. "white black").

    Each record is a two-choice item ``options = (true_caption, false_caption)``, correct 0, with
    one Box named "region": the bbox_* rectangle, which spans the objects the captions name. The
    official protocol crops the image to that box before scoring; items keep the full image and
    say so with ``metadata["crop_to_box"] = True`` so an evaluator can follow the protocol.

    Args:
        path: the JSON file.
        images_dir: the folder ``image_path`` is relative to; default ``images/`` next to the JSON.
        check_images: fail on a missing image.
    """
    return _aro(Path(path), images_dir, check_images, relation=False)


def load_whatsup(
    path: Path, *, images_dir: str | Path | None = None, check_images: bool = True
) -> Iterator[ProbeItem]:
    """What'sUp controlled images: four captions per image, the first true.

    uid ``whatsup-{subset}-{index}``, category "whatsup", subcategory "controlled_a" for
    controlled_images_dataset.json, "controlled_b" for controlled_clevr_dataset.json (another
    file name gives its stem).

    Args:
        path: the JSON file.
        images_dir: default the JSON's folder. The release writes image_path relative to the
            repository root ("data/controlled_images/x.jpeg") while the JSON sits in data/, so
            each image is looked up as images_dir/image_path, then without its first folder
            (images_dir/controlled_images/x.jpeg), then by file name alone (images_dir/x.jpeg);
            the first that exists wins.
        check_images: fail when none exists; without it the first candidate is taken unchecked.
    """
    file = require_file(Path(path), "What'sUp's controlled_images_dataset.json or controlled_clevr_dataset.json")
    subset = WHATSUP_SUBSETS.get(file.stem, file.stem)
    finder = ImageFinder(_images_root(file, images_dir, file.parent, check_images), check=check_images)
    return ItemStream(_list_steps(file, "whatsup", partial(_whatsup_item, subset=subset, finder=finder)))


def _aro(file: Path, images_dir: str | Path | None, check: bool, *, relation: bool) -> Iterator[ProbeItem]:
    name = "visual_genome_relation.json" if relation else "visual_genome_attribution.json"
    require_file(file, f"ARO's {name}")
    finder = ImageFinder(_images_root(file, images_dir, file.parent / "images", check), check=check)
    source = "aro_vg_relation" if relation else "aro_vg_attribution"
    return ItemStream(_list_steps(file, source, partial(_aro_item, relation=relation, finder=finder)))


def _aro_item(entry: Any, index: int, at: str, *, relation: bool, finder: ImageFinder) -> ProbeItem:
    if relation:
        source, prefix, category, extra = "aro_vg_relation", "aro-vgr", "vg_relation", "relation_name"
    else:
        source, prefix, category, extra = "aro_vg_attribution", "aro-vga", "vg_attribution", "attributes"
    fields(entry, at, (*ARO_FIELDS, extra), source)
    if relation:
        subcategory = text(entry, "relation_name", at)
    else:
        subcategory = " ".join(texts(entry, "attributes", at, min_len=1))
    region = Box("region", *(number(entry, f"bbox_{k}", at) for k in "xywh"))
    return make_item(
        at,
        uid=f"{prefix}-{index}",
        source=source,
        category=category,
        subcategory=subcategory,
        images=(finder.find([text(entry, "image_path", at)], at),),
        options=(text(entry, "true_caption", at), text(entry, "false_caption", at)),
        correct=0,
        skill="perception",
        boxes=(region,),
        metadata={"crop_to_box": True},
    )


def _whatsup_item(entry: Any, index: int, at: str, *, subset: str, finder: ImageFinder) -> ProbeItem:
    fields(entry, at, ("image_path", "caption_options"), "whatsup")
    return make_item(
        at,
        uid=f"whatsup-{subset}-{index}",
        source="whatsup",
        category="whatsup",
        subcategory=subset,
        images=(finder.find(_whatsup_candidates(text(entry, "image_path", at)), at),),
        options=texts(entry, "caption_options", at),
        correct=0,
        skill="perception",
    )


def _whatsup_candidates(image_path: str) -> list[str]:
    """image_path as written, then without its first folder, then the bare file name (see load_whatsup)."""
    rel = PurePosixPath(image_path)
    names = [image_path, str(PurePosixPath(*rel.parts[1:])) if len(rel.parts) > 1 else "", rel.name]
    return list(dict.fromkeys(n for n in names if n))


def _list_steps(file: Path, source: str, build: Callable[[Any, int, str], ProbeItem]) -> Iterator[Step]:
    """One step per record of a JSON list: ``build(record, index, location)``."""
    try:
        data = read_json(file)
    except ProbeError as e:
        yield fail(e)
        return
    if not isinstance(data, list):
        kind = type(data).__name__
        yield fail(ProbeError(f"{file}: expected a JSON list of {source} records, got {kind}; is this the right file?"))
        return
    for index, entry in enumerate(data):
        yield partial(build, entry, index, where(file, index=index))


def _images_root(file: Path, images_dir: str | Path | None, default: Path, check: bool) -> Path:
    root = Path(images_dir) if images_dir is not None else default
    if check and not root.is_dir():
        raise ProbeError(
            f"{root}: image folder not found (for {file.name}); unpack the images there or pass images_dir="
        )
    return root
