"""The presence loss (checkpoints/DESIGNS.md, design 14): which answers say "not there", the
existence questions with hard negatives it trains on, the loss against eager attention, and its
training."""

from __future__ import annotations

import json
import math
import random
import re

import pytest
import torch

from cdviz.conversation import DataError
from cdviz.models import load_model
from cdviz.models.tiny import build_tiny
from cdviz.probes.shapes import _absent_pairs, instruction_samples, presence_samples
from cdviz.probes.shapes_scene import generate_scenes
from cdviz.train.data import JsonlConversations, ShapesInstructions, encode
from cdviz.train.losses import TrainCapture, presence_from_rows
from cdviz.train.step import LossSettings, answer_query_rows
from tests.train.conftest import eager_answer_rows, loss_curve


def _scenes(n=60, image_size=48):
    return list(generate_scenes(0, image_size, splits=("train",), n=n))


def _pair(question: str) -> tuple[str, str]:
    colour, shape = re.fullmatch(r"Is there an? (\w+) (\w+) in the image\?", question).groups()
    return colour, shape


def test_only_answers_that_say_not_there_are_absent():
    kinds = set()
    for scene in _scenes(30):
        for s in instruction_samples(scene, random.Random(scene.index)):
            gone = (s["kind"] == "match" and s["answer"] == "no") or (s.get("question") == "exists" and s["answer"] == "no")
            assert s.get("absent", False) == gone, s
            kinds.add((s["kind"], s.get("absent", False)))
    assert {("match", True), ("match", False), ("qa", True), ("qa", False), ("caption", False)} <= kinds


def test_presence_questions_name_a_pair_in_view_and_a_bound_pair_that_is_not():
    hard = 0
    for scene in _scenes():
        yes, no = presence_samples(scene, random.Random(scene.index))
        assert (yes["answer"], yes["absent"], no["answer"], no["absent"]) == ("yes", False, "no", True)
        assert yes["objects"] and no["objects"] == []
        colour, shape = _pair(no["prompt"])
        assert not scene.find({"colour": colour, "shape": shape})
        colours, shapes = {o.colour for o in scene.objects}, {o.shape for o in scene.objects}
        both = [d for d in _absent_pairs(scene) if d["colour"] in colours and d["shape"] in shapes]
        if both:  # when the scene allows it, both words are in view, on different objects
            assert colour in colours and shape in shapes
            hard += 1
        c, s = _pair(yes["prompt"])
        assert [scene.objects[i].colour + " " + scene.objects[i].shape for i in yes["objects"]] == [f"{c} {s}"] * len(
            yes["objects"])
    assert hard >= 20


def test_presence_samples_are_made_only_when_asked_for():
    default = ShapesInstructions(n_scenes=8, seed=0, image_size=32)
    expected = [s for scene in default.scenes
                for s in instruction_samples(scene, random.Random(f"cdviz-train:0:{scene.index}"))]
    assert [s for _, s in default.samples] == expected  # the default mix is what it always was
    only = ShapesInstructions(n_scenes=8, seed=0, image_size=32, kinds=["presence"])
    assert len(only) == 16 and {s["kind"] for _, s in only.samples} == {"presence"}
    assert [only[i].absent for i in range(4)] == [False, True, False, True]
    assert only[0].route_words and only[1].regions == []


def test_jsonl_absent_is_read_and_checked(tmp_path):
    from PIL import Image

    Image.new("RGB", (32, 32)).save(tmp_path / "a.png")
    turns = [{"from": "human", "value": "<image>\nIs there a red circle?"}, {"from": "gpt", "value": "no"}]
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"image": "a.png", "conversations": turns, "absent": True}) + "\n"
                    + json.dumps({"image": "a.png", "conversations": turns}) + "\n"
                    + json.dumps({"image": "a.png", "conversations": turns, "absent": "yes"}) + "\n")
    data = JsonlConversations(path)
    assert (data[0].absent, data[1].absent) == (True, False)
    with pytest.raises(DataError, match="'absent' must be true or false"):
        data[2]


def test_presence_loss_counts_the_row_off_the_image_against_eager_attention(tmp_path):
    path = build_tiny("llava", tmp_path / "m", n_layers=3, n_heads=2, hidden=32, image_size=48, patch_size=8, seed=5)
    model = load_model(path)
    data = ShapesInstructions(n_scenes=6, seed=0, image_size=48, kinds=["presence"])
    enc = encode(model, [data[i] for i in range(4)])
    absent = [b for b, gone in enumerate(enc.absent) if gone]
    assert absent == [1, 3]
    with torch.no_grad(), TrainCapture(model, [1, 2], enc.spans, answer_query_rows(enc), block_layers=[],
                                       row_layers=[1, 2]) as cap:
        model.model.model(**enc.inputs, use_cache=False)
    loss = float(presence_from_rows(cap.rows, [1, 2], enc.spans, absent))
    answer = eager_answer_rows(path, enc, (1, 2))
    terms = [-math.log(1 - float(answer[b, layer][slice(*enc.spans[b])].sum())) for b in absent for layer in (1, 2)]
    assert loss == pytest.approx(sum(terms) / len(terms), rel=1e-4)


def test_with_presence_on_a_not_there_answer_leaves_the_grounding_loss(tmp_path):
    """A match query answered "no" names objects (its regions), but with presence on it is the
    presence loss's: the grounding loss is the same as over the "yes" samples alone."""
    from cdviz.train.step import DistillForward, distill_forward

    path = build_tiny("llava", tmp_path / "m", n_layers=3, n_heads=2, hidden=32, image_size=48, patch_size=8, seed=5)
    model = load_model(path)
    data = ShapesInstructions(n_scenes=6, seed=0, image_size=48, kinds=["match"])
    picked = [i for i in range(len(data)) if data[i].regions][:6]
    examples = [data[i] for i in picked]
    assert {ex.absent for ex in examples} == {True, False}
    kept = [ex for ex in examples if not ex.absent]

    def parts(exs, **weights):
        settings = LossSettings({"ce": 1.0, "ground": 1.0, **weights}, ground_layers=[1, 2], ground_share="row")
        with torch.no_grad():
            return distill_forward(DistillForward(model.model, settings), settings, model, None, encode(model, exs), None)

    both = parts(examples, presence=1.0)
    assert float(both["ground"]) == pytest.approx(float(parts(kept)["ground"]), rel=1e-5)
    gone = [ex for ex in examples if ex.absent]  # without presence they are grounded like the others
    mixed = (len(kept) * float(parts(kept)["ground"]) + len(gone) * float(parts(gone)["ground"])) / len(examples)
    assert float(parts(examples)["ground"]) == pytest.approx(mixed, rel=1e-5)
    assert math.isfinite(float(both["presence"])) and float(both["presence"]) > 0


def test_training_with_presence_logs_it_and_moves_the_row_off_the_image(tmp_path):
    init = build_tiny("llava", tmp_path / "init", n_layers=2, hidden=32, seed=7)
    rows = loss_curve(init, tmp_path / "presence", "presence", 1.0, kinds=["presence"], ground_layers=[1])
    first = sum(r["loss/presence"] for r in rows[:5]) / 5
    last = sum(r["loss/presence"] for r in rows[-5:]) / 5
    assert all(math.isfinite(r["loss/presence"]) for r in rows) and last < first - 0.3
