"""SugarCrepe and SugarCrepe++ loaders: caption pairs over COCO val2017 images, optionally
joined with the COCO instance boxes.

    SUGARCREPE/                 the JSON files of RAIVNLab/sugar-crepe data/, one per subset:
      add_obj.json              {"0": {"filename": "000000544519.jpg", "caption": ..., "negative_caption": ...}, ...}
      ...                       add_att, replace_obj, replace_att, replace_rel, swap_obj, swap_att
      val2017/ (or images/)     the COCO val2017 images, unless images_dir= says where they are
    SUGARCREPE_PP/              the JSON lists of Sri-Harsha/scpp data/ (no add_* subsets):
      replace_att.json          [{"id": 0, "filename": ..., "caption": ..., "caption2": ..., "negative_caption": ...}]

    load_source("sugarcrepe", "SUGARCREPE", images_dir="coco/val2017",
                coco_annotations="coco/annotations/instances_val2017.json")
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Iterable, Iterator

from cdviz.probes.native_common import (
    ImageFinder,
    ItemStream,
    Step,
    UidGuard,
    fail,
    fields,
    make_item,
    read_json,
    require_dir,
    require_file,
    text,
    where,
)
from cdviz.types import Box, ProbeError, ProbeItem

SUGARCREPE_SUBSETS = ("add_obj", "add_att", "replace_obj", "replace_att", "replace_rel", "swap_obj", "swap_att")
SUGARCREPE_PP_SUBSETS = ("replace_obj", "replace_att", "replace_rel", "swap_obj", "swap_att")
IMAGE_SUBDIRS = ("val2017", "images")  # where images_dir defaults to, first existing wins


def load_sugarcrepe(
    path: Path,
    *,
    images_dir: str | Path | None = None,
    coco_annotations: str | Path | None = None,
    subsets: Iterable[str] | str | None = None,
    check_images: bool = True,
) -> Iterator[ProbeItem]:
    """SugarCrepe: one two-choice item per entry, ``options = (caption, negative_caption)``, correct 0.

    Args:
        path: the folder holding the subset JSON files; only the subsets present are read.
        images_dir: the COCO val2017 image folder; default ``path/val2017``, else ``path/images``.
        coco_annotations: ``instances_val2017.json``; when given, every COCO instance box of the
            image becomes a Box named by its category (crowd regions included, zero-size boxes
            dropped), and ``metadata["coco_image_id"]`` is set.
        subsets: names to read (a list, or one comma-separated string); each must be present.
        check_images: fail on an image file that does not exist.

    uid ``sugarcrepe-{subset}-{key}``, category = subset, skill "perception".
    """
    root = require_dir(Path(path), "the SugarCrepe JSON files (add_obj.json, ...)")
    files = _subset_files(root, SUGARCREPE_SUBSETS, subsets, "sugarcrepe")
    finder = ImageFinder(_images_dir(root, images_dir, check_images), check=check_images)
    coco = _coco_path(coco_annotations)
    return ItemStream(_steps(files, finder, coco, pp=False))


def load_sugarcrepe_pp(
    path: Path,
    *,
    images_dir: str | Path | None = None,
    coco_annotations: str | Path | None = None,
    subsets: Iterable[str] | str | None = None,
    check_images: bool = True,
) -> Iterator[ProbeItem]:
    """SugarCrepe++: two two-choice items per entry, one per positive caption.

    The benchmark's image-to-text protocol counts an entry right when *both* positives beat the
    negative. A two-choice item holds one positive, so each entry becomes

        {pair_id}-p1: options (caption,  negative_caption), subcategory "p1"
        {pair_id}-p2: options (caption2, negative_caption), subcategory "p2"

    with ``pair_id = f"sugarcrepe_pp-{subset}-{id}"`` in ``metadata["pair_id"]`` (and the field
    name in ``metadata["positive"]``): an evaluator gets the official score by requiring both
    items of a pair right, and the paper's P1-Neg / P2-Neg accuracies per subcategory.
    Options as for ``load_sugarcrepe``.
    """
    root = require_dir(Path(path), "the SugarCrepe++ JSON files (replace_obj.json, ...)")
    files = _subset_files(root, SUGARCREPE_PP_SUBSETS, subsets, "sugarcrepe_pp")
    finder = ImageFinder(_images_dir(root, images_dir, check_images), check=check_images)
    coco = _coco_path(coco_annotations)
    return ItemStream(_steps(files, finder, coco, pp=True))


def _steps(
    files: list[tuple[str, Path]], finder: ImageFinder, coco_path: Path | None, *, pp: bool
) -> Iterator[Step]:
    """One step per entry of each subset file (SugarCrepe: a dict by key; SugarCrepe++: a list)."""
    try:
        coco = CocoBoxes.load(coco_path) if coco_path else None
    except ProbeError as e:
        yield fail(e)  # every item needs the join the caller asked for
        return
    for subset, file in files:
        try:
            data = read_json(file)
        except ProbeError as e:
            yield fail(e)
            continue
        if pp and isinstance(data, list):
            guard = UidGuard()
            for index, entry in enumerate(data):
                yield partial(_sugarcrepe_pp_pair, subset, entry, where(file, index=index), finder, coco, guard)
        elif not pp and isinstance(data, dict):
            for key, entry in data.items():
                yield partial(_sugarcrepe_item, subset, key, entry, where(file, key=key), finder, coco)
        else:
            yield fail(ProbeError(_layout_error(file, data, pp)))


def _layout_error(file: Path, data: Any, pp: bool) -> str:
    # The two benchmarks share file names, so the likeliest mistake is picking the other source.
    if pp:
        hint = " (an object keyed by number is the SugarCrepe layout: use source 'sugarcrepe')"
        return f"{file}: expected a list of SugarCrepe++ entries" + (hint if isinstance(data, dict) else "")
    hint = " (a list is the SugarCrepe++ layout: use source 'sugarcrepe_pp')"
    return f"{file}: expected an object of SugarCrepe entries keyed by number" + (
        hint if isinstance(data, list) else ""
    )


def _sugarcrepe_item(
    subset: str, key: str, entry: Any, at: str, finder: ImageFinder, coco: CocoBoxes | None
) -> ProbeItem:
    fields(entry, at, ("filename", "caption", "negative_caption"), "sugarcrepe")
    filename = text(entry, "filename", at)
    boxes, meta = _join(coco, filename, at)
    return make_item(
        at,
        uid=f"sugarcrepe-{subset}-{key}",
        source="sugarcrepe",
        category=subset,
        images=(finder.find([filename], at),),
        options=(text(entry, "caption", at), text(entry, "negative_caption", at)),
        correct=0,
        skill="perception",
        boxes=boxes,
        metadata=meta,
    )


def _sugarcrepe_pp_pair(
    subset: str, entry: Any, at: str, finder: ImageFinder, coco: CocoBoxes | None, guard: UidGuard
) -> tuple[ProbeItem, ProbeItem]:
    fields(entry, at, ("id", "filename", "caption", "caption2", "negative_caption"), "sugarcrepe_pp")
    entry_id = entry["id"]
    if isinstance(entry_id, bool) or not isinstance(entry_id, (int, str)):
        raise ProbeError(f"{at}: field 'id' must be an integer or string, got {entry_id!r}; fix the entry")
    pair_id = f"sugarcrepe_pp-{subset}-{entry_id}"
    filename = text(entry, "filename", at)
    image = finder.find([filename], at)
    boxes, coco_meta = _join(coco, filename, at)
    negative = text(entry, "negative_caption", at)
    p1, p2 = (
        make_item(
            at,
            uid=f"{pair_id}-{tag}",
            source="sugarcrepe_pp",
            category=subset,
            subcategory=tag,
            images=(image,),
            options=(text(entry, positive, at), negative),
            correct=0,
            skill="perception",
            boxes=boxes,
            metadata={"pair_id": pair_id, "positive": positive, **coco_meta},
        )
        for positive, tag in (("caption", "p1"), ("caption2", "p2"))
    )
    guard.add(pair_id, at)  # only once built: a skipped bad entry does not claim its id
    return p1, p2


def _subset_files(
    root: Path, known: tuple[str, ...], subsets: Iterable[str] | str | None, source: str
) -> list[tuple[str, Path]]:
    """``[(subset, file)]`` in the benchmark's order: the requested subsets, or all present."""
    expected = ", ".join(f"{s}.json" for s in known)
    if subsets is None:
        present = [(s, root / f"{s}.json") for s in known if (root / f"{s}.json").is_file()]
        if not present:
            raise ProbeError(f"{root}: no {source} files; expected one or more of {expected} in this folder")
        return present
    # A single string comes from the command line as "add_obj,swap_att".
    names = [s.strip() for s in subsets.split(",") if s.strip()] if isinstance(subsets, str) else list(subsets)
    unknown = [s for s in names if s not in known]
    if unknown:
        raise ProbeError(f"{root}: unknown {source} subset(s) {unknown}; choose from {', '.join(known)}")
    if not names:
        raise ProbeError(f"{root}: subsets is empty; name at least one of {', '.join(known)} or leave it unset")
    files = []
    for s in known:
        if s in names:
            f = root / f"{s}.json"
            if not f.is_file():
                raise ProbeError(f"{f}: file not found; subset {s!r} needs it (restore it or drop it from subsets)")
            files.append((s, f))
    return files


def _images_dir(root: Path, images_dir: str | Path | None, check: bool) -> Path:
    if images_dir is not None:
        d = Path(images_dir)
        if check and not d.is_dir():
            raise ProbeError(f"{d}: images_dir is not a directory; pass the COCO val2017 image folder")
        return d
    for sub in IMAGE_SUBDIRS:
        if (root / sub).is_dir():
            return root / sub
    raise ProbeError(
        f"{root}: no {' or '.join(s + '/' for s in IMAGE_SUBDIRS)} folder next to the JSON files; pass "
        f"images_dir= the COCO val2017 image folder"
    )


def _coco_path(coco_annotations: str | Path | None) -> Path | None:
    if coco_annotations is None:
        return None
    return require_file(Path(coco_annotations), "COCO instances_val2017.json (coco_annotations=)")


def _join(coco: CocoBoxes | None, filename: str, at: str) -> tuple[tuple[Box, ...], dict[str, Any]]:
    if coco is None:
        return (), {}
    image_id = coco.ids.get(filename)
    if image_id is None:
        raise ProbeError(
            f"{at}: image {filename} is not in {coco.path}; pass the instances_val2017.json that matches "
            f"the images, or leave coco_annotations unset"
        )
    return coco.boxes.get(image_id, ()), {"coco_image_id": image_id}


@dataclass(frozen=True)
class CocoBoxes:
    """The parts of a COCO instances file a join needs: file name -> image id -> boxes."""

    path: Path
    ids: dict[str, int]
    boxes: dict[int, tuple[Box, ...]]

    @classmethod
    def load(cls, path: Path) -> CocoBoxes:
        data = fields(read_json(path), str(path), ("images", "annotations", "categories"), "COCO instances")
        names: dict[int, str] = {}
        for i, c in enumerate(data["categories"]):
            at = f"{path} (categories {i})"
            names[fields(c, at, ("id", "name"), "COCO category")["id"]] = text(c, "name", at)
        ids: dict[str, int] = {}
        for i, im in enumerate(data["images"]):
            fields(im, f"{path} (images {i})", ("id", "file_name"), "COCO image")
            ids[im["file_name"]] = im["id"]
        boxes: dict[int, list[Box]] = {}
        for i, ann in enumerate(data["annotations"]):
            at = f"{path} (annotations {i})"
            fields(ann, at, ("image_id", "category_id", "bbox"), "COCO annotation")
            bbox = ann["bbox"]
            if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
                raise ProbeError(f"{at}: bbox must be [x, y, w, h] numbers, got {bbox!r}; restore the file")
            x, y, w, h = bbox
            # A handful of COCO boxes are degenerate (zero width or height); they mark no region.
            if w <= 0 or h <= 0:
                continue
            if ann["category_id"] not in names:
                raise ProbeError(f"{at}: category_id {ann['category_id']!r} is not in categories; restore the file")
            boxes.setdefault(ann["image_id"], []).append(Box(names[ann["category_id"]], x, y, w, h))
        return cls(path=path, ids=ids, boxes={k: tuple(v) for k, v in boxes.items()})


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)
