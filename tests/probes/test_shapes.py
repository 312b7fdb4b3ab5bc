"""The shapes world: determinism, split hygiene, truth of every option, pixel-exact boxes, vocabulary."""

from __future__ import annotations

import random
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from cdviz.probes.probeset import load_probeset
from cdviz.probes.shapes import (
    CATEGORIES,
    VOCABULARY,
    instruction_samples,
    items_for_scene,
    make_shapes,
    words,
)
from cdviz.probes.shapes_scene import (
    COLOURS,
    RELATIONS,
    caption,
    claim_holds,
    generate_scenes,
    noun_phrase,
    render_scene,
    scene_split,
)
from cdviz.types import DEFAULT_QUESTION

FULL = ("size", "colour", "shape")


@pytest.fixture(scope="module")
def probeset(tmp_path_factory):
    return make_shapes(tmp_path_factory.mktemp("shapes"), 2000, seed=7)


def _items(seed: int, image_size: int, n_items: int):
    """At least ``n_items`` items straight from scenes, without touching the disk."""
    items = []
    for scene in generate_scenes(seed, image_size):
        items += items_for_scene(scene, random.Random(scene.index))
        if len(items) >= n_items:
            return items


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_byte_identical_files(tmp_path):
    make_shapes(tmp_path / "a", 300, seed=3)
    make_shapes(tmp_path / "b", 300, seed=3)
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert "items.jsonl" in a and any(k.startswith("images/") for k in a)
    assert a == b


def test_different_seeds_give_different_scenes(tmp_path):
    a = make_shapes(tmp_path / "a", 200, seed=1)
    b = make_shapes(tmp_path / "b", 200, seed=2)
    assert [i.options for i in a] != [i.options for i in b]
    shared = set(_files(tmp_path / "a")) & set(_files(tmp_path / "b")) - {"items.jsonl", "probeset.json"}
    assert shared
    assert any((tmp_path / "a" / f).read_bytes() != (tmp_path / "b" / f).read_bytes() for f in shared)


def test_exact_count_and_equal_category_quotas(probeset):
    assert len(probeset) == 2000
    assert probeset.counts()["category"] == {c: 200 for c in CATEGORIES}
    assert probeset.counts()["skill"] == {"perception": 1600, "recognition": 400}
    assert len({i.uid for i in probeset}) == 2000
    for item in probeset:
        scene = item.metadata["scene_id"]
        assert item.uid == f"shapes-7-{scene:06d}-{item.category}-0"
        assert item.images == (f"images/{scene:06d}.png",)


def test_splits_never_share_a_scene(probeset, tmp_path):
    scenes = {}
    for item in probeset:
        scenes.setdefault(item.split, set()).add(item.metadata["scene_id"])
        assert item.metadata["scene"]["split"] == item.split
    assert set(scenes) == {"train", "validation", "test"}
    assert not scenes["train"] & scenes["validation"]
    assert not scenes["train"] & scenes["test"]
    assert not scenes["validation"] & scenes["test"]
    share = len(scenes["train"]) / sum(len(s) for s in scenes.values())
    assert 0.7 < share < 0.9

    only_test = make_shapes(tmp_path / "test", 150, seed=7, splits=("test",))
    assert {i.split for i in only_test} == {"test"}
    full = {i.metadata["scene_id"]: i.metadata["scene"] for i in probeset}
    for item in only_test:  # the same scene index is the same scene whatever else is made
        if item.metadata["scene_id"] in full:
            assert item.metadata["scene"] == full[item.metadata["scene_id"]]
        assert scene_split(7, item.metadata["scene_id"]) == "test"


def test_split_fractions_and_category_subset(tmp_path):
    ps = make_shapes(tmp_path, 37, seed=0, fractions=(0, 1, 0), categories=["swap_obj", "existence"])
    assert len(ps) == 37
    assert ps.counts()["category"] == {"swap_obj": 19, "existence": 18}
    assert ps.counts()["split"] == {"validation": 37}
    with pytest.raises(ValueError, match="choose from"):
        make_shapes(tmp_path, 10, categories=["nope"])
    with pytest.raises(ValueError, match="select no scene"):
        make_shapes(tmp_path, 10, splits=("train",), fractions=(0, 0.5, 0.5))


def test_probeset_round_trips_exactly(probeset):
    loaded = load_probeset(probeset.root)
    assert loaded.items == probeset.items
    assert loaded.meta == probeset.meta
    assert loaded.meta["params"]["image_size"] == 64


@pytest.mark.parametrize("image_size,n_items", [(64, 4000), (224, 500), (384, 500)])
def test_true_option_holds_and_every_other_fails(image_size, n_items):
    items = _items(seed=11, image_size=image_size, n_items=n_items)
    assert len(items) >= n_items
    for item in items:
        scene, claims = item.metadata["scene"], item.metadata["claims"]
        assert len(claims) == len(item.options) == 2
        assert [claim_holds(scene, c) for c in claims] == [k == item.correct for k in range(2)], item.uid
        if item.skill == "perception":  # the texts say what the claims say
            assert item.correct == 0 and item.question == DEFAULT_QUESTION
            assert item.options == tuple(caption(c) for c in claims)
        elif item.category == "existence":
            assert item.options == ("yes", "no")
            assert item.question == f"Is there {noun_phrase(claims[0]['objects'][0])} in the image?"
        else:
            assert item.options == tuple(c["objects"][0]["colour"] for c in claims)
    seen = Counter((i.category, i.correct) for i in items)
    assert seen["existence", 0] > 0 and seen["existence", 1] > 0
    assert seen["colour", 0] > 0 and seen["colour", 1] > 0


def test_relations_are_unambiguous_and_match_the_grid():
    for image_size in (64, 224, 384):
        cell = image_size / 3
        for scene in generate_scenes(5, image_size, n=300):
            d = scene.to_dict()
            centres = [(x + w / 2, y + h / 2) for x, y, w, h in (o["box"] for o in d["objects"])]
            for i, (ax, ay) in enumerate(centres):
                for j, (bx, by) in enumerate(centres):
                    if i == j:
                        continue
                    for gap in (abs(ax - bx), abs(ay - by)):  # same row/column, or clearly apart
                        assert gap < cell / 4 or gap > 3 * cell / 4
                    di, dj = scene.objects[i].describe(FULL), scene.objects[j].describe(FULL)
                    if len(scene.find(di)) == len(scene.find(dj)) == 1:
                        held = [r for r in RELATIONS if claim_holds(d, {"objects": [di, dj], "relations": [[0, r, 1]]})]
                        assert held == scene.relations(i, j)


def test_boxes_cover_every_named_object(probeset):
    for item in probeset:
        objects = item.metadata["scene"]["objects"]
        assert [(b.phrase, b.x, b.y, b.w, b.h) for b in item.boxes] == [
            (f"{o['size']} {o['colour']} {o['shape']}", *o["box"]) for o in objects
        ]
        true = item.metadata["claims"][item.correct]
        descs = true.get("objects", []) + [d for d, n in true.get("counts", []) if n > 0]
        named = item.metadata["named"]
        assert named == sorted(set(named)) and all(0 <= k < len(objects) for k in named)
        for desc in descs:  # every object the true text describes has its box among the named
            assert any(all(objects[k][a] == v for a, v in desc.items()) for k in named), item.uid
        for d, n in true.get("counts", []):
            if n > 0:
                assert n == sum(all(objects[k][a] == v for a, v in d.items()) for k in named), item.uid


@pytest.mark.parametrize("image_size", [64, 224, 384])
def test_boxes_are_tight_around_the_drawn_pixels(image_size):
    for scene in generate_scenes(2, image_size, n=60):
        pixels = np.asarray(render_scene(scene)).astype(int)  # (H, W, 3)
        assert pixels.shape == (image_size, image_size, 3)
        covered = np.zeros((image_size, image_size), bool)
        for o in scene.objects:
            x, y, w, h = o.box
            assert 0 <= x and x + w <= image_size and 0 <= y and y + h <= image_size
            assert tuple(pixels[y + h // 2, x + w // 2]) == COLOURS[o.colour]
            x0, y0 = max(x - 2, 0), max(y - 2, 0)
            mask = (pixels[y0 : y + h + 2, x0 : x + w + 2] == COLOURS[o.colour]).all(-1)
            ys, xs = np.nonzero(mask)
            assert (x0 + xs.min(), y0 + ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1) == o.box
            covered[y : y + h, x : x + w] = True
        assert (pixels[~covered] == scene.background).all()


def test_words_split_on_punctuation():
    assert words("Is there an orange circle?") == ["Is", "there", "an", "orange", "circle", "?"]
    assert words("(A) the option's letter.") == ["(", "A", ")", "the", "option", "'", "s", "letter", "."]


def test_every_generated_word_is_in_the_vocabulary():
    vocabulary = set(VOCABULARY)
    assert len(vocabulary) == len(VOCABULARY)
    used = set()
    for scene in generate_scenes(3, n=400):
        rng = random.Random(scene.index)
        texts = [t for i in items_for_scene(scene, rng) for t in (i.question, *i.options)]
        texts += [t for s in instruction_samples(scene, rng) for t in (s["prompt"], s["answer"])]
        for text in texts:
            used.update(words(text))
    assert used <= vocabulary, sorted(used - vocabulary)
    assert {"A", "B", "(", ")", ".", "?", ",", "zero", "four", "crosses", "relative"} <= used


def test_instruction_samples_ask_both_orders():
    scene = next(s for s in generate_scenes(4) if len(s.objects) == 4)
    samples = instruction_samples(scene, random.Random(0))
    kinds = Counter(s["kind"] for s in samples)
    assert kinds["caption"] == 1 and kinds["qa"] >= 5 and kinds["choice"] % 2 == 0 and kinds["choice"] >= 12
    assert samples[0]["prompt"] == "Describe the image."
    assert samples[0]["answer"].count(" at the ") == 4
    choices = [s for s in samples if s["kind"] == "choice"]
    for first, second in zip(choices[::2], choices[1::2]):
        a, b = (re.findall(r"\((A|B)\) (.*?) (?=\(B\)|Answer with)", s["prompt"]) for s in (first, second))
        assert len(a) == len(b) == 2
        assert [t for _, t in a] == [t for _, t in reversed(b)]
        assert dict(a)[first["answer"]] == dict(b)[second["answer"]]
        assert first["answer"] != second["answer"]
