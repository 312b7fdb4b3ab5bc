"""Captured probabilities equal eager attention's; the model's outputs stay the SDPA outputs."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from cdviz.vat import vat_received, vat_threshold
from cdviz.models import format_choice_prompt, load_model
from cdviz.record import Capture, CapturePlan, SamplePlan


def _batch(adapter):
    images = [Image.new("RGB", (40, 40), (255, 0, 0)), Image.new("RGB", (56, 56), (0, 0, 255))]
    texts = [format_choice_prompt("Which caption best describes the image?", ["a red circle", "a blue square"]),
             "a red circle ."]  # different lengths: the second sample is padded
    return adapter.build_batch(images, texts)


def _text_rows(batch, b):
    (start, end), = batch.image_spans[b]
    return [i for i in range(int(batch.answer_pos[b]) + 1) if not start <= i < end]


@pytest.mark.parametrize("store_block", [False, True])
def test_capture_matches_eager(tiny_model_dir, arch, store_block):
    adapter = load_model(tiny_model_dir(arch))
    batch = _batch(adapter)
    assert batch.inputs["attention_mask"].min() == 0, "the test needs a padded batch"
    with torch.no_grad():
        sdpa_logits = adapter.model(**batch.inputs).logits
    layers = list(range(adapter.n_layers))
    plan = CapturePlan(layers, [SamplePlan(batch.image_spans[b][0], _text_rows(batch, b)) for b in range(2)],
                       store_block=store_block)
    with torch.no_grad(), Capture(adapter, plan) as cap:
        logits = adapter.model(**batch.inputs).logits
    assert torch.equal(logits, sdpa_logits)
    assert adapter.model.config._attn_implementation == "sdpa"  # restored on exit

    adapter.model.set_attn_implementation("eager")
    with torch.no_grad():
        eager = adapter.model(**batch.inputs, output_attentions=True).attentions  # L x [B, H, T, T]
    adapter.model.set_attn_implementation("sdpa")
    for layer in layers:
        res = cap.results[layer]
        for b in range(2):
            (start, end), = batch.image_spans[b]
            rows = _text_rows(batch, b)
            full = eager[layer][b].float()  # [H, T, T]
            torch.testing.assert_close(res.t2i[b], full[:, rows, start:end], atol=1e-5, rtol=0)
            torch.testing.assert_close(res.mass[b], full[:, rows, start:end].sum(-1), atol=1e-5, rtol=0)
            p = full[:, rows]
            entropy = -(p * torch.log(p.clamp_min(1e-30))).sum(-1)
            torch.testing.assert_close(res.entropy[b], entropy, atol=1e-5, rtol=0)
            block = full[:, start:end, start:end]  # [H, N, N]
            torch.testing.assert_close(res.i2i[b], block.mean(1), atol=1e-5, rtol=0)
            keep = block <= vat_threshold(block)[..., None, None]
            torch.testing.assert_close(res.i2i_filt[b], vat_received(block, keep), atol=1e-5, rtol=0)
            if store_block:
                torch.testing.assert_close(res.i2i_block[b], block.mean(0), atol=1e-5, rtol=0)


def test_capture_with_grad_gives_differentiable_blocks(tiny_model_dir):
    adapter = load_model(tiny_model_dir("llava"))
    batch = _batch(adapter)
    plan = CapturePlan([1], [SamplePlan(batch.image_spans[b][0], []) for b in range(2)], with_grad=True)
    with Capture(adapter, plan) as cap:
        adapter.model(**batch.inputs)
    blocks = cap.blocks[1]
    assert len(blocks) == 2 and blocks[0].requires_grad
    blocks[0].sum().backward()
    grads = [p.grad for p in adapter.language_model().layers[1].self_attn.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    assert not cap.results[1].t2i  # nothing else was materialised
