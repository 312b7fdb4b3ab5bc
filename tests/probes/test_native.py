"""Native-format loaders on fixtures written in each benchmark's exact layout (tests/probes/fixtures.py)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator

import pytest

from cdviz.probes import get_source, list_sources, load_probeset, save_probeset
from cdviz.probes.native import BUILTIN
from cdviz.probes.registry import load_source
from cdviz.types import DEFAULT_QUESTION, Box, ProbeError, ProbeItem

# tests/ is on sys.path (tests/conftest.py under pytest's default "prepend" import mode), so the
# fixture writers import as probes.fixtures from any test folder.
from probes.fixtures import (
    ARO_RELATION,
    COCO_ANNOTATIONS,
    JSONL,
    JSONL_NAME,
    SUGARCREPE,
    WINOGROUND,
    write_aro_fixture,
    write_coco_fixture,
    write_image,
    write_json,
    write_jsonl,
    write_jsonl_fixture,
    write_sugarcrepe_fixture,
    write_sugarcrepe_pp_fixture,
    write_whatsup_fixture,
    write_winoground_fixture,
)


def load(name, path, **options):
    return list(load_source(name, path, **options))


def choice(uid, source, category, image, options, **kw):
    return ProbeItem(uid=uid, source=source, category=category, images=(str(image),), options=tuple(options), **kw)


# --- registry ---------------------------------------------------------------------------------


def test_registry_lists_every_builtin_source():
    names = list_sources()
    for name in ("sugarcrepe", "sugarcrepe_pp", "winoground", "aro_vg_relation", "aro_vg_attribution", "whatsup",
                 "jsonl"):
        assert name in names
        assert get_source(name) is BUILTIN[name]


def test_unknown_source_lists_the_available_ones():
    with pytest.raises(KeyError) as e:
        get_source("sugarcrep")
    for name in BUILTIN:
        assert name in str(e.value)


def test_loaders_stream_and_check_paths_eagerly(tmp_path):
    root = write_sugarcrepe_fixture(tmp_path)
    assert isinstance(load_source("sugarcrepe", root), Iterator)
    for name in BUILTIN:
        with pytest.raises(ProbeError, match="nowhere"):
            load_source(name, tmp_path / "nowhere")  # raises before iteration


def drain(stream):
    """What a skipping caller sees: the items, and the error of each bad entry or file."""
    items, errors = [], []
    while True:
        try:
            items.append(next(stream))
        except StopIteration:
            return items, errors
        except ProbeError as e:
            errors.append(str(e))


def test_a_bad_entry_or_file_does_not_end_the_stream(tmp_path):
    root = write_sugarcrepe_fixture(tmp_path)
    (root / "val2017" / "000000037777.jpg").unlink()  # add_obj 1, replace_att 0, swap_att 0
    (root / "swap_obj.json").write_text("{")
    items, errors = drain(load_source("sugarcrepe", root))
    assert [i.uid for i in items] == [
        "sugarcrepe-add_obj-0", "sugarcrepe-add_att-0", "sugarcrepe-replace_obj-0", "sugarcrepe-replace_rel-0"]
    assert [e.split(": ")[0].rsplit("/", 1)[1] for e in errors] == [
        "add_obj.json (key '1')", "replace_att.json (key '0')", "swap_obj.json:1", "swap_att.json (key '0')"]


def test_a_bad_line_does_not_end_a_jsonl_stream(tmp_path):
    root = write_jsonl_fixture(tmp_path)
    lines = (root / JSONL_NAME).read_text().splitlines()
    (root / JSONL_NAME).write_text("\n".join([lines[0], "{oops", lines[1], lines[0]]) + "\n")
    items, errors = drain(load_source("jsonl", root / JSONL_NAME))
    assert [i.uid for i in items] == ["probes-1", "pair-1", "probes-4"]
    assert len(errors) == 1 and f"{JSONL_NAME}:2: malformed JSON" in errors[0]


def test_a_bad_sugarcrepe_pp_entry_fails_once_for_its_pair(tmp_path):
    root = write_sugarcrepe_pp_fixture(tmp_path)
    data = json.loads((root / "replace_rel.json").read_text())
    del data[0]["caption2"]
    write_json(root / "replace_rel.json", data)
    items, errors = drain(load_source("sugarcrepe_pp", root))
    assert [i.uid for i in items] == [
        "sugarcrepe_pp-replace_rel-1-p1", "sugarcrepe_pp-replace_rel-1-p2",
        "sugarcrepe_pp-swap_att-0-p1", "sugarcrepe_pp-swap_att-0-p2"]  # fmt: skip
    assert len(errors) == 1 and "replace_rel.json (item 0): missing field(s) 'caption2'" in errors[0]


# --- SugarCrepe -------------------------------------------------------------------------------


def test_sugarcrepe_items_exact(tmp_path):
    root = write_sugarcrepe_fixture(tmp_path)
    img = root / "val2017"

    def sc(subset, key, image, caption, negative):
        return choice(f"sugarcrepe-{subset}-{key}", "sugarcrepe", subset, img / image, (caption, negative),
                      correct=0, skill="perception", subcategory="")

    assert load("sugarcrepe", root) == [
        sc("add_obj", "0", "000000397133.jpg", "A man is in a kitchen making pizzas.",
           "A man is in a kitchen making pizzas and a cake."),
        sc("add_obj", "1", "000000037777.jpg", "The dining table near the kitchen has a bowl of fruit on it.",
           "The dining table near the kitchen has a bowl of fruit and a vase on it."),
        sc("add_att", "0", "000000544519.jpg", "A clock that blends in with the wall hangs in a bathroom.",
           "A golden clock that blends in with the wall hangs in a bathroom."),
        sc("replace_obj", "0", "000000397133.jpg", "A man is in a kitchen making pizzas.",
           "A man is in a kitchen making sandwiches."),
        sc("replace_att", "0", "000000037777.jpg", "A small kitchen with a wooden dining table.",
           "A small kitchen with a glass dining table."),
        sc("replace_rel", "0", "000000397133.jpg", "A man standing next to an oven.", "A man sitting on an oven."),
        sc("swap_obj", "0", "000000544519.jpg", "A clock above a towel rack.", "A towel rack above a clock."),
        sc("swap_att", "0", "000000037777.jpg", "A white table with brown chairs.", "A brown table with white chairs."),
    ]  # fmt: skip


def test_sugarcrepe_coco_join_gives_category_boxes(tmp_path):
    root = write_sugarcrepe_fixture(tmp_path)
    items = {i.uid: i for i in load("sugarcrepe", root, coco_annotations=root / COCO_ANNOTATIONS)}
    kitchen = items["sugarcrepe-add_obj-0"]
    # The zero-width oven box of this image is dropped.
    assert kitchen.boxes == (Box("person", 1.5, 0.5, 3.25, 6.0), Box("bottle", 5.0, 2.0, 1.0, 3.5))
    assert kitchen.metadata == {"coco_image_id": 397133}
    assert items["sugarcrepe-add_obj-1"].boxes == (Box("dining table", 0.0, 3.0, 8.0, 5.0),)
    assert items["sugarcrepe-add_att-0"].boxes == (Box("clock", 2.0, 1.0, 2.0, 2.0),)
    assert items["sugarcrepe-add_att-0"].metadata == {"coco_image_id": 544519}


def test_sugarcrepe_coco_join_names_an_image_missing_from_the_annotations(tmp_path):
    root = write_sugarcrepe_fixture(tmp_path)
    write_json(root / "swap_obj.json", {"0": {"filename": "000000000139.jpg", "caption": "a", "negative_caption": "b"}})
    write_image(root / "val2017" / "000000000139.jpg")
    with pytest.raises(ProbeError) as e:
        load("sugarcrepe", root, coco_annotations=root / COCO_ANNOTATIONS, subsets=["swap_obj"])
    msg = str(e.value)
    assert "swap_obj.json (key '0')" in msg and "000000000139.jpg" in msg and "instances_val2017.json" in msg


def test_sugarcrepe_images_dir_option_and_images_subfolder(tmp_path):
    root = write_sugarcrepe_fixture(tmp_path, images=False)
    coco = write_coco_fixture(tmp_path / "coco")
    item = load("sugarcrepe", root, images_dir=coco / "val2017", subsets=["add_att"])[0]
    assert item.images == (str(coco / "val2017" / "000000544519.jpg"),)

    shutil.copytree(coco / "val2017", root / "images")  # the other default location
    item = load("sugarcrepe", root, subsets="add_att")[0]
    assert item.images == (str(root / "images" / "000000544519.jpg"),)


def test_sugarcrepe_without_images_folder_asks_for_images_dir(tmp_path):
    root = write_sugarcrepe_fixture(tmp_path, images=False)
    with pytest.raises(ProbeError, match="images_dir"):
        load_source("sugarcrepe", root)


def test_sugarcrepe_reads_present_subsets_and_requested_ones_in_benchmark_order(tmp_path):
    root = write_sugarcrepe_fixture(tmp_path)
    for name in ("add_att", "replace_obj", "replace_att", "replace_rel", "swap_obj"):
        (root / f"{name}.json").unlink()
    assert [i.uid for i in load("sugarcrepe", root)] == [
        "sugarcrepe-add_obj-0", "sugarcrepe-add_obj-1", "sugarcrepe-swap_att-0"]
    assert [i.uid for i in load("sugarcrepe", root, subsets="swap_att, add_obj")] == [
        "sugarcrepe-add_obj-0", "sugarcrepe-add_obj-1", "sugarcrepe-swap_att-0"]
    assert [i.category for i in load("sugarcrepe", root, subsets=["swap_att"])] == ["swap_att"]


def test_sugarcrepe_bad_folders_and_subsets(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ProbeError) as e:
        load("sugarcrepe", empty)
    assert str(empty) in str(e.value)
    for subset in SUGARCREPE:
        assert f"{subset}.json" in str(e.value)

    root = write_sugarcrepe_fixture(tmp_path)
    with pytest.raises(ProbeError, match=r"unknown sugarcrepe subset\(s\) \['swap_rel'\].*add_obj"):
        load("sugarcrepe", root, subsets=["add_obj", "swap_rel"])
    (root / "swap_obj.json").unlink()
    with pytest.raises(ProbeError, match=r"swap_obj\.json: file not found"):
        load("sugarcrepe", root, subsets=["swap_obj"])


def test_sugarcrepe_malformed_json_names_file_and_line(tmp_path):
    root = write_sugarcrepe_fixture(tmp_path)
    lines = ["{", ' "0": {', '  "filename": "000000544519.jpg",', '  "caption": "x"', '  "negative_caption": "y"}', "}"]
    (root / "add_att.json").write_text("\n".join(lines))  # the comma missing after line 4 is found on line 5
    with pytest.raises(ProbeError, match=r"add_att\.json:5: malformed JSON"):
        load("sugarcrepe", root)


def test_sugarcrepe_missing_field_names_file_key_and_field(tmp_path):
    root = write_sugarcrepe_fixture(tmp_path)
    data = json.loads(json.dumps(SUGARCREPE["replace_rel"]))
    data["7"] = {"filename": "000000397133.jpg", "caption": "A man standing next to an oven."}
    write_json(root / "replace_rel.json", data)
    with pytest.raises(ProbeError) as e:
        load("sugarcrepe", root)
    assert "replace_rel.json (key '7')" in str(e.value) and "'negative_caption'" in str(e.value)


def test_sugarcrepe_rejects_the_sugarcrepe_pp_layout(tmp_path):
    root = write_sugarcrepe_pp_fixture(tmp_path)
    with pytest.raises(ProbeError, match="sugarcrepe_pp"):
        load("sugarcrepe", root)


def test_sugarcrepe_missing_image_and_check_images_off(tmp_path):
    root = write_sugarcrepe_fixture(tmp_path)
    missing = root / "val2017" / "000000037777.jpg"
    missing.unlink()
    with pytest.raises(ProbeError) as e:
        load("sugarcrepe", root)
    assert "add_obj.json (key '1')" in str(e.value) and str(missing) in str(e.value)
    assert "check_images=False" in str(e.value)
    items = load("sugarcrepe", root, check_images=False)
    assert items[1].images == (str(missing),)


def test_sugarcrepe_empty_caption_is_an_error_naming_the_key(tmp_path):
    root = write_sugarcrepe_fixture(tmp_path)
    write_json(root / "swap_obj.json", {"0": {"filename": "000000544519.jpg", "caption": " ", "negative_caption": "b"}})
    with pytest.raises(ProbeError, match=r"swap_obj\.json \(key '0'\): field 'caption' must be a non-empty string"):
        load("sugarcrepe", root)


# --- SugarCrepe++ -----------------------------------------------------------------------------


def test_sugarcrepe_pp_two_items_per_entry(tmp_path):
    root = write_sugarcrepe_pp_fixture(tmp_path)
    img = root / "val2017"

    def pp(subset, entry_id, tag, positive, image, options):
        pair = f"sugarcrepe_pp-{subset}-{entry_id}"
        return choice(f"{pair}-{tag}", "sugarcrepe_pp", subset, img / image, options, correct=0,
                      subcategory=tag, skill="perception", metadata={"pair_id": pair, "positive": positive})

    assert load("sugarcrepe_pp", root) == [
        pp("replace_rel", 0, "p1", "caption", "000000397133.jpg",
           ("A man standing next to an oven.", "A man sitting on an oven.")),
        pp("replace_rel", 0, "p2", "caption2", "000000397133.jpg",
           ("Beside an oven stands a man.", "A man sitting on an oven.")),
        # The release's trailing newline is stripped.
        pp("replace_rel", 1, "p1", "caption", "000000544519.jpg",
           ("a clock hanging on the wall", "A clock lying on the floor.")),
        pp("replace_rel", 1, "p2", "caption2", "000000544519.jpg",
           ("On the wall hangs a clock.", "A clock lying on the floor.")),
        pp("swap_att", 0, "p1", "caption", "000000037777.jpg",
           ("A white table with brown chairs.", "A brown table with white chairs.")),
        pp("swap_att", 0, "p2", "caption2", "000000037777.jpg",
           ("Brown chairs surround a white table.", "A brown table with white chairs.")),
    ]  # fmt: skip


def test_sugarcrepe_pp_coco_join_and_bad_input(tmp_path):
    root = write_sugarcrepe_pp_fixture(tmp_path)
    items = load("sugarcrepe_pp", root, coco_annotations=root / COCO_ANNOTATIONS, subsets=["swap_att"])
    assert [i.boxes for i in items] == [(Box("dining table", 0.0, 3.0, 8.0, 5.0),)] * 2
    assert items[0].metadata == {"pair_id": "sugarcrepe_pp-swap_att-0", "positive": "caption", "coco_image_id": 37777}

    with pytest.raises(ProbeError, match=r"unknown sugarcrepe_pp subset\(s\) \['add_obj'\]"):
        load("sugarcrepe_pp", root, subsets=["add_obj"])
    write_json(root / "swap_att.json", [{"id": 0, "filename": "000000037777.jpg", "caption": "a", "caption2": "b",
                                         "negative_caption": "c"}] * 2)  # fmt: skip
    with pytest.raises(ProbeError, match=r"swap_att\.json \(item 1\): duplicate uid"):
        load("sugarcrepe_pp", root)
    write_json(root / "swap_att.json", [{"id": 0, "filename": "000000037777.jpg", "caption": "a",
                                         "negative_caption": "b"}])  # fmt: skip
    with pytest.raises(ProbeError, match=r"swap_att\.json \(item 0\): missing field\(s\) 'caption2'"):
        load("sugarcrepe_pp", root)
    with pytest.raises(ProbeError, match="use source 'sugarcrepe'"):
        load("sugarcrepe_pp", write_sugarcrepe_fixture(tmp_path))


# --- Winoground -------------------------------------------------------------------------------


def test_winoground_items_exact(tmp_path):
    root = write_winoground_fixture(tmp_path)
    img = root / "images"

    def wg(i, c0, c1, tag, collapsed, secondary, preds):
        return ProbeItem(uid=f"winoground-{i}", source="winoground", category=collapsed, subcategory=tag,
                         kind="match2x2", images=(str(img / f"ex_{i}_img_0.png"), str(img / f"ex_{i}_img_1.png")),
                         options=(c0, c1), correct=0, skill="perception",
                         metadata={"secondary_tag": secondary, "num_main_preds": preds})

    expected = [
        wg(0, "an old person kisses a young person", "a young person kisses an old person", "Noun", "Object", "", 1),
        wg(1, "the dog is on the bed and the cat is not", "the cat is on the bed and the dog is not", "Noun", "Both",
           "Series", 2),
        wg(2, "a person sits and a dog stands", "a person stands and a dog sits", "Verb", "Relation", "", 2),
    ]  # fmt: skip
    assert load("winoground", root) == expected
    assert load("winoground", root / "examples.jsonl") == expected


def test_winoground_falls_back_to_jpg(tmp_path):
    root = write_winoground_fixture(tmp_path)
    (root / "images" / "ex_1_img_1.png").unlink()
    write_image(root / "images" / "ex_1_img_1.jpg")
    item = load("winoground", root)[1]
    assert item.images == (str(root / "images" / "ex_1_img_0.png"), str(root / "images" / "ex_1_img_1.jpg"))


def test_winoground_bad_input_names_the_line(tmp_path):
    root = write_winoground_fixture(tmp_path)
    (root / "images" / "ex_2_img_0.png").unlink()
    with pytest.raises(ProbeError) as e:
        load("winoground", root)
    assert "examples.jsonl:3" in str(e.value) and "ex_2_img_0.png or" in str(e.value)

    rows = [json.dumps(r) for r in WINOGROUND]
    (root / "examples.jsonl").write_text(rows[0] + "\n" + rows[1][:-3] + "\n")
    with pytest.raises(ProbeError, match=r"examples\.jsonl:2: malformed JSON"):
        load("winoground", root)

    broken = {k: v for k, v in WINOGROUND[1].items() if k not in ("caption_1", "collapsed_tag")}
    write_jsonl(root / "examples.jsonl", [WINOGROUND[0], broken])
    with pytest.raises(ProbeError, match=r"examples\.jsonl:2: missing field\(s\) 'caption_1', 'collapsed_tag'"):
        load("winoground", root)

    write_jsonl(root / "examples.jsonl", [WINOGROUND[0], WINOGROUND[0]])
    with pytest.raises(ProbeError, match=r"examples\.jsonl:2: duplicate uid 'winoground-0' \(first at .*:1\)"):
        load("winoground", root)

    shutil.rmtree(root / "images")
    with pytest.raises(ProbeError, match="images_dir"):
        load_source("winoground", root)


# --- ARO --------------------------------------------------------------------------------------


def test_aro_relation_and_attribution_exact(tmp_path):
    root = write_aro_fixture(tmp_path)
    img = root / "images"
    assert load("aro_vg_relation", root / "visual_genome_relation.json") == [
        choice("aro-vgr-0", "aro_vg_relation", "vg_relation", img / "2316480.jpg",
               ("the man is wearing the shirt", "the shirt is wearing the man"), correct=0, subcategory="wearing",
               skill="perception", boxes=(Box("region", 1, 0, 6, 7),), metadata={"crop_to_box": True}),
        choice("aro-vgr-1", "aro_vg_relation", "vg_relation", img / "2345421.jpg",
               ("the cup is on the table", "the table is on the cup"), correct=0, subcategory="on",
               skill="perception", boxes=(Box("region", 0.5, 2, 7, 5.5),), metadata={"crop_to_box": True}),
    ]  # fmt: skip
    assert load("aro_vg_attribution", root / "visual_genome_attribution.json") == [
        choice("aro-vga-0", "aro_vg_attribution", "vg_attribution", img / "2316480.jpg",
               ("the white shirt and the black pants", "the black shirt and the white pants"), correct=0,
               subcategory="white black", skill="perception", boxes=(Box("region", 0, 1, 8, 6),),
               metadata={"crop_to_box": True}),
    ]  # fmt: skip


def test_aro_images_dir_option(tmp_path):
    root = write_aro_fixture(tmp_path)
    shutil.move(root / "images", tmp_path / "vg_images")
    with pytest.raises(ProbeError, match="images_dir"):
        load_source("aro_vg_relation", root / "visual_genome_relation.json")
    items = load("aro_vg_relation", root / "visual_genome_relation.json", images_dir=tmp_path / "vg_images")
    assert items[0].images == (str(tmp_path / "vg_images" / "2316480.jpg"),)


def test_aro_bad_input_names_item_and_field(tmp_path):
    root = write_aro_fixture(tmp_path)
    with pytest.raises(ProbeError, match=r"attribution\.json \(item 0\): missing field\(s\) 'relation_name'"):
        load("aro_vg_relation", root / "visual_genome_attribution.json")

    write_json(root / "visual_genome_relation.json", [ARO_RELATION[0], {**ARO_RELATION[1], "bbox_w": "7"}])
    with pytest.raises(ProbeError, match=r"relation\.json \(item 1\): field 'bbox_w' must be a number"):
        load("aro_vg_relation", root / "visual_genome_relation.json")

    write_json(root / "visual_genome_relation.json", [{**ARO_RELATION[0], "bbox_h": 0}])
    with pytest.raises(ProbeError, match=r"relation\.json \(item 0\): .*non-positive size"):
        load("aro_vg_relation", root / "visual_genome_relation.json")

    write_json(root / "visual_genome_relation.json", {"0": ARO_RELATION[0]})
    with pytest.raises(ProbeError, match="expected a JSON list"):
        load("aro_vg_relation", root / "visual_genome_relation.json")


# --- What'sUp ---------------------------------------------------------------------------------


def test_whatsup_items_exact(tmp_path):
    data = write_whatsup_fixture(tmp_path)
    assert load("whatsup", data / "controlled_images_dataset.json") == [
        choice("whatsup-controlled_a-0", "whatsup", "whatsup", data / "controlled_images" / "mug_on_table.jpeg",
               ("A mug on a table", "A mug under a table", "A mug to the left of a table",
                "A mug to the right of a table"), correct=0, subcategory="controlled_a", skill="perception"),
        choice("whatsup-controlled_a-1", "whatsup", "whatsup", data / "controlled_images" / "mug_left_of_table.jpeg",
               ("A mug to the left of a table", "A mug on a table", "A mug under a table",
                "A mug to the right of a table"), correct=0, subcategory="controlled_a", skill="perception"),
    ]  # fmt: skip
    assert load("whatsup", data / "controlled_clevr_dataset.json") == [
        choice("whatsup-controlled_b-0", "whatsup", "whatsup", data / "controlled_clevr" / "cube_behind_sphere.jpeg",
               ("A cube behind a sphere", "A cube in front of a sphere", "A cube left of a sphere",
                "A cube right of a sphere"), correct=0, subcategory="controlled_b", skill="perception"),
    ]  # fmt: skip


def test_whatsup_image_lookup_order(tmp_path):
    data = write_whatsup_fixture(tmp_path)
    json_file = data / "controlled_images_dataset.json"
    repo = data.parent  # image_path is relative to the repository root
    expected = (str(data / "controlled_images" / "mug_on_table.jpeg"),)
    assert load("whatsup", json_file, images_dir=repo)[0].images == expected
    folder = data / "controlled_images"  # or the image folder itself: matched by file name
    assert load("whatsup", json_file, images_dir=folder)[0].images == (str(folder / "mug_on_table.jpeg"),)
    (folder / "mug_left_of_table.jpeg").unlink()
    with pytest.raises(ProbeError) as e:
        load("whatsup", json_file)
    assert "controlled_images_dataset.json (item 1)" in str(e.value) and "mug_left_of_table.jpeg" in str(e.value)


def test_whatsup_too_few_options(tmp_path):
    data = write_whatsup_fixture(tmp_path)
    write_json(data / "controlled_images_dataset.json",
               [{"image_path": "data/controlled_images/mug_on_table.jpeg", "caption_options": ["A mug on a table"]}])
    with pytest.raises(ProbeError, match=r"\(item 0\): field 'caption_options' has 1 option\(s\)"):
        load("whatsup", data / "controlled_images_dataset.json")


# --- generic JSONL ----------------------------------------------------------------------------


def test_jsonl_items_exact(tmp_path):
    root = write_jsonl_fixture(tmp_path)
    cat, dog = str(root / "imgs" / "cat.png"), str(root / "imgs" / "dog.png")
    assert load("jsonl", root / JSONL_NAME) == [
        ProbeItem(uid="probes-1", source="jsonl", category="probes", images=(cat,),
                  options=("a cat on a mat", "a mat on a cat"), correct=0, skill="perception", subcategory="",
                  kind="choice", question=DEFAULT_QUESTION, boxes=(Box("cat", 1, 1, 4, 3),), split="test"),
        ProbeItem(uid="pair-1", source="jsonl", category="animals", images=(cat, dog), options=("a cat", "a dog"),
                  correct=0, skill="recognition", subcategory="pets", kind="match2x2",
                  question="Which caption fits?", boxes=(Box("dog", 0, 0, 8, 8, image=1),),
                  metadata={"note": "hand made"}),
    ]  # fmt: skip


def test_jsonl_absolute_and_parent_relative_paths(tmp_path):
    root = write_jsonl_fixture(tmp_path)
    outside = write_image(tmp_path / "shared" / "x.jpg")
    rows = [{"image": str(outside), "options": ["a", "b"], "correct": 1},
            {"image": "../shared/x.jpg", "options": ["a", "b"], "correct": 0}]  # fmt: skip
    write_jsonl(root / "more.jsonl", rows)
    assert [i.images for i in load("jsonl", root / "more.jsonl")] == [(str(outside),), (str(outside),)]


@pytest.mark.parametrize(
    "row, message",
    [
        ({"image": "imgs/cat.png", "correct": 0}, r"missing field\(s\) 'options'"),
        ({"options": ["a", "b"], "correct": 0}, r"missing field\(s\) 'image'"),
        ({"image": "imgs/cat.png", "options": ["a", "b"]}, r"missing field\(s\) 'correct'"),
        ({"image": "imgs/cat.png", "images": ["imgs/cat.png"], "options": ["a", "b"], "correct": 0}, "keep one"),
        ({"image": "imgs/cat.png", "options": ["a"], "correct": 0}, r"has 1 option\(s\)"),
        ({"image": "imgs/cat.png", "options": ["a", "b"], "correct": 2}, "correct index 2 outside 0..1"),
        ({"image": "imgs/cat.png", "options": ["a", "b"], "correct": True}, "must be an integer"),
        ({"image": "imgs/cat.png", "options": ["a", "b"], "correct": 0, "answer": 0}, r"unknown field\(s\) \['answer"),
        ({"image": "imgs/cat.png", "options": ["a", "b"], "correct": 0, "boxes": [["cat", 1, 2, 3]]}, "must be"),
        ({"image": "imgs/cat.png", "options": ["a", "b"], "correct": 0, "skill": "reasoning"}, "unknown skill"),
        ({"image": "imgs/cow.png", "options": ["a", "b"], "correct": 0}, r"imgs/cow\.png not found"),
        ({"uid": "pair-1", "image": "imgs/cat.png", "options": ["a", "b"], "correct": 0}, "duplicate uid 'pair-1'"),
        (["imgs/cat.png", ["a", "b"], 0], "expected a JSON object"),
    ],
)
def test_jsonl_bad_line_names_file_and_line(tmp_path, row, message):
    root = write_jsonl_fixture(tmp_path)
    write_jsonl(root / JSONL_NAME, [*JSONL, row])
    with pytest.raises(ProbeError, match=rf"{JSONL_NAME}:3: .*{message}"):
        load("jsonl", root / JSONL_NAME)


def test_jsonl_malformed_line(tmp_path):
    root = write_jsonl_fixture(tmp_path)
    with open(root / JSONL_NAME, "a") as f:
        f.write("\n" + '{"image": "imgs/cat.png", "options": ["a", "b"],\n')
    with pytest.raises(ProbeError, match=rf"{JSONL_NAME}:4: malformed JSON"):
        load("jsonl", root / JSONL_NAME)


# --- round trip through a probe set -----------------------------------------------------------


def test_every_source_round_trips_through_a_probe_set(tmp_path):
    sc = write_sugarcrepe_fixture(tmp_path)
    aro = write_aro_fixture(tmp_path)
    data = write_whatsup_fixture(tmp_path)
    items = [
        *load("sugarcrepe", sc, coco_annotations=sc / COCO_ANNOTATIONS),
        *load("sugarcrepe_pp", write_sugarcrepe_pp_fixture(tmp_path)),
        *load("winoground", write_winoground_fixture(tmp_path)),
        *load("aro_vg_relation", aro / "visual_genome_relation.json"),
        *load("aro_vg_attribution", aro / "visual_genome_attribution.json"),
        *load("whatsup", data / "controlled_images_dataset.json"),
        *load("whatsup", data / "controlled_clevr_dataset.json"),
        *load("jsonl", write_jsonl_fixture(tmp_path) / JSONL_NAME),
    ]
    out = save_probeset(items, tmp_path / "set", name="native")
    loaded = load_probeset(out)
    assert loaded.items == items
    assert loaded.counts()["source"] == {
        "sugarcrepe": 8, "sugarcrepe_pp": 6, "winoground": 3, "aro_vg_relation": 2, "aro_vg_attribution": 1,
        "whatsup": 3, "jsonl": 2,
    }  # fmt: skip
