"""Training data: answer-only labels, LLaVA JSONL parsing, deterministic order per rank and epoch."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from cdviz.models import load_model
from cdviz.train.data import (
    Collator, DataError, JsonlConversations, ShapesInstructions, Stream, encode, make_source,
)
from cdviz.train.losses import IGNORE


@pytest.fixture(scope="module")
def student(pair_dirs):
    return load_model(pair_dirs[1])


def _answer_text(adapter, enc, b):
    ids = enc.inputs["input_ids"][b]
    return adapter.tokenizer.decode(ids[enc.labels[b] != IGNORE])


def test_labels_cover_exactly_the_answers(student):
    source = ShapesInstructions(n_scenes=3, seed=0, image_size=32)
    examples = [source[i] for i in range(6)]
    enc = encode(student, examples)
    for b, ex in enumerate(examples):
        answer = ex.messages[1]["content"][0]["text"]
        assert _answer_text(student, enc, b).split() == [*student.tokenizer.tokenize(answer), "</s>"]
        ids = enc.inputs["input_ids"][b]
        assert student.tokenizer.convert_ids_to_tokens(int(ids[enc.prompt_end[b]])) == ":"  # "ASSISTANT:"
        start, end = enc.spans[b]
        assert end - start == 16 and enc.grids[b] == (4, 4)
    assert enc.inputs["attention_mask"][:, 0].all()  # right padded


def _write_jsonl(tmp_path, records):
    Image.new("RGB", (40, 40), (0, 128, 255)).save(tmp_path / "img.png")
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_jsonl_multi_turn_and_text_only(student, tmp_path):
    path = _write_jsonl(tmp_path, [
        {"id": "a", "image": "img.png", "conversations": [
            {"from": "human", "value": "<image>\nWhat colour is the square?"}, {"from": "gpt", "value": "blue"},
            {"from": "human", "value": "How many squares are there?"}, {"from": "gpt", "value": "one"}]},
        {"id": "b", "conversations": [{"from": "human", "value": "Is there a red circle?"},
                                      {"from": "gpt", "value": "no"}]},
    ])
    source = make_source(str(path))
    assert isinstance(source, JsonlConversations) and len(source) == 2
    enc = Collator(student)([source[0], source[1]]).student
    assert _answer_text(student, enc, 0).split() == ["blue", "</s>", "one", "</s>"]
    assert _answer_text(student, enc, 1).split() == ["no", "</s>"]
    assert enc.spans[0] is not None and enc.spans[1] is None and enc.grids[1] is None


@pytest.mark.parametrize("record, message", [
    ({"image": "missing.png", "conversations": [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": "x"}]},
     "cannot be read"),
    ({"conversations": [{"from": "human", "value": "<image>\nhi"}, {"from": "gpt", "value": "x"}]}, "no image"),
    ({"conversations": [{"from": "robot", "value": "hi"}]}, "role"),
    ({"conversations": [{"from": "human", "value": "hi"}]}, "no assistant turn"),
    ({"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "x"}], "regions": []}, "no image"),
    ({"image": "img.png", "conversations": [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": "x"}],
      "regions": [{"x": 1, "y": 2, "w": 3}]}, "region 0"),
    ({"image": "img.png", "conversations": [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": "x"}],
      "regions": [{"x": 40, "y": 2, "w": 3, "h": 3}]}, "outside the 40x40 image"),
])
def test_bad_records_name_the_problem(tmp_path, record, message):
    source = JsonlConversations(_write_jsonl(tmp_path, [record]))
    with pytest.raises(DataError, match=message):
        source[0]


def test_stream_is_deterministic_and_ranks_are_disjoint():
    source = ShapesInstructions(n_scenes=2, seed=0, image_size=32)
    n = len(source)
    uids = lambda stream, m: [ex.uid for ex in stream.examples(m)]  # noqa: E731
    a, b = Stream(source, 3, seed=7, rank=0, world=2), Stream(source, 3, seed=7, rank=1, world=2)
    assert uids(a, 0) == uids(Stream(source, 3, seed=7, rank=0, world=2), 0)
    assert not set(uids(a, 0)) & set(uids(b, 0))
    single = Stream(source, 1, seed=7)
    epoch0 = [single.examples(m)[0].uid for m in range(n)]
    epoch1 = [single.examples(m)[0].uid for m in range(n, 2 * n)]
    assert sorted(epoch0) == sorted(epoch1) and len(set(epoch0)) == n and epoch0 != epoch1


def test_jsonl_regions_give_the_grounding_target(student, tmp_path):
    path = _write_jsonl(tmp_path, [
        {"image": "img.png", "regions": [{"x": 0, "y": 0, "w": 20, "h": 20}],
         "conversations": [{"from": "human", "value": "<image>\nWhat colour is the square?"},
                           {"from": "gpt", "value": "blue"}]},
    ])
    enc = Collator(student)([make_source(str(path))[0]]).student
    rows, cols = enc.grids[0]
    cover = enc.regions[0].reshape(rows, cols)
    # The top-left quarter of the 40 px image: exactly the top-left quarter of the patch grid.
    assert cover[: rows // 2, : cols // 2].eq(1).all() and cover.sum() == rows * cols / 4


@pytest.mark.parametrize("kinds", [None, ["qa:colour"], ["presence"], ["caption", "choice", "qa"], ["match", "presence"]])
def test_shapes_samples_are_the_per_scene_generators_in_order(kinds):
    """ShapesInstructions caches the world across stages; its samples must be what the generators
    give scene by scene, each from its own seeded RNG, presence questions after each scene's texts."""
    import random

    from cdviz.probes.shapes import generate_scenes, instruction_samples, presence_samples, sample_selected

    expected = []
    for k, scene in enumerate(generate_scenes(3, 48, splits=("train",), n=40)):
        texts = instruction_samples(scene, random.Random(f"cdviz-train:3:{scene.index}"))
        expected += [(k, s) for s in texts if sample_selected(s, kinds)]
        if kinds is not None and "presence" in kinds:
            expected += [(k, s) for s in presence_samples(scene, random.Random(f"cdviz-presence:3:{scene.index}"))]
    for _ in range(2):  # the second instance comes from the cache
        assert ShapesInstructions(n_scenes=40, seed=3, image_size=48, kinds=kinds).samples == expected
