"""Tiny LLaVA teacher / student checkpoints for the trainer tests, built once per session.

The teacher's query / key weights are scaled up so its attention is peaked rather than the
near-uniform attention of a random init; otherwise VAT between two random models is ~0.
"""

from __future__ import annotations

import pytest
import torch

from cdviz.models.tiny import build_tiny
from transformers import LlavaForConditionalGeneration


def sharpen(model_dir, factor: float = 12.0):
    """Scale every layer's q_proj / k_proj in place on disk: attention logits grow by factor^2."""
    model = LlavaForConditionalGeneration.from_pretrained(model_dir)
    with torch.no_grad():
        for layer in model.model.language_model.layers:
            layer.self_attn.q_proj.weight.mul_(factor)
            layer.self_attn.k_proj.weight.mul_(factor)
    model.save_pretrained(model_dir)
    return model_dir


@pytest.fixture(autouse=True)
def one_thread(one_thread):
    """Every trainer test runs on one thread (the shared fixture in tests/conftest.py)."""
    yield


@pytest.fixture(scope="session")
def pair_dirs(tmp_path_factory):
    """(teacher 6 layers, student 4 layers), both hidden 64, same vision config, 32 px, 4x4 patches."""
    root = tmp_path_factory.mktemp("pair")
    teacher = sharpen(build_tiny("llava", root / "teacher", n_layers=6, hidden=64, seed=1))
    student = sharpen(build_tiny("llava", root / "student", n_layers=4, hidden=64, seed=2), factor=6.0)
    return teacher, student


@pytest.fixture(scope="session")
def narrow_student_dir(tmp_path_factory):
    """A student with a narrower text hidden size (32) than the teacher (64)."""
    return build_tiny("llava", tmp_path_factory.mktemp("narrow"), n_layers=2, hidden=32, seed=3)


@pytest.fixture(scope="session")
def wide_student_dir(tmp_path_factory):
    """A student with a wider text hidden size (96) than the teacher (64)."""
    return build_tiny("llava", tmp_path_factory.mktemp("wide"), n_layers=2, hidden=96, n_heads=4, seed=4)


def eager_answer_rows(model_dir, enc, layers):
    """{(b, layer): [T] head-mean attention of sample b's answer row}, from transformers' own eager
    attention: the reference the attention-supervising losses are checked against."""
    model = LlavaForConditionalGeneration.from_pretrained(model_dir, attn_implementation="eager")
    with torch.no_grad():
        attentions = model(**enc.inputs, output_attentions=True).attentions  # per layer [B, H, T, T]
    return {(b, layer): attentions[layer][b, :, row].mean(0)
            for b, row in enumerate(enc.prompt_end) for layer in layers}


def loss_curve(init, out, name: str, weight: float, kinds=("qa",), **settings):
    """metrics.jsonl rows of a 25-step "ce" stage (lr 1e-2, no CE) on shapes samples of ``kinds``
    (short questions) with only the loss ``name`` at ``weight``: what a test of that loss's training reads."""
    from cdviz.train import StageConfig, TrainConfig, finetune
    from cdviz.train.tracking import read_metrics

    stage = StageConfig("ce", steps=25, lr=1e-2, ce=0.0, trainable="llm", **{name: weight})
    finetune(TrainConfig(student=str(init), out=str(out), stages=[stage], shapes_kinds=list(kinds), shapes_scenes=20,
                         shapes_image_size=32, batch_size=4, progress=False, **settings))
    return read_metrics(out / "ce" / "metrics.jsonl")
