"""The engine end to end on tiny real models: stages chained, exact resume, frozen teacher, CE from scratch."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoProcessor, LlavaForConditionalGeneration

from cdviz.models.tiny import build_tiny
from cdviz.probes.shapes import make_shapes
from cdviz.train import ConfigError, StageConfig, TrainConfig, finetune, train_model
from cdviz.train.checkpoint import CheckpointError
from cdviz.train.recipe import Recipe, check_engine
from cdviz.train.tracking import read_metrics

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # peft calls a deprecated transformers alias
SMALL = dict(shapes_scenes=20, shapes_image_size=32, batch_size=4, progress=False)


def _mean(rows, key, sl):
    vals = [r[key] for r in rows][sl]
    return sum(vals) / len(vals)


def test_dpt_dft_sft_chain_produces_a_plain_llava(pair_dirs, tmp_path):
    teacher, student = pair_dirs
    probes = make_shapes(tmp_path / "probes", n=4, seed=5, image_size=32)
    stages = [StageConfig("dpt", steps=8, lr=3e-3), StageConfig("dft", steps=8, lr=3e-3),
              StageConfig("sft", steps=8, lr=3e-3)]
    out = tmp_path / "run"
    final = finetune(TrainConfig(student=str(student), teacher=str(teacher), out=str(out), stages=stages,
                                 eval_probes=str(probes.root), record_probes=str(probes.root), save_adapter=True,
                                 **SMALL))
    assert final == out / "model"
    model = LlavaForConditionalGeneration.from_pretrained(final)  # plain transformers, no cdviz
    assert type(model.model.multi_modal_projector).__name__ == "LlavaMultiModalProjector"
    AutoProcessor.from_pretrained(final)
    assert json.loads((final / "cdviz_stage.json").read_text())["taf"] == "merged"
    assert (final / "adapter" / "adapter_config.json").is_file()  # the SFT LoRA, unmerged, for reference

    dpt, dft, sft = (read_metrics(out / s / "metrics.jsonl") for s in ("dpt", "dft", "sft"))
    assert [len(dpt), len(dft), len(sft)] == [8, 8, 8]
    assert "loss/kd" in dpt[0] and "loss/vat" not in dpt[0]
    assert all(r["loss/vat"] > 0 for r in dft) and "loss/kd" not in sft[0]
    assert _mean(sft, "loss/ce", slice(-3, None)) < _mean(dpt, "loss/ce", slice(0, 3))

    # DPT trains the TAF linear only: every language-model weight is the student's own.
    before = load_file(str(student / "model.safetensors"))
    after = load_file(str(out / "dpt" / "model" / "model.safetensors"))
    lm_keys = [k for k in before if "language_model" in k]
    assert lm_keys and all(torch.equal(before[k], after[k]) for k in lm_keys)

    assert (out / "eval" / "summary.json").is_file() and (out / "record" / "manifest.json").is_file()
    with pytest.raises(ConfigError, match="--resume"):
        finetune(TrainConfig(student=str(student), teacher=str(teacher), out=str(out), stages=stages, **SMALL))


class Stop(Exception):
    pass


def test_resume_continues_exactly(pair_dirs, tmp_path):
    teacher, student = pair_dirs

    def config(out, resume=False):
        return TrainConfig(student=str(student), teacher=str(teacher), out=str(out), resume=resume,
                           stages=[StageConfig("dft", steps=6, lr=3e-3, t2i=0.5)], checkpoint_every=3, **SMALL)

    straight = finetune(config(tmp_path / "a"))

    def kill_after_3(row):
        if row["step"] == 3:
            raise Stop

    with pytest.raises(Stop):
        finetune(config(tmp_path / "b"), on_step=kill_after_3)
    assert (tmp_path / "b" / "dft" / "checkpoints" / "step-000003" / "trainable.safetensors").is_file()
    with open(tmp_path / "b" / "dft" / "metrics.jsonl", "a") as f:  # a row logged after the checkpoint
        f.write(json.dumps({"step": 4, "loss": 0.0}) + "\n")
    resumed = finetune(config(tmp_path / "b", resume=True))

    a, b = load_file(str(straight / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows_a, rows_b = (read_metrics(p / "dft" / "metrics.jsonl") for p in (tmp_path / "a", tmp_path / "b"))
    drop = lambda r: {k: v for k, v in r.items() if k != "samples_per_s"}  # noqa: E731
    assert [drop(r) for r in rows_a] == [drop(r) for r in rows_b]


def _dft_recipe(pair_dirs, out, **kw):
    teacher, student = pair_dirs
    cfg = TrainConfig(student=str(student), teacher=str(teacher), out=str(out),
                      stages=[StageConfig("dft", steps=2)], **{**SMALL, **kw})
    recipe = Recipe(cfg, 0)
    recipe.setup()
    return recipe


def _one_micro_step(recipe):
    batch = recipe.collate(recipe.stream.examples(0))
    parts = recipe._micro_step(batch, sync=True)
    module = recipe.accelerator.unwrap_model(recipe.model)
    grads = {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}
    return parts, grads


def test_frozen_teacher_and_frozen_parts_get_no_gradients(pair_dirs, tmp_path):
    recipe = _dft_recipe(pair_dirs, tmp_path)
    try:
        parts, grads = _one_micro_step(recipe)
        assert parts["vat"] > 0 and parts["kd"] > 0
        assert not recipe.teacher.model.training
        assert all(not p.requires_grad and p.grad is None for p in recipe.teacher.model.parameters())
        assert all(p.grad is None for p in recipe.taf.teacher.parameters())  # the teacher connector copy
        assert all(p.grad is None for p in recipe.student.model.model.vision_tower.parameters())
        assert grads and all("lora_" in n or ".taf." in n for n in grads)
        assert any(".taf." in n for n in grads) and any("lora_B" in n for n in grads)
    finally:
        recipe.cleanup()


def test_gradient_checkpointing_gives_the_same_gradients(pair_dirs, tmp_path):
    results = []
    for gc in (False, True):
        recipe = _dft_recipe(pair_dirs, tmp_path / str(gc), gradient_checkpointing=gc)
        try:
            results.append(_one_micro_step(recipe)[1])
        finally:
            recipe.cleanup()
    plain, checkpointed = results
    assert plain.keys() == checkpointed.keys()
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], atol=1e-6, rtol=1e-5)


def test_train_model_from_random_init_trains_everything(tmp_path):
    init = build_tiny("llava", tmp_path / "init", n_layers=2, hidden=32, seed=7)
    rows = []
    final = train_model(init, tmp_path / "out", steps=12, lr=3e-3, on_step=rows.append, **{**SMALL, "progress": True})
    assert rows[-1]["step"] == 12 and _mean(rows, "loss", slice(-3, None)) < _mean(rows, "loss", slice(0, 3))
    before, after = load_file(str(init / "model.safetensors")), load_file(str(final / "model.safetensors"))
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert any("vision_tower" in k for k in changed) and any("language_model" in k for k in changed)
    LlavaForConditionalGeneration.from_pretrained(final)
    AutoProcessor.from_pretrained(final)


def test_check_engine_refuses_what_the_trainer_cannot_drive():
    from accelerate.utils import DistributedType

    check_engine(DistributedType.MULTI_GPU, None, 8, "dpt")  # DDP: the trainer's own accumulation works
    check_engine(DistributedType.MULTI_CPU, None, 2, "dft")
    check_engine(DistributedType.DEEPSPEED, 2, 1, "dft")
    for engine, zero in ((DistributedType.FSDP, None), (DistributedType.DEEPSPEED, 3)):
        with pytest.raises(ConfigError, match="does not gather sharded parameters"):
            check_engine(engine, zero, 1, "dft")
    with pytest.raises(ConfigError, match="stage dpt: grad_accum = 8 under DeepSpeed"):
        check_engine(DistributedType.DEEPSPEED, 2, 8, "dpt")


def test_checkpoint_from_before_a_new_setting_resumes(pair_dirs, tmp_path):
    """A setting added to TrainConfig later (missing from the checkpoint) counts as its default;
    changing a recorded setting is still refused."""
    teacher, student = pair_dirs

    def config(resume=False, **kw):
        return TrainConfig(student=str(student), out=str(tmp_path / "run"), resume=resume,
                           stages=[StageConfig("ce", steps=4, lr=1e-3)], checkpoint_every=2, **{**SMALL, **kw})

    def kill_after_2(row):
        if row["step"] == 2:
            raise Stop

    with pytest.raises(Stop):
        finetune(config(), on_step=kill_after_2)
    state_path = tmp_path / "run" / "ce" / "checkpoints" / "step-000002" / "state.json"
    state = json.loads(state_path.read_text())
    del state["settings"]["shapes_probe_captions"]  # as written before the setting existed
    state_path.write_text(json.dumps(state))
    with pytest.raises(CheckpointError, match="shapes_probe_captions"):
        finetune(config(resume=True, shapes_probe_captions=True))
    assert (finetune(config(resume=True)) / "model.safetensors").is_file()
