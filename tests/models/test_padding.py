"""Every adapter owns its padding: a checkpoint whose tokenizer pads on the left scores the same
in a batch of items of different lengths as one item at a time."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from cdviz.evaluate import answer_logits, evaluate
from cdviz.models import format_choice_prompt, load_model
from cdviz.probes.probeset import load_probeset, save_probeset
from cdviz.probes.shapes import make_shapes
from cdviz.types import ProbeItem


@pytest.fixture
def left_padded(tiny_model_dir, arch, tmp_path):
    """A copy of the tiny ``arch`` checkpoint whose saved tokenizer pads on the left."""
    out = shutil.copytree(tiny_model_dir(arch), tmp_path / f"{arch}-left")
    config = out / "tokenizer_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "padding_side": "left"}))
    adapter = load_model(out)
    assert adapter.tokenizer.padding_side == "left"
    return adapter


TEXTS = [
    "a circle .",
    format_choice_prompt("Which caption best describes the image?", ["a red circle", "a blue square"]),
    "red",
    format_choice_prompt("What colour is the circle?", ["red", "blue", "green", "yellow"]),
    "a blue square left of a red circle .",
    "Does this image show \"a red circle\"? Answer yes or no.",
    "square",
    format_choice_prompt("Which is left?", ["the circle", "the square"]),
]


def test_batch_of_eight_matches_one_at_a_time(left_padded):
    images = [Image.new("RGB", (40 + 4 * i, 40), (30 * i, 200 - 20 * i, 90)) for i in range(len(TEXTS))]
    uids = [f"s{i}" for i in range(len(TEXTS))]
    batch = left_padded.build_batch(images, TEXTS, uids)
    mask = batch.inputs["attention_mask"]
    assert len(set(mask.sum(1).tolist())) > 1, "the texts must differ in length for padding to matter"
    assert bool((mask[:, 0] == 1).all()), "padded on the left"
    together = answer_logits(left_padded, images, TEXTS, uids)
    for i in range(len(TEXTS)):
        alone = answer_logits(left_padded, images[i:i + 1], TEXTS[i:i + 1], uids[i:i + 1])
        torch.testing.assert_close(together[i], alone[0], atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def mixed_probes(tmp_path_factory):
    """Shapes choice items plus a Winoground-style match2x2 item built from two of their images."""
    ps = make_shapes(tmp_path_factory.mktemp("mixed"), n=6, seed=11, image_size=32)
    a, b = ps.items[0], ps.items[1]
    match = ProbeItem(uid="match-0", source="test", category="swap_att", kind="match2x2",
                      images=(a.images[0], b.images[0]), options=(a.options[a.correct], b.options[b.correct]),
                      correct=0)
    save_probeset([*ps.items, match], ps.root, name="mixed")
    return load_probeset(ps.root)


def test_eval_outcomes_at_batch_8_equal_batch_1(left_padded, mixed_probes):
    big, _ = evaluate(left_padded, mixed_probes, batch_size=8)
    one, _ = evaluate(left_padded, mixed_probes, batch_size=1)
    assert (big.kind == "match2x2").sum() == 4
    assert big.correct.tolist() == one.correct.tolist()
    assert big.chosen.tolist() == one.chosen.tolist()
    np.testing.assert_allclose(big.margin, one.margin, atol=1e-5, equal_nan=True)
    np.testing.assert_allclose(big.score, one.score, atol=1e-5, equal_nan=True)
    assert np.isfinite(big.score[big.kind == "match2x2"]).all()
