"""Adapters on tiny random checkpoints saved to disk and reloaded through load_model."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from cdviz.models import AdapterError, check_pair, format_choice_prompt, load_model, load_pair
from cdviz.models.base import find_runs


def test_find_runs_exact():
    ids = torch.tensor([5, 9, 9, 9, 1, 9, 2, 9, 9])
    assert find_runs(ids, 9) == [(1, 4), (5, 6), (7, 9)]
    assert find_runs(ids, 7) == []


def test_spans_match_image_token_positions(tiny_model_dir, arch):
    adapter = load_model(tiny_model_dir(arch))
    images = [Image.new("RGB", (40, 40), (255, 0, 0)), Image.new("RGB", (64, 48), (0, 0, 255))]
    texts = [format_choice_prompt("Which caption best describes the image?", ["a red circle", "a blue square"]),
             "a red circle ."]
    batch = adapter.build_batch(images, texts)
    ids = batch.inputs["input_ids"]
    for b in range(ids.shape[0]):
        positions = torch.nonzero(ids[b] == adapter.image_token_id).flatten().tolist()
        (start, end), = batch.image_spans[b]
        assert positions == list(range(start, end))
        rows, cols = batch.grids[b][0]
        assert rows * cols == end - start
        # right padding: the answer position is the last attended token
        assert batch.inputs["attention_mask"][b, batch.answer_pos[b]] == 1
        assert batch.inputs["attention_mask"][b, batch.answer_pos[b] + 1:].sum() == 0
    assert adapter.n_layers == 2 and adapter.n_heads == 4 and adapter.n_kv_heads == 2
    assert len(adapter.attention_modules()) == 2


def test_padding_does_not_change_answer_logits(tiny_model_dir, arch):
    adapter = load_model(tiny_model_dir(arch))
    img = Image.new("RGB", (40, 40), (0, 200, 0))
    short, long = "a circle .", format_choice_prompt("Which caption best describes the image?", ["a", "b"])
    batch = adapter.build_batch([img, img], [short, long])
    single = adapter.build_batch([img], [short])
    with torch.no_grad():
        both = adapter.model(**batch.inputs).logits
        alone = adapter.model(**single.inputs).logits
    torch.testing.assert_close(both[0, batch.answer_pos[0]], alone[0, single.answer_pos[0]], atol=1e-5, rtol=1e-5)


def test_letter_tokens_are_distinct_single_letters(tiny_model_dir, arch):
    adapter = load_model(tiny_model_dir(arch))
    ids = adapter.letter_token_ids(4)
    assert len(set(ids)) == 4
    assert [adapter.tokenizer.decode([i]).strip() for i in ids] == ["A", "B", "C", "D"]


def test_unknown_architecture_lists_supported(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["MysteryVLM"]}))
    with pytest.raises(AdapterError, match="MysteryVLM.*LlavaForConditionalGeneration"):
        load_model(tmp_path)


def test_missing_processor_is_named(tiny_model_dir, tmp_path):
    src = tiny_model_dir("llava")
    for name in ("config.json", "model.safetensors"):
        (tmp_path / name).write_bytes((src / name).read_bytes())
    with pytest.raises(AdapterError, match="no usable processor"):
        load_model(tmp_path)


def test_not_a_directory(tmp_path):
    with pytest.raises(AdapterError, match="not a directory"):
        load_model(tmp_path / "nope")


def test_pair_checks(tiny_model_dir, tmp_path):
    from cdviz.models.tiny import build_tiny

    teacher, student, report = load_pair(tiny_model_dir("llava"), tiny_model_dir("llava"))
    assert report.ok
    other = build_tiny("llava", tmp_path / "other", vocabulary=["zebra", "a", "b", "A", "B", "C", "D"])
    report = check_pair(teacher, load_model(other))
    assert not report.ok
    assert any("tokenizers differ" in e for e in report.errors)
    with pytest.raises(AdapterError, match="cannot be distilled"):
        load_pair(tiny_model_dir("llava"), other)
