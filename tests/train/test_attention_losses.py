"""VAT and text-to-image terms from captured attention: equal to cdviz.vat / eager attention."""

from __future__ import annotations

import pytest
import torch

from cdviz.metrics import js_divergence
from cdviz.models import load_model
from cdviz.record import Capture, CapturePlan, SamplePlan
from cdviz.train.data import ShapesInstructions, encode
from cdviz.layer_map import LayerMap, default_layer_map
from cdviz.train.losses import TrainCapture, t2i_from_rows, vat_from_blocks
from cdviz.train.step import answer_query_rows, backbone
from cdviz.vat import vat_loss


@pytest.fixture(scope="module")
def loaded(pair_dirs):
    teacher, student = (load_model(d) for d in pair_dirs)
    source = ShapesInstructions(n_scenes=4, seed=0, image_size=32)
    examples = [source[i] for i in (0, 5, 9)]
    return teacher, student, encode(teacher, examples), encode(student, examples)


def test_vat_wrapper_equals_vat_loss_on_capture_blocks(loaded):
    teacher, student, t_enc, s_enc = loaded
    lm = LayerMap((1, 2), ((2, 3), (3, 4, 5)))  # overlapping groups of several layers
    with torch.no_grad(), TrainCapture(teacher, lm.teacher_layers, t_enc.spans) as t_cap:
        backbone(teacher.model, t_enc)
    with TrainCapture(student, lm.student_layers, s_enc.spans) as s_cap:
        backbone(student.model, s_enc)
    got = vat_from_blocks(s_cap.blocks, t_cap.blocks, lm.student_layers, lm.teacher_groups, [0, 1, 2],
                          s_enc.grids, t_enc.grids)

    # The same blocks from the plain Capture (store_block: the recorder's path, no gradients).
    def blocks(adapter, enc, layers):
        plan = CapturePlan(layers, [SamplePlan(sp, [0]) for sp in enc.spans], store_block=True)
        with torch.no_grad(), Capture(adapter, plan) as cap:
            backbone(adapter.model, enc)
        return {layer: cap.results[layer].i2i_block for layer in layers}

    sb, tb = blocks(student, s_enc, list(lm.student_layers)), blocks(teacher, t_enc, lm.teacher_layers)
    s = torch.stack([torch.stack([sb[layer][b] for layer in lm.student_layers]) for b in range(3)])  # [B, L, N, N]
    t = torch.stack([torch.stack([torch.stack([tb[x][b] for x in g]).mean(0) for g in lm.teacher_groups])
                     for b in range(3)])
    expected = vat_loss(s, t, True, s_enc.grids[0], t_enc.grids[0])
    assert got.item() == pytest.approx(expected.item(), abs=1e-6)
    assert got.item() > 1e-3  # sharpened models disagree: the test is not comparing zeros

    got.backward()
    grads = [p.grad for p in student.language_model().parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    assert all(p.grad is None for p in teacher.model.parameters())


def test_vat_per_sample_path_equals_batched(loaded):
    teacher, student, t_enc, s_enc = loaded
    lm = default_layer_map(student.n_layers, teacher.n_layers)
    with torch.no_grad():
        with TrainCapture(teacher, lm.teacher_layers, t_enc.spans) as t_cap:
            backbone(teacher.model, t_enc)
        with TrainCapture(student, lm.student_layers, s_enc.spans) as s_cap:
            backbone(student.model, s_enc)
    args = (s_cap.blocks, t_cap.blocks, lm.student_layers, lm.teacher_groups)
    batched = vat_from_blocks(*args, [0, 1, 2], s_enc.grids, t_enc.grids)
    singles = [vat_from_blocks(*args, [b], s_enc.grids, t_enc.grids) for b in range(3)]
    assert batched.item() == pytest.approx(torch.stack(singles).mean().item(), abs=1e-6)


def test_t2i_rows_equal_eager_attention(loaded):
    _, student, _, s_enc = loaded
    rows = answer_query_rows(s_enc)
    layers = list(range(student.n_layers))
    with torch.no_grad(), TrainCapture(student, layers, s_enc.spans, rows) as cap:
        backbone(student.model, s_enc)
    student.model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            eager = student.model(**s_enc.inputs, output_attentions=True).attentions  # L x [B, H, T, T]
    finally:
        student.model.set_attn_implementation("sdpa")
    for layer in layers:
        for b, (start, end) in enumerate(s_enc.spans):
            expected = eager[layer][b, :, rows[b], start:end].mean(0)  # [1, N]
            torch.testing.assert_close(cap.t2i[layer][b], expected, atol=1e-5, rtol=0)


def test_t2i_loss_is_js_summed_over_layers(loaded):
    teacher, student, t_enc, s_enc = loaded
    lm = default_layer_map(student.n_layers, teacher.n_layers)
    with torch.no_grad():
        with TrainCapture(teacher, lm.teacher_layers, t_enc.spans, answer_query_rows(t_enc)) as t_cap:
            backbone(teacher.model, t_enc)
        with TrainCapture(student, lm.student_layers, s_enc.spans, answer_query_rows(s_enc)) as s_cap:
            backbone(student.model, s_enc)
    got = t2i_from_rows(s_cap.t2i, t_cap.t2i, lm.student_layers, lm.teacher_groups, [0, 2], s_enc.grids, t_enc.grids)
    expected = []
    for b in (0, 2):
        s = torch.cat([s_cap.t2i[layer][b] for layer in lm.student_layers])  # [L, N]
        t = torch.cat([torch.stack([t_cap.t2i[x][b] for x in g]).mean(0) for g in lm.teacher_groups])
        expected.append(js_divergence(s, t).sum())
    assert got.item() == pytest.approx(torch.stack(expected).mean().item(), abs=1e-6)
    with pytest.raises(ValueError, match="unknown text-to-image metric"):
        t2i_from_rows(s_cap.t2i, t_cap.t2i, lm.student_layers, lm.teacher_groups, [0], s_enc.grids, t_enc.grids,
                      metric="l2")
