"""The route loss: which prompt tokens name the asked-about objects, the loss against eager
attention computed by transformers itself, its layers, and its training."""

from __future__ import annotations

import math

import pytest
import torch

from cdviz.models import load_model
from cdviz.models.tiny import build_tiny
from cdviz.train import ConfigError, TrainConfig
from cdviz.train.data import Example, ShapesInstructions, encode, naming_words
from cdviz.train.losses import TrainCapture, routing_from_rows
from cdviz.train.recipe import route_layers
from cdviz.train.step import answer_query_rows
from tests.train.conftest import eager_answer_rows, loss_curve

def test_naming_words_are_the_attribute_words_of_questions_and_match_queries():
    data = ShapesInstructions(n_scenes=4, seed=0, image_size=32)
    kinds = {}
    for _, s in data.samples:
        kinds.setdefault(s["kind"], []).append(naming_words(s))
    assert all(w is None for w in kinds["caption"] + kinds["choice"])
    colour = [naming_words(s) for _, s in data.samples
              if s["kind"] == "qa" and s["prompt"].startswith("What colour is the ")]
    assert colour and all(w and set(w) <= {"small", "large", "circle", "square", "triangle", "cross"} for w in colour)
    assert naming_words({"kind": "qa", "prompt": "Is there a red circle in the image?"}) == ["red", "circle"]
    assert naming_words({"kind": "qa", "prompt": "How many crosses are there?"}) == ["crosses"]
    assert naming_words({"kind": "match", "prompt": "Is it in the image?"}) is None


def test_route_tokens_are_exactly_the_prompt_tokens_of_those_words(tmp_path):
    model = load_model(build_tiny("llava", tmp_path / "m", n_layers=1, hidden=32, image_size=32, patch_size=8))
    data = ShapesInstructions(n_scenes=3, seed=0, image_size=32, kinds=["qa:exists"])
    ex = data[0]
    enc = encode(model, [ex, Example("plain", ex.messages, ex.image)])
    assert enc.route[1] is None
    tokens = model.tokenizer.convert_ids_to_tokens(enc.inputs["input_ids"][0].tolist())
    marked = [tokens[i] for i in torch.nonzero(enc.route[0]).flatten().tolist()]
    assert marked == ex.route_words  # "Is there a red circle in the image?" -> [red, circle], in order
    assert int(torch.nonzero(enc.route[0]).max()) < enc.prompt_end[0]  # never the answer's own tokens


def test_loss_matches_eager_attention_from_transformers(tmp_path):
    """-log of the head-mean answer-row attention on the route tokens, against output_attentions."""
    path = build_tiny("llava", tmp_path / "m", n_layers=3, n_heads=2, hidden=32, image_size=32, patch_size=8, seed=3)
    model = load_model(path)
    data = ShapesInstructions(n_scenes=6, seed=0, image_size=32, kinds=["qa:colour", "qa:exists"])
    examples = [data[i] for i in range(4)]
    enc = encode(model, examples)
    samples = [b for b, r in enumerate(enc.route) if r is not None]
    assert len(samples) == 4
    with torch.no_grad(), TrainCapture(model, [0, 2], enc.spans, answer_query_rows(enc), block_layers=[],
                                       row_layers=[0, 2]) as cap:
        model.model.model(**enc.inputs, use_cache=False)
    got = float(routing_from_rows(cap.rows, [0, 2], enc.route, samples))

    rows = eager_answer_rows(path, enc, (0, 2))
    terms = [-math.log(float(rows[b, layer][enc.route[b]].sum())) for b in samples for layer in (0, 2)]
    assert got == pytest.approx(sum(terms) / len(terms), rel=1e-4)


def test_route_layers_default_below_the_grounding_band_and_are_checked():
    assert route_layers(None, 6, [2, 3]) == [0, 1]
    assert route_layers(None, 3, [1]) == [0]
    assert route_layers(None, 1, [0]) == [0]
    assert route_layers([2, 0, 2], 4, [1]) == [0, 2]
    with pytest.raises(ConfigError, match="layers 0..3"):
        route_layers([4], 4, [1])
    with pytest.raises(ConfigError, match="route_layers"):
        TrainConfig(student="s", out="o", stages=["ce"], route_layers=[])


def test_training_with_the_route_loss_logs_it_and_pulls_the_answer_row_onto_the_words(tmp_path):
    init = build_tiny("llava", tmp_path / "init", n_layers=2, hidden=32, seed=7)

    def run(name, route):
        return loss_curve(init, tmp_path / name, "route", route, route_layers=[0])

    rows = run("route", 1.0)
    first = sum(r["loss/route"] for r in rows[:5]) / 5
    last = sum(r["loss/route"] for r in rows[-5:]) / 5
    assert all(math.isfinite(r["loss/route"]) for r in rows) and last < first - 0.3
    assert all("loss/route" not in r for r in run("plain", 0.0))
