"""Captured probabilities equal eager attention's; the model's outputs stay the SDPA outputs."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from cdviz.vat import vat_received, vat_threshold, vat_vectors, visible_entries
from cdviz.models import format_choice_prompt, load_model
from cdviz.record import Capture, CapturePlan, SamplePlan
from cdviz.record.capture import received_filtered


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
            # an entry counts only if it exists (non-zero: a causal block's upper triangle does not)
            keep = visible_entries(block) & (block <= vat_threshold(block)[..., None, None])
            torch.testing.assert_close(res.i2i_filt[b], vat_received(block, keep), atol=1e-5, rtol=0)
            mean_block = block.mean(0)
            paper_keep = visible_entries(mean_block) & (mean_block <= vat_threshold(mean_block))
            torch.testing.assert_close(res.i2i_paper[b], vat_received(mean_block, paper_keep), atol=1e-5, rtol=0)
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


def _record(adapter, batch, **plan_options):
    plan = CapturePlan(list(range(adapter.n_layers)),
                       [SamplePlan(batch.image_spans[b][0], _text_rows(batch, b)) for b in range(2)], **plan_options)
    with torch.no_grad(), Capture(adapter, plan) as cap:
        adapter.model(**batch.inputs)
    return cap


FIELDS = ("t2i", "mass", "entropy", "i2i", "i2i_filt", "i2i_paper", "i2i_block")


def test_chunked_image_rows_record_the_same(tiny_model_dir):
    """Image rows split into chunks of 3 (each cut at the keys it sees) give the one-product values."""
    adapter = load_model(tiny_model_dir("llava"))
    batch = _batch(adapter)
    assert all(end - start > 3 for (start, end), in batch.image_spans), "the test needs several chunks"
    whole = _record(adapter, batch, store_block=True)
    chunked = _record(adapter, batch, store_block=True, row_chunk=3)
    for layer in whole.results:
        for name in FIELDS:
            for got, want in zip(getattr(chunked.results[layer], name), getattr(whole.results[layer], name)):
                torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("row_chunk", [1024, 3])
def test_training_mode_keeps_what_recording_records(tiny_model_dir, row_chunk):
    """with_grad is the same capture: its blocks and rows are recording's head means, with gradients."""
    adapter = load_model(tiny_model_dir("llava"))
    batch = _batch(adapter)
    rec = _record(adapter, batch, store_block=True)
    layers = list(range(adapter.n_layers))
    plan = CapturePlan(layers, [SamplePlan(batch.image_spans[b][0], _text_rows(batch, b)) for b in range(2)],
                       with_grad=True, block_layers=[0, 1], row_layers=[1], row_chunk=row_chunk)
    with Capture(adapter, plan) as cap:
        adapter.model(**batch.inputs)
    assert sorted(cap.blocks) == [0, 1] and sorted(cap.t2i) == layers and sorted(cap.rows) == [1]
    assert not any(cap.results[layer].t2i for layer in layers)  # nothing recorded in this mode
    for layer in layers:
        for b in range(2):
            (start, end), = batch.image_spans[b]
            want_t2i = rec.results[layer].t2i[b].mean(0)  # [Q, N]
            torch.testing.assert_close(cap.t2i[layer][b], want_t2i, atol=1e-6, rtol=1e-5)
            assert cap.t2i[layer][b].requires_grad
            if layer in cap.blocks:
                torch.testing.assert_close(cap.blocks[layer][b], rec.results[layer].i2i_block[b], atol=1e-6, rtol=1e-5)
            if layer in cap.rows:
                torch.testing.assert_close(cap.rows[layer][b][:, start:end], want_t2i, atol=1e-6, rtol=1e-5)
                torch.testing.assert_close(cap.rows[layer][b].sum(-1), torch.ones(len(_text_rows(batch, b))))
    sum(cap.blocks[1][b].sum() for b in range(2)).backward()
    grads = [p.grad for p in adapter.language_model().layers[1].self_attn.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)


# ------------------------------------------------- received_filtered agrees with cdviz.vat

def _softmax_block(gen: torch.Generator, shape: tuple[int, ...], n: int, causal: bool) -> torch.Tensor:
    """Softmax attention [..., n, n] over random scores; causal: query q sees keys <= q."""
    scores = torch.randn(*shape, n, n, generator=gen, dtype=torch.float64) * 2
    if causal:
        scores = scores.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
    return torch.softmax(scores, -1).float()


def _vat_reference(block: torch.Tensor) -> torch.Tensor:
    """cdviz.vat's received vector of one block: the same block as student and teacher."""
    vis = visible_entries(block)
    s_vec, t_vec = vat_vectors(block, block, filter=True, student_visible=vis, teacher_visible=vis)
    torch.testing.assert_close(s_vec, t_vec, atol=0, rtol=0)
    return s_vec


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("shape", [(), (3,), (2, 4)])
def test_received_filtered_equals_vat_vectors(causal, shape):
    gen = torch.Generator().manual_seed(7 + len(shape) + 10 * causal)
    for n in (2, 5, 9, 16):
        block = _softmax_block(gen, shape, n, causal)
        assert ((block == 0).any() if causal and n > 1 else (block > 0).all())
        got = received_filtered(block)
        assert got.shape == (*shape, n)
        torch.testing.assert_close(got, _vat_reference(block), atol=1e-6, rtol=0)


def test_received_filtered_causal_counts_only_visible_queries():
    """Hand example: a 3x3 lower-triangular block; each key averages only the queries that see it."""
    block = torch.tensor([[1.0, 0.0, 0.0],
                          [0.5, 0.5, 0.0],
                          [0.2, 0.3, 0.5]])
    # mean 1/3, sample std 0.3536 -> threshold 0.6869: only the 1.0 is dropped
    want = torch.tensor([(0.5 + 0.2) / 2, (0.5 + 0.3) / 2, 0.5 / 1])
    torch.testing.assert_close(received_filtered(block), want, atol=1e-6, rtol=0)
    # the old normaliser (every kept entry, masked zeros included) shrank the late keys
    old = torch.tensor([(0.5 + 0.2) / 2, (0.5 + 0.3) / 3, 0.5 / 3])
    assert not torch.allclose(received_filtered(block), old)
    # a full block with the same values is unaffected: nothing is zero
    full = torch.tensor([[0.4, 0.3, 0.3], [0.5, 0.25, 0.25], [0.2, 0.3, 0.5]])
    keep = full <= vat_threshold(full)
    torch.testing.assert_close(received_filtered(full), vat_received(full, keep), atol=1e-6, rtol=0)


def test_received_filtered_on_captured_causal_blocks(tiny_model_dir):
    """On the tiny LLaVA's real (causal) image blocks capture's vectors equal cdviz.vat's."""
    adapter = load_model(tiny_model_dir("llava"))
    batch = _batch(adapter)
    layers = list(range(adapter.n_layers))
    plan = CapturePlan(layers, [SamplePlan(batch.image_spans[b][0], _text_rows(batch, b)) for b in range(2)],
                       store_block=True)
    with torch.no_grad(), Capture(adapter, plan) as cap:
        adapter.model(**batch.inputs)
    for layer in layers:
        res = cap.results[layer]
        for b in range(2):
            block = res.i2i_block[b]
            lower = torch.ones_like(block, dtype=torch.bool).tril()
            assert (block[~lower] == 0).all() and (block[lower] > 0).all(), "expected a causal image block"
            torch.testing.assert_close(res.i2i_paper[b], _vat_reference(block), atol=1e-6, rtol=0)
