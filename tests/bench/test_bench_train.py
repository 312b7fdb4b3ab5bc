"""`cdviz bench train` compares like with like: its (b) and (c) steps optimise the same loss."""

from __future__ import annotations

import pytest
import torch

from cdviz.bench.train import TrainBench, TrainBenchConfig

TINY = TrainBenchConfig(seq_len=64, image_tokens=16, answer_tokens=8, layers=3, hidden=64, heads=4, teacher_layers=5,
                        teacher_hidden=96, teacher_heads=4, vocab=256)


@pytest.fixture(scope="module")
def bench():
    bench = TrainBench(TINY)
    with torch.no_grad():  # peaked attention, so VAT between the two random models is not ~0
        for adapter, factor in ((bench.teacher, 12.0), (bench.student, 6.0)):
            for layer in adapter.decoder_layers():
                layer.self_attn.q_proj.weight.mul_(factor)
                layer.self_attn.k_proj.weight.mul_(factor)
    return bench


def _losses_and_grads(bench, variant):
    bench.optimizer.zero_grad(set_to_none=True)
    parts = bench.losses(variant)
    parts["loss"].backward()
    grads = {n: p.grad.clone() for n, p in bench.student.model.named_parameters() if p.grad is not None}
    bench.optimizer.zero_grad(set_to_none=True)
    return {k: v.item() for k, v in parts.items()}, grads


def test_cdviz_vat_equals_the_eager_reference(bench):
    cdviz, cdviz_grads = _losses_and_grads(bench, "ce+kd+vat")
    reference, reference_grads = _losses_and_grads(bench, "eager ref.")
    assert cdviz["vat"] > 1e-2  # the models disagree: the comparison is not between zeros
    for key in ("vat", "ce", "kd", "loss"):
        assert cdviz[key] == pytest.approx(reference[key], abs=1e-5), key
    assert cdviz_grads.keys() == reference_grads.keys()
    for name, grad in cdviz_grads.items():
        torch.testing.assert_close(grad, reference_grads[name], atol=1e-5, rtol=1e-4, msg=name)


def test_ce_kd_step_has_no_vat_and_the_same_ce_kd(bench):
    plain, _ = _losses_and_grads(bench, "ce+kd")
    with_vat, _ = _losses_and_grads(bench, "ce+kd+vat")
    assert "vat" not in plain
    assert plain["ce"] == pytest.approx(with_vat["ce"], abs=1e-6) and plain["kd"] == pytest.approx(with_vat["kd"],
                                                                                                     abs=1e-6)


def test_step_updates_only_the_student(bench):
    before = {n: p.clone() for n, p in bench.student.model.named_parameters()}
    teacher = {n: p.clone() for n, p in bench.teacher.model.named_parameters()}
    bench.step("ce+kd+vat")
    changed = [n for n, p in bench.student.model.named_parameters() if not torch.equal(p, before[n])]
    assert any("language_model" in n for n in changed) and not any("vision_tower" in n for n in changed)
    assert all(torch.equal(p, teacher[n]) for n, p in bench.teacher.model.named_parameters())
