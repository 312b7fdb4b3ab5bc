"""The grounding loss: which objects each shapes sample is about, their patches, the loss and its training."""

from __future__ import annotations

import math
import random

import pytest
import torch

from cdviz.models import load_model
from cdviz.models.tiny import build_tiny
from cdviz.probes.shapes import instruction_samples
from cdviz.probes.shapes_scene import POSITIONS, REL_ANSWER, generate_scenes
from cdviz.train import ConfigError, TrainConfig
from cdviz.train.data import Example, ShapesInstructions, encode
from cdviz.train.losses import grounding_from_rows
from cdviz.train.recipe import ground_layers
from tests.train.conftest import eager_answer_rows, loss_curve


def _scenes(n=40, image_size=48):
    return list(generate_scenes(0, image_size, splits=("train",), n=n))


def _question_type(q: str) -> str:
    for start, kind in (("What colour is", "colour"), ("Is there", "exists"), ("How many", "count")):
        if q.startswith(start):
            return kind
    return "relation" if "relative to" in q else "where"


def test_each_question_names_the_objects_its_answer_is_about():
    seen = set()
    for scene in _scenes():
        for s in instruction_samples(scene, random.Random(scene.index)):
            objs, q, a = s["objects"], s["prompt"], s["answer"]
            assert all(0 <= i < len(scene.objects) for i in objs)
            if s["kind"] in ("choice", "match"):  # the probe item's named objects (checked in tests/probes)
                seen.add(s["kind"])
                assert s["kind"] == "choice" or a in ("yes", "no")
                continue
            if s["kind"] == "qa":
                assert s["question"] == _question_type(q)
            if q.startswith("What colour is"):
                seen.add("colour")
                assert len(objs) == 1 and scene.objects[objs[0]].colour == a
            elif q.startswith("Where is") and "relative to" in q:
                seen.add("relation")
                i, j = objs
                assert REL_ANSWER[scene.relations(i, j)[0]] == a
            elif q.startswith("Where is"):
                seen.add("position")
                o = scene.objects[objs[0]]
                assert POSITIONS[o.row, o.col] == a
            elif q.startswith("Is there"):
                seen.add("exists-" + a)
                assert (len(objs) > 0) == (a == "yes")
            elif s["kind"] == "caption":
                assert objs == list(range(len(scene.objects)))
    assert seen == {"choice", "match", "colour", "relation", "position", "exists-yes", "exists-no"}


def test_regions_become_the_patches_under_the_named_object(tmp_path):
    model = load_model(build_tiny("llava", tmp_path / "m", n_layers=1, hidden=32, image_size=48, patch_size=8))
    data = ShapesInstructions(n_scenes=3, seed=0, image_size=48)
    k = next(i for i, (_, s) in enumerate(data.samples) if s["prompt"].startswith("What colour"))
    ex = data[k]
    (box,) = ex.regions
    plain = Example("plain", ex.messages, ex.image)  # no regions: no grounding target
    enc = encode(model, [ex, plain])
    cover = enc.regions[0].reshape(enc.grids[0])
    assert enc.regions[1] is None
    rows, cols = torch.nonzero(cover > 0, as_tuple=True)
    # The touched patches are exactly those the box overlaps (8 px patches on a 48 px image).
    assert rows.min() == int(box["y"] // 8) and rows.max() == int((box["y"] + box["h"] - 1) // 8)
    assert cols.min() == int(box["x"] // 8) and cols.max() == int((box["x"] + box["w"] - 1) // 8)
    assert float(cover.sum()) == pytest.approx(box["w"] * box["h"] / 64)


def test_loss_is_minus_log_of_the_image_attention_share_on_the_regions():
    t2i = {0: [torch.tensor([[0.1, 0.3, 0.1, 0.1]])], 1: [torch.tensor([[0.05, 0.05, 0.3, 0.0]])]}
    regions = [torch.tensor([0.0, 0.5, 1.0, 0.0])]  # any overlap counts the patch in
    got = grounding_from_rows(t2i, [0, 1], regions, [0])
    want = (-math.log(0.4 / 0.6) - math.log(0.35 / 0.4)) / 2
    assert float(got) == pytest.approx(want, rel=1e-6)
    assert float(grounding_from_rows({0: [torch.tensor([[0.0, 0.2, 0.0, 0.0]])]}, [0], regions, [0])) == \
        pytest.approx(0.0, abs=1e-6)


def test_a_gradient_step_moves_attention_onto_the_regions():
    logits = torch.zeros(1, 6, requires_grad=True)
    regions = [torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0, 0.0])]

    def share():
        p = torch.softmax(logits, -1)
        return float(p[0, 2] / p.sum())

    before = share()
    loss = grounding_from_rows({3: [torch.softmax(logits, -1)]}, [3], regions, [0])
    loss.backward()
    with torch.no_grad():
        logits -= 1.0 * logits.grad
    assert share() > before + 0.05


def test_ground_layers_default_to_the_middle_band_and_are_checked():
    assert ground_layers(None, 6) == [2, 3]
    assert ground_layers(None, 3) == [1]
    assert ground_layers(None, 1) == [0]
    assert ground_layers([3, 1, 3], 4) == [1, 3]
    with pytest.raises(ConfigError, match="layers 0..3"):
        ground_layers([4], 4)


def test_training_with_grounding_logs_it_and_pulls_attention_onto_the_objects(tmp_path):
    init = build_tiny("llava", tmp_path / "init", n_layers=2, hidden=32, seed=7)

    def run(name, ground):
        return loss_curve(init, tmp_path / name, "ground", ground, ground_layers=[1])

    rows = run("ground", 1.0)
    first = sum(r["loss/ground"] for r in rows[:5]) / 5
    last = sum(r["loss/ground"] for r in rows[-5:]) / 5
    assert all(math.isfinite(r["loss/ground"]) for r in rows) and last < first - 0.1
    assert all("loss/ground" not in r for r in run("plain", 0.0))


def test_shapes_kinds_selects_the_samples_and_is_checked():
    qa = ShapesInstructions(n_scenes=5, seed=0, image_size=32, kinds=["qa"])
    both = ShapesInstructions(n_scenes=5, seed=0, image_size=32, kinds=["qa", "caption"])
    every = ShapesInstructions(n_scenes=5, seed=0, image_size=32)
    assert {s["kind"] for _, s in qa.samples} == {"qa"}
    assert len(qa) + sum(s["kind"] == "caption" for _, s in every.samples) == len(both) < len(every)
    colour = ShapesInstructions(n_scenes=5, seed=0, image_size=32, kinds=["qa:colour", "qa:exists"])
    assert {s["question"] for _, s in colour.samples} == {"colour", "exists"}
    assert all(s["prompt"].startswith(("What colour is", "Is there")) for _, s in colour.samples)
    with pytest.raises(ConfigError, match="shapes_kinds"):
        TrainConfig(student="s", out="o", stages=["ce"], shapes_kinds=["questions"])


def test_row_share_grounding_counts_the_whole_row_against_eager_attention(tmp_path):
    """ground_share="row": -log of the answer row's attention (over every token) on the region
    patches, checked against transformers' eager attention; the image share is never smaller."""
    from cdviz.train.losses import TrainCapture
    from cdviz.train.step import answer_query_rows

    path = build_tiny("llava", tmp_path / "m", n_layers=3, n_heads=2, hidden=32, image_size=48, patch_size=8, seed=5)
    model = load_model(path)
    data = ShapesInstructions(n_scenes=6, seed=0, image_size=48, kinds=["qa:colour"])
    enc = encode(model, [data[i] for i in range(3)])
    samples = [b for b, r in enumerate(enc.regions) if r is not None]
    assert len(samples) == 3
    with torch.no_grad(), TrainCapture(model, [1, 2], enc.spans, answer_query_rows(enc), block_layers=[],
                                       row_layers=[1, 2]) as cap:
        model.model.model(**enc.inputs, use_cache=False)
    row = float(grounding_from_rows(cap.t2i, [1, 2], enc.regions, samples, rows=cap.rows, spans=enc.spans))
    image = float(grounding_from_rows(cap.t2i, [1, 2], enc.regions, samples))
    answer = eager_answer_rows(path, enc, (1, 2))
    terms = []
    for b in samples:
        start, end = enc.spans[b]
        for layer in (1, 2):
            p = answer[b, layer][start:end]  # [N] head mean over the image, not renormalised
            terms.append(-math.log(float(p[enc.regions[b] > 0].sum())))
    assert row == pytest.approx(sum(terms) / len(terms), rel=1e-4)
    assert row > image  # the image holds only part of the row's attention
    with pytest.raises(ConfigError, match="ground_share"):
        TrainConfig(student="s", out="o", stages=["ce"], ground_share="image+row")
