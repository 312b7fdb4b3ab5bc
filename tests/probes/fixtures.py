"""Fixture writers: tiny local copies of each benchmark in its exact native layout.

Every ``write_*_fixture(tmp_path)`` writes under ``tmp_path`` and returns the folder a loader is
pointed at; images are 8x8 solid colours with the benchmark's real file names. The data
constants are the file contents, so tests can corrupt a copy and write it back.

    root = write_sugarcrepe_fixture(tmp_path)   # root/{add_obj,...}.json, root/val2017/, root/annotations/
    items = list(load_source("sugarcrepe", root, coco_annotations=root / COCO_ANNOTATIONS))
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PIL import Image

COCO_ANNOTATIONS = "annotations/instances_val2017.json"  # relative to a COCO root

COCO_CATEGORIES = [
    {"supercategory": "person", "id": 1, "name": "person"},
    {"supercategory": "kitchen", "id": 44, "name": "bottle"},
    {"supercategory": "furniture", "id": 67, "name": "dining table"},
    {"supercategory": "appliance", "id": 79, "name": "oven"},
    {"supercategory": "indoor", "id": 85, "name": "clock"},
]
COCO_IMAGES = {  # file name -> (image id, colour)
    "000000397133.jpg": (397133, (200, 40, 40)),
    "000000037777.jpg": (37777, (40, 200, 40)),
    "000000544519.jpg": (544519, (40, 40, 200)),
}
COCO_ANNS = [  # (annotation id, image id, category id, bbox); boxes fit the 8x8 fixture images
    (2096753, 397133, 1, [1.5, 0.5, 3.25, 6.0]),
    (82445, 397133, 44, [5.0, 2.0, 1.0, 3.5]),
    (1500001, 397133, 79, [0.0, 4.0, 0.0, 2.0]),  # degenerate (zero width): dropped by the join
    (119568, 37777, 67, [0.0, 3.0, 8.0, 5.0]),
    (1800000, 544519, 85, [2.0, 1.0, 2.0, 2.0]),
]

SUGARCREPE = {
    "add_obj": {
        "0": {"filename": "000000397133.jpg", "caption": "A man is in a kitchen making pizzas.",
              "negative_caption": "A man is in a kitchen making pizzas and a cake."},
        "1": {"filename": "000000037777.jpg", "caption": "The dining table near the kitchen has a bowl of fruit on it.",
              "negative_caption": "The dining table near the kitchen has a bowl of fruit and a vase on it."},
    },
    "add_att": {
        "0": {"filename": "000000544519.jpg", "caption": "A clock that blends in with the wall hangs in a bathroom.",
              "negative_caption": "A golden clock that blends in with the wall hangs in a bathroom."},
    },
    "replace_obj": {
        "0": {"filename": "000000397133.jpg", "caption": "A man is in a kitchen making pizzas.",
              "negative_caption": "A man is in a kitchen making sandwiches."},
    },
    "replace_att": {
        "0": {"filename": "000000037777.jpg", "caption": "A small kitchen with a wooden dining table.",
              "negative_caption": "A small kitchen with a glass dining table."},
    },
    "replace_rel": {
        "0": {"filename": "000000397133.jpg", "caption": "A man standing next to an oven.",
              "negative_caption": "A man sitting on an oven."},
    },
    "swap_obj": {
        "0": {"filename": "000000544519.jpg", "caption": "A clock above a towel rack.",
              "negative_caption": "A towel rack above a clock."},
    },
    "swap_att": {
        "0": {"filename": "000000037777.jpg", "caption": "A white table with brown chairs.",
              "negative_caption": "A brown table with white chairs."},
    },
}  # fmt: skip

SUGARCREPE_PP = {
    "replace_rel": [
        {"id": 0, "filename": "000000397133.jpg", "caption": "A man standing next to an oven.",
         "caption2": "Beside an oven stands a man.", "negative_caption": "A man sitting on an oven."},
        {"id": 1, "filename": "000000544519.jpg", "caption": "a clock hanging on the wall\n",
         "caption2": "On the wall hangs a clock.", "negative_caption": "A clock lying on the floor."},
    ],
    "swap_att": [
        {"id": 0, "filename": "000000037777.jpg", "caption": "A white table with brown chairs.",
         "caption2": "Brown chairs surround a white table.", "negative_caption": "A brown table with white chairs."},
    ],
}  # fmt: skip

WINOGROUND = [
    {"id": 0, "image_0": "ex_0_img_0", "image_1": "ex_0_img_1", "caption_0": "an old person kisses a young person",
     "caption_1": "a young person kisses an old person", "tag": "Noun", "secondary_tag": "", "num_main_preds": 1,
     "collapsed_tag": "Object"},
    {"id": 1, "image_0": "ex_1_img_0", "image_1": "ex_1_img_1", "caption_0": "the dog is on the bed and the cat is not",
     "caption_1": "the cat is on the bed and the dog is not", "tag": "Noun", "secondary_tag": "Series",
     "num_main_preds": 2, "collapsed_tag": "Both"},
    {"id": 2, "image_0": "ex_2_img_0", "image_1": "ex_2_img_1", "caption_0": "a person sits and a dog stands",
     "caption_1": "a person stands and a dog sits", "tag": "Verb", "secondary_tag": "", "num_main_preds": 2,
     "collapsed_tag": "Relation"},
]  # fmt: skip

ARO_RELATION = [
    {"image_path": "2316480.jpg", "relation_name": "wearing", "bbox_x": 1, "bbox_y": 0, "bbox_w": 6, "bbox_h": 7,
     "true_caption": "the man is wearing the shirt", "false_caption": "the shirt is wearing the man"},
    {"image_path": "2345421.jpg", "relation_name": "on", "bbox_x": 0.5, "bbox_y": 2, "bbox_w": 7, "bbox_h": 5.5,
     "true_caption": "the cup is on the table", "false_caption": "the table is on the cup"},
]  # fmt: skip
ARO_ATTRIBUTION = [
    {"image_path": "2316480.jpg", "attributes": ["white", "black"], "bbox_x": 0, "bbox_y": 1, "bbox_w": 8,
     "bbox_h": 6, "true_caption": "the white shirt and the black pants",
     "false_caption": "the black shirt and the white pants"},
]  # fmt: skip
ARO_IMAGES = {"2316480.jpg": (90, 90, 30), "2345421.jpg": (30, 90, 90)}

WHATSUP = {  # file name -> records; image paths are written relative to the repository root
    "controlled_images_dataset.json": [
        {"image_path": "data/controlled_images/mug_on_table.jpeg",
         "caption_options": ["A mug on a table", "A mug under a table", "A mug to the left of a table",
                             "A mug to the right of a table"]},
        {"image_path": "data/controlled_images/mug_left_of_table.jpeg",
         "caption_options": ["A mug to the left of a table", "A mug on a table", "A mug under a table",
                             "A mug to the right of a table"]},
    ],
    "controlled_clevr_dataset.json": [
        {"image_path": "data/controlled_clevr/cube_behind_sphere.jpeg",
         "caption_options": ["A cube behind a sphere", "A cube in front of a sphere", "A cube left of a sphere",
                             "A cube right of a sphere"]},
    ],
}  # fmt: skip

JSONL_NAME = "probes.jsonl"
JSONL = [
    {"image": "imgs/cat.png", "options": ["a cat on a mat", "a mat on a cat"], "correct": 0,
     "boxes": [["cat", 1, 1, 4, 3]]},
    {"uid": "pair-1", "images": ["imgs/cat.png", "imgs/dog.png"], "kind": "match2x2",
     "options": ["a cat", "a dog"], "category": "animals", "subcategory": "pets", "skill": "recognition",
     "question": "Which caption fits?", "boxes": [{"phrase": "dog", "x": 0, "y": 0, "w": 8, "h": 8, "image": 1}],
     "metadata": {"note": "hand made"}},
]  # fmt: skip


def write_image(path: Path, colour: tuple[int, int, int] = (128, 128, 128)) -> Path:
    """An 8x8 solid image; the format follows the suffix (.png, else JPEG)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), colour).save(path, format="PNG" if path.suffix == ".png" else "JPEG")
    return path


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")
    return path


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def coco_instances() -> dict[str, Any]:
    """A subset of instances_val2017.json with every top-level key of the real file."""
    return {
        "info": {"description": "COCO 2017 Dataset", "url": "http://cocodataset.org", "version": "1.0",
                 "year": 2017, "contributor": "COCO Consortium", "date_created": "2017/09/01"},
        "licenses": [{"url": "http://creativecommons.org/licenses/by-nc-sa/2.0/", "id": 1,
                      "name": "Attribution-NonCommercial-ShareAlike License"}],
        "images": [
            {"license": 1, "file_name": name, "coco_url": f"http://images.cocodataset.org/val2017/{name}",
             "height": 8, "width": 8, "date_captured": "2013-11-14 17:02:52", "flickr_url": "", "id": image_id}
            for name, (image_id, _) in COCO_IMAGES.items()
        ],
        "annotations": [
            {"segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]], "area": w * h, "iscrowd": 0,
             "image_id": image_id, "bbox": [x, y, w, h], "category_id": category_id, "id": ann_id}
            for ann_id, image_id, category_id, (x, y, w, h) in COCO_ANNS
        ],
        "categories": COCO_CATEGORIES,
    }  # fmt: skip


def write_coco_fixture(root: Path) -> Path:
    """``root/val2017/*.jpg`` and ``root/annotations/instances_val2017.json``; returns root."""
    for name, (_, colour) in COCO_IMAGES.items():
        write_image(root / "val2017" / name, colour)
    write_json(root / COCO_ANNOTATIONS, coco_instances())
    return root


def write_sugarcrepe_fixture(tmp_path: Path, *, images: bool = True) -> Path:
    """The 7 SugarCrepe JSON files in ``tmp_path/sugarcrepe``, with the COCO fixture in the same folder
    (so ``val2017/`` is found without options) unless ``images=False``."""
    root = tmp_path / "sugarcrepe"
    for subset, entries in SUGARCREPE.items():
        write_json(root / f"{subset}.json", entries)
    if images:
        write_coco_fixture(root)
    return root


def write_sugarcrepe_pp_fixture(tmp_path: Path, *, images: bool = True) -> Path:
    """SugarCrepe++ JSON lists (two of the five subsets) in ``tmp_path/sugarcrepe_pp``, COCO fixture alongside."""
    root = tmp_path / "sugarcrepe_pp"
    for subset, entries in SUGARCREPE_PP.items():
        write_json(root / f"{subset}.json", entries)
    if images:
        write_coco_fixture(root)
    return root


def write_winoground_fixture(tmp_path: Path) -> Path:
    """``tmp_path/winoground/examples.jsonl`` and ``images/ex_{id}_img_{0,1}.png``."""
    root = tmp_path / "winoground"
    write_jsonl(root / "examples.jsonl", WINOGROUND)
    for ex in WINOGROUND:
        for k, colour in ((0, (250, 250, 250)), (1, (10, 10, 10))):
            write_image(root / "images" / f"{ex[f'image_{k}']}.png", colour)
    return root


def write_aro_fixture(tmp_path: Path) -> Path:
    """``tmp_path/aro/visual_genome_{relation,attribution}.json`` and ``images/*.jpg``."""
    root = tmp_path / "aro"
    write_json(root / "visual_genome_relation.json", ARO_RELATION)
    write_json(root / "visual_genome_attribution.json", ARO_ATTRIBUTION)
    for name, colour in ARO_IMAGES.items():
        write_image(root / "images" / name, colour)
    return root


def write_whatsup_fixture(tmp_path: Path) -> Path:
    """The What'sUp repository's ``data/`` folder: both JSON files and their images; returns data/."""
    repo = tmp_path / "whatsup_vlms"
    for name, records in WHATSUP.items():
        write_json(repo / "data" / name, records)
        for r in records:
            write_image(repo / r["image_path"], (200, 200, 0))
    return repo / "data"


def write_jsonl_fixture(tmp_path: Path) -> Path:
    """``tmp_path/custom/probes.jsonl`` with images in ``imgs/``; returns the folder."""
    root = tmp_path / "custom"
    write_jsonl(root / JSONL_NAME, JSONL)
    write_image(root / "imgs" / "cat.png", (220, 120, 0))
    write_image(root / "imgs" / "dog.png", (90, 60, 30))
    return root
