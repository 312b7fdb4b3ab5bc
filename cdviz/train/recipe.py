"""The fine-tuning engine: one Recipe per stage (setup / train / save_checkpoint / cleanup) and
the entry points that chain stages.

    finetune(TrainConfig) -> final model dir          stages in order; a finished stage is skipped on --resume
    train_model(MODEL_DIR, OUT, steps=...) -> dir     plain CE training of one model ("ce" stage)
    python -m cdviz.train RECIPE.toml [--resume]      (under `accelerate launch` for several GPUs)

Layout of OUT:
    recipe.json                      the resolved configuration
    <stage>/checkpoints/step-N/      resumable state (cdviz/train/checkpoint.py)
    <stage>/metrics.jsonl            one row per optimizer step: loss, loss/ce, loss/kd, loss/vat,
                                     loss/t2i, lr, grad_norm, samples_per_s (+ <stage>/tb if asked)
    <stage>/model/                   the stage's HF model dir (LoRA merged, TAF folded where exact)
    model/                           the LAST stage's model dir: from_pretrained / AutoProcessor-loadable
    eval/, record/                   optional evaluation and re-recording of the final student

Each stage starts from the previous stage's saved directory (or --student), so a chained run and
a resumed one build the same model. Engine: accelerate (DDP, FSDP, DeepSpeed via its config),
bf16 autocast on CUDA only, optional activation checkpointing (off in the VAT layers, whose
captured attention needs their activations), teacher frozen in eval mode under no_grad.
"""

from __future__ import annotations

import dataclasses

import gc
import json
import math
import shutil
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, set_seed
from torch import nn
from transformers import get_cosine_schedule_with_warmup

from cdviz.errors import CdvizError
from cdviz.io import write_json_atomic
from cdviz.models import AdapterError, check_pair, load_model
from cdviz.train import checkpoint as ckpt
from cdviz.train.config import LOSS_WEIGHTS, ConfigError, StageConfig, TrainConfig
from cdviz.train.data import Collator, MicroBatches, Stream, identity, make_source
from cdviz.layer_map import middle_band, resolve_layer_map
from cdviz.train.tracking import MetricsLog, progress_bar
from cdviz.train.step import DistillForward, LossSettings, distill_forward
from cdviz.models.taf import TAFConnector, TAFError, connector, install_saved_taf, install_taf, load_taf_file
from cdviz.train.taf import check_taf_pair, mark_unmerged, projector_keys, save_taf

MARKER = "cdviz_stage.json"


class TrainingError(CdvizError, RuntimeError):
    """Training that cannot go on (a NaN / inf loss); the message names the stage, step and fix."""

OnStep = Callable[[dict], None]
# Settings that may change between a run and its resume without changing what is trained.
RESUMABLE_CHANGES = {"resume", "progress", "eval_probes", "record_probes", "record_layers", "checkpoint_every",
                     "keep_checkpoints", "log_every", "tensorboard", "num_workers", "save_adapter"}


def stage_model_dir(config: TrainConfig, index: int) -> Path:
    out = Path(config.out)
    return out / "model" if index == len(config.stages) - 1 else out / config.stages[index].name / "model"


def fingerprint(config: TrainConfig, stage: StageConfig) -> dict:
    d = {k: v for k, v in config.to_dict().items() if k not in RESUMABLE_CHANGES}
    d["stages"] = [s["name"] for s in d["stages"]]
    d["stage"] = stage.__dict__
    return json.loads(json.dumps(d, default=str))


def use_cuda(config: TrainConfig) -> bool:
    return torch.cuda.is_available() and config.device != "cpu"


def source_dtype(model_dir: Path) -> torch.dtype:
    """The dtype a checkpoint was saved in (training runs in fp32; the output keeps the input's)."""
    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    name = cfg.get("dtype") or cfg.get("torch_dtype") or "float32"
    return getattr(torch, str(name), torch.float32)


def save_processor(processor, out: Path) -> None:
    """The processor's files, so AutoProcessor / AutoTokenizer load the output directory."""
    if hasattr(processor, "save_pretrained"):
        processor.save_pretrained(out)
        return
    processor.tokenizer.save_pretrained(out)  # cdviz's ComposedProcessor (no full HF processor here)
    processor.image_processor.save_pretrained(out)
    if processor.chat_template:
        (out / "chat_template.jinja").write_text(processor.chat_template)


def check_engine(distributed_type: DistributedType, zero_stage: int | None, grad_accum: int, stage: str) -> None:
    """Refuse engines the trainer cannot drive correctly, before any training time is spent.

    - FSDP / DeepSpeed ZeRO-3 shard parameters; the LoRA / TAF merge at the end of each stage needs
      them whole, and gathering them is not implemented (accelerate runs FSDP on GPUs only, so it
      cannot be tested on CPU processes).
    - DeepSpeed with grad_accum > 1: the trainer accumulates micro-batches itself (no_sync between
      them, one backward each). Through accelerate, DeepSpeed's engine steps the optimizer after
      every backward, and ZeRO-2's no_sync raises; grad_accum = 1 is the supported setting.
    """
    if distributed_type == DistributedType.FSDP or zero_stage == 3:
        raise ConfigError("cdviz finetune merges LoRA and TAF into full weights at the end of each stage and does "
                          "not gather sharded parameters: use DDP or DeepSpeed ZeRO-1/2 in the accelerate config")
    if distributed_type == DistributedType.DEEPSPEED and grad_accum > 1:
        raise ConfigError(f"stage {stage}: grad_accum = {grad_accum} under DeepSpeed, whose engine steps after every "
                          "backward; set grad_accum = 1 and raise batch_size or the number of processes instead")


def ground_layers(layers: list[int] | None, n_layers: int) -> list[int]:
    """The layers the grounding loss supervises: ``layers`` checked, or the paper's middle band."""
    if layers is None:
        return middle_band(n_layers)
    bad = [i for i in layers if not 0 <= i < n_layers]
    if bad or not layers:
        raise ConfigError(f"ground_layers={layers}: the model has layers 0..{n_layers - 1}; give some of those")
    return sorted(set(layers))


def route_layers(layers: list[int] | None, n_layers: int, band: list[int]) -> list[int]:
    """The layers the route loss supervises: ``layers`` checked, or those below the grounding
    ``band`` (layer 0 when the band starts there): the answer row must read the question before
    it can look for what the question names."""
    if layers is None:
        return list(range(band[0])) or [0]
    bad = [i for i in layers if not 0 <= i < n_layers]
    if bad or not layers:
        raise ConfigError(f"route_layers={layers}: the model has layers 0..{n_layers - 1}; give some of those")
    return sorted(set(layers))


class Recipe:
    """One stage of fine-tuning."""

    def __init__(self, config: TrainConfig, index: int, on_step: OnStep | None = None):
        self.config, self.index, self.stage = config, index, config.stages[index]
        self.on_step = on_step
        self.source = Path(config.student) if index == 0 else stage_model_dir(config, index - 1)
        self.model_dir = stage_model_dir(config, index)
        self.stage_dir = Path(config.out) / self.stage.name
        self.step = 0

    # ------------------------------------------------------------------------------------ setup
    def setup(self) -> None:
        cfg, stage = self.config, self.stage
        cuda = use_cuda(cfg)
        self.accelerator = acc = Accelerator(
            cpu=not cuda, mixed_precision="bf16" if cuda and cfg.precision == "bf16" else "no")
        self._check_engine()
        set_seed(cfg.seed)
        teacher_dtype = "bfloat16" if cuda and cfg.precision == "bf16" else "float32"
        self.teacher = (load_model(cfg.teacher, dtype=teacher_dtype, device=acc.device,
                                   trust_remote_code=cfg.trust_remote_code, adapter=cfg.adapter, grid=cfg.grid)
                        if stage.needs_teacher else None)
        if self.teacher is not None:
            self.teacher.model.requires_grad_(False).eval()
        self.student = load_model(self.source, dtype="float32", device=acc.device,
                                  trust_remote_code=cfg.trust_remote_code, adapter=cfg.adapter, grid=cfg.grid)
        if self.teacher is not None:
            report = check_pair(self.teacher, self.student)
            if not report.ok:
                problems = "\n  - ".join(report.errors)
                raise AdapterError(f"{cfg.teacher} / {self.source} cannot be distilled:\n  - {problems}")
        self.taf = self._setup_taf()
        lm = None
        if stage.vat or stage.t2i:
            lm = resolve_layer_map(self.student.n_layers, self.teacher.n_layers, report=cfg.from_report,
                                   student_layers=cfg.student_layers, teacher_groups=cfg.teacher_groups,
                                   paper_compat=cfg.paper_compat)
        n = self.student.n_layers
        self.settings = LossSettings({k: getattr(stage, k) for k in LOSS_WEIGHTS}, lm,
                                     cfg.temperature, cfg.kd_chunk, cfg.vat_filter, cfg.t2i_metric, cfg.paper_compat,
                                     ground_layers(cfg.ground_layers, n) if stage.ground or stage.presence else [],
                                     route_layers(cfg.route_layers, n, ground_layers(cfg.ground_layers, n))
                                     if stage.route else [], cfg.ground_share)
        self.peft = self._setup_trainable()
        if cfg.gradient_checkpointing:
            self.student.model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            layers = self.student.decoder_layers()
            for i in self.settings.capture_layers[0]:
                layers[i].gradient_checkpointing = False  # captured attention must not be recomputed
        module = DistillForward(self.student.model, self.settings)
        named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        if not named:
            raise ConfigError(f"stage {stage.name}: trainable={stage.trainable!r} leaves nothing to train")
        self.trainable_names = [n for n, _ in named]
        optimizer = torch.optim.AdamW([p for _, p in named], lr=stage.lr, weight_decay=stage.weight_decay)
        self.micro = stage.batch_size or cfg.batch_size
        self.accum = stage.grad_accum or cfg.grad_accum
        source = make_source(cfg.data, image_root=cfg.image_root, shapes_scenes=cfg.shapes_scenes,
                             shapes_seed=cfg.shapes_seed, shapes_image_size=cfg.shapes_image_size,
                             shapes_probe_captions=cfg.shapes_probe_captions, shapes_kinds=cfg.shapes_kinds)
        self.stream = Stream(source, self.micro, cfg.seed, acc.process_index, acc.num_processes)
        self.collate = Collator(self.student, self.teacher, cfg.max_seq_len)
        per_step = self.micro * acc.num_processes * self.accum
        if stage.steps is not None and stage.steps < 1:  # the config refuses this; never train an epoch instead
            raise ConfigError(f"stage {stage.name}: steps = {stage.steps}; give 1 or more")
        self.total = stage.steps if stage.steps is not None else max(1, math.ceil(stage.epochs * len(source) / per_step))
        self.scheduler = get_cosine_schedule_with_warmup(optimizer, math.ceil(stage.warmup_ratio * self.total),
                                                         self.total)
        found = ckpt.latest_checkpoint(self.stage_dir / "checkpoints") if cfg.resume else None
        if found is not None:
            trainable, opt_state, state, rng = ckpt.load_checkpoint(found, acc.process_index)
            self._check_resumable(found, state)
            params = dict(named)
            missing = sorted(set(self.trainable_names) - set(trainable))
            if missing:
                raise ckpt.CheckpointError(f"{found} lacks trainable tensors {missing[:3]}...; it was written by "
                                           "another setup, choose a new --out")
            for name in self.trainable_names:
                params[name].data.copy_(trainable[name])
        self.model, self.optimizer = acc.prepare(module, optimizer)
        self.model.train()
        self.log = MetricsLog(self.stage_dir / "metrics.jsonl", tensorboard=cfg.tensorboard and acc.is_main_process,
                              enabled=acc.is_main_process)
        if found is None and acc.is_main_process:
            # Rows a killed attempt logged before its first checkpoint: the stage starts again at step 0.
            ckpt.truncate_log(self.log.path, 0)
        if found is not None:
            self.optimizer.load_state_dict(opt_state)
            self.scheduler.load_state_dict(state["scheduler"])
            self.step = int(state["step"])
            if acc.is_main_process:
                ckpt.truncate_log(self.log.path, self.step)
            ckpt.set_rng_state(*rng)  # last: nothing after this may draw from the generators

    def _check_engine(self) -> None:
        acc = self.accelerator
        zero = acc.state.deepspeed_plugin.zero_stage if acc.distributed_type == DistributedType.DEEPSPEED else None
        check_engine(acc.distributed_type, zero, self.stage.grad_accum or self.config.grad_accum, self.stage.name)

    def _setup_taf(self) -> TAFConnector | None:
        """The TAF connector for distillation stages: from the source's taf.safetensors or the teacher."""
        cfg, stage = self.config, self.stage
        wanted = cfg.taf and stage.name != "ce"
        try:
            proj = connector(self.student)
        except TAFError:
            if wanted:
                raise
            return None
        if isinstance(proj, TAFConnector):  # an unmerged save, re-attached by the loader: keep it
            return proj
        if not wanted:
            return None
        if load_taf_file(self.source) is not None:
            return install_saved_taf(self.student, self.source)
        teacher = self.teacher
        if teacher is None:
            if cfg.teacher is None:
                raise ConfigError(f"stage {stage.name} uses TAF but {self.source} has no taf.safetensors and no "
                                  "--teacher is given; pass --teacher or set taf = false")
            teacher = load_model(cfg.teacher, device=self.accelerator.device, trust_remote_code=cfg.trust_remote_code,
                                 adapter=cfg.adapter, grid=cfg.grid)
        for w in check_taf_pair(teacher, self.student):
            self.accelerator.print(f"warning: {w}")
        return install_taf(self.student, connector(teacher), int(teacher.text_config.hidden_size))

    def _setup_trainable(self):
        """Freeze everything, then open the stage's parts; returns the peft model when LoRA is on."""
        stage, model = self.stage, self.student.model
        model.requires_grad_(False)
        parts = set(stage.parts)
        if "taf" in parts and self.taf is None:
            parts = parts - {"taf"} | {"connector"}  # no TAF (taf = false): train the student's own connector
        peft_model = None
        if "lora" in parts:
            from peft import LoraConfig, get_peft_model

            lm = self.student.language_model()
            prefix = next(n for n, m in model.named_modules() if m is lm)
            targets = [f"{prefix}.{n}" for n, m in lm.named_modules() if isinstance(m, nn.Linear)]
            hidden = int(self.student.text_config.hidden_size)
            r = stage.lora_r or min(128, max(4, hidden // 16))
            alpha = stage.lora_alpha or 2 * r
            # get_peft_model injects the LoRA layers in place: adapter.model keeps working as before.
            peft_model = get_peft_model(model, LoraConfig(r=r, lora_alpha=alpha, lora_dropout=stage.lora_dropout,
                                                          target_modules=targets, bias="none"))
        if "all" in parts:
            model.requires_grad_(True)
        if "llm" in parts:
            self.student.language_model().requires_grad_(True)
            model.get_output_embeddings().requires_grad_(True)
        if "vision" in parts:
            model.model.vision_tower.requires_grad_(True)
        if "connector" in parts:
            for module in self.student.connector_modules():  # the TAF connector, when installed
                module.requires_grad_(True)
        if self.taf is not None:
            self.taf.teacher.requires_grad_(False)  # the teacher's connector stays frozen whatever else trains
            self.taf.taf.requires_grad_("taf" in parts or "connector" in parts or "all" in parts)
        return peft_model

    def _check_resumable(self, path: Path, state: dict) -> None:
        now = fingerprint(self.config, self.stage)
        # A setting added to TrainConfig after the checkpoint was written counts as its default then.
        defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.default is not dataclasses.MISSING}
        then = {**{k: v for k, v in defaults.items() if k in now}, **state.get("settings", {})}
        changed = sorted(k for k in set(now) | set(then) if now.get(k) != then.get(k))
        if changed:
            raise ckpt.CheckpointError(f"{path} was written with other settings ({', '.join(changed)} differ); "
                                       "resume with the same configuration or choose a new --out")
        if state.get("total_steps") != self.total:
            raise ckpt.CheckpointError(f"{path}: the stage had {state.get('total_steps')} steps, now {self.total}")

    # ------------------------------------------------------------------------------------ train
    def train(self) -> Path:
        cfg, acc = self.config, self.accelerator
        loader = torch.utils.data.DataLoader(
            MicroBatches(self.stream, self.collate, self.step * self.accum, (self.total - self.step) * self.accum),
            batch_size=None, num_workers=cfg.num_workers, collate_fn=identity,
            generator=torch.Generator().manual_seed(cfg.seed))  # a private generator: the global RNG stays as saved
        batches = iter(loader)
        show = cfg.progress and acc.is_main_process
        with progress_bar(self.stage.name, self.total, self.step, enabled=show) as bar:
            while self.step < self.total:
                t0 = time.perf_counter()
                sums: dict[str, float] = {}
                for micro in range(self.accum):
                    parts = self._micro_step(next(batches), sync=micro == self.accum - 1)
                    for k, v in parts.items():
                        sums[k] = sums.get(k, 0.0) + float(acc.reduce(v.detach(), "mean")) / self.accum
                self._check_finite(sums)
                norm = acc.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm) if cfg.max_grad_norm else None
                lr = self.scheduler.get_last_lr()[0]
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.step += 1
                elapsed = time.perf_counter() - t0
                row = {"stage": self.stage.name, "step": self.step, "total_steps": self.total,
                       "epoch": self.stream.epoch(self.step * self.accum), "lr": lr,
                       "loss": sums.pop("loss"), **{f"loss/{k}": v for k, v in sums.items()},
                       "grad_norm": float(norm) if norm is not None else None,
                       "samples_per_s": self.micro * self.accum * acc.num_processes / max(elapsed, 1e-9)}
                if self.step % cfg.log_every == 0 or self.step == self.total:
                    self.log.write(row)
                bar(row)
                if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0 and self.step < self.total:
                    self.save_checkpoint()
                if self.on_step is not None:
                    self.on_step(row)
        return self.save_model()

    def _check_finite(self, sums: dict[str, float]) -> None:
        """Stop before the optimizer steps on a NaN / inf loss (the last checkpoint stays good)."""
        bad = [k for k, v in sums.items() if not math.isfinite(v)]
        if bad:
            parts = ", ".join(f"{k} = {sums[k]}" for k in bad)
            raise TrainingError(f"stage {self.stage.name}, step {self.step + 1} of {self.total}: loss is not finite "
                                f"({parts}) training {self.source}; lower lr (now {self.stage.lr}), check the data and "
                                "the model's weights, then resume from the last checkpoint with --resume")

    def _micro_step(self, batch, sync: bool) -> dict[str, torch.Tensor]:
        acc = self.accelerator
        enc = batch.student.to(acc.device, self.student.model.dtype)
        t_enc = batch.teacher.to(acc.device, self.teacher.model.dtype) if self.teacher is not None else None
        with (acc.no_sync(self.model) if not sync else nullcontext()):
            parts = distill_forward(self.model, self.settings, self.student, self.teacher, enc, t_enc, acc.autocast)
            acc.backward(parts["loss"] / self.accum)
        return parts

    # ---------------------------------------------------------------------------------- saving
    def _trainable_state(self) -> dict[str, torch.Tensor] | None:
        acc = self.accelerator
        if acc.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
            full = acc.get_state_dict(self.model)  # collective: every rank must call it
            return {n: full[n] for n in self.trainable_names} if acc.is_main_process else None
        module = acc.unwrap_model(self.model)
        return {n: p for n, p in module.named_parameters() if p.requires_grad}

    def save_checkpoint(self) -> Path:
        acc = self.accelerator
        state = {"stage": self.stage.name, "total_steps": self.total, "scheduler": self.scheduler.state_dict(),
                 "settings": fingerprint(self.config, self.stage)}
        return ckpt.save_checkpoint(self.stage_dir / "checkpoints", self.step, trainable=self._trainable_state(),
                                    optimizer_state=self.optimizer.state_dict(), state=state,
                                    rank=acc.process_index, is_main=acc.is_main_process,
                                    barrier=acc.wait_for_everyone, keep=self.config.keep_checkpoints)

    def save_model(self) -> Path:
        """Merge LoRA and TAF and write the stage's HF directory (atomically: tmp dir, then rename)."""
        acc = self.accelerator
        acc.wait_for_everyone()
        if acc.is_main_process:
            tmp = self.model_dir.with_name(f".{self.model_dir.name}.tmp")
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
            model = acc.unwrap_model(self.model).model
            if self.peft is not None:
                if self.config.save_adapter:
                    self.peft.save_pretrained(tmp / "adapter")
                model = self.peft.merge_and_unload()
                self.student.model = model
            merged = save_taf(self.student, self.taf, tmp) if self.taf is not None else True
            model.eval().to(source_dtype(self.source))
            state = None if merged else {k: v for k, v in model.state_dict().items() if k not in projector_keys(model)}
            model.save_pretrained(tmp, state_dict=state)
            if not merged:
                mark_unmerged(tmp, self.taf.taf.in_features, self.taf.taf.out_features)
            save_processor(self.student.processor, tmp)
            info = {"stage": self.stage.name, "steps": self.step, "source": str(self.source),
                    "taf": None if self.taf is None else ("merged" if merged else "taf.safetensors"),
                    "layer_map": self.settings.layer_map.to_dict() if self.settings.layer_map else None,
                    "weights": self.settings.weights, "paper_compat": self.config.paper_compat}
            write_json_atomic(tmp / MARKER, info)
            if self.model_dir.exists():
                shutil.rmtree(self.model_dir)
            tmp.rename(self.model_dir)
        acc.wait_for_everyone()
        return self.model_dir

    def cleanup(self) -> None:
        if hasattr(self, "log"):
            self.log.close()
        for name in ("model", "optimizer", "teacher", "student", "peft", "taf"):
            self.__dict__.pop(name, None)
        if hasattr(self, "accelerator"):
            self.accelerator.free_memory()
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
