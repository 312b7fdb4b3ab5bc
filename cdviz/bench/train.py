"""``cdviz bench train``: what VAT costs in a training step, the cdviz way and the reference way.

One process, a random-weight LLaVA-shaped teacher / student pair (same vision tower), one
sample of ``seq_len`` tokens of which ``image_tokens`` are image tokens and the last
``answer_tokens`` are the answer; each variant is one full training step (forward, backward,
AdamW step on the student's language model and connector), timed side by side, interleaved over
``repeats`` rounds (median reported):

    (a) ce+kd          CE + logit KD, SDPA attention, frozen teacher (cdviz.train.step)
    (b) ce+kd+vat      + VAT the trainer's way: cdviz.train.step.distill_forward, attention
                       captured with gradients in the target layers only (cdviz.record.capture)
    (c) eager ref.     + the same VAT the reference way: eager attention with
                       output_attentions=True in every layer of both models, the maps stacked
                       [B, L, H, T, T], then cdviz.vat.vat_loss on the sliced image blocks

(c) keeps (a)'s CE + KD code, so (c) - (b) is the attention path alone. Peak memory of a step,
above what is resident before it (weights, optimizer state): on CUDA the allocator's peak; on
CPU the peak resident set of a fresh process per variant (``python -m cdviz.bench.train``),
reset through /proc/self/clear_refs after a warm-up step, with large allocations returned to
the OS on free (MALLOC_MMAP_THRESHOLD_) so that resident memory follows live tensors.

    cdviz bench train [--device cuda] [--seq-len 1024] [--repeats 3] [--hidden 512] [--layers 8]
"""

from __future__ import annotations

import gc
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from transformers import LlavaForConditionalGeneration

from cdviz.bench.record import sync_device
from cdviz.conversation import IGNORE, Encoded
from cdviz.errors import OptionError
from cdviz.layer_map import LayerMap, default_layer_map
from cdviz.metrics import Grid
from cdviz.models.llava import LlavaAdapter
from cdviz.models.tiny import llava_config
from cdviz.train.step import DistillForward, LossSettings, distill_forward, teacher_targets
from cdviz.vat import vat_loss

VARIANTS = ("ce+kd", "ce+kd+vat", "eager ref.")
IMAGE_TOKEN = 5
PATCH = 4
MLP_RATIO = 5504 / 2048  # Qwen1.5-1.8B's MLP width over its hidden size
CLEAR_REFS = Path("/proc/self/clear_refs")


@dataclass
class TrainBenchConfig:
    device: str = "cpu"
    seq_len: int = 1024
    image_tokens: int = 576
    answer_tokens: int = 64
    layers: int = 8              # student
    hidden: int = 512
    heads: int = 8
    teacher_layers: int = 12
    teacher_hidden: int = 768
    teacher_heads: int = 12
    vocab: int = 4096
    repeats: int = 3
    dtype: str = "float32"
    threads: int | None = None   # CPU threads (default: torch's); the memory child processes use the same
    # decoder shapes beyond hidden / heads (None: kv heads = heads, MLP = MLP_RATIO x hidden, head dim = hidden / heads)
    kv_heads: int | None = None
    intermediate: int | None = None
    head_dim: int | None = None
    teacher_kv_heads: int | None = None
    teacher_intermediate: int | None = None
    teacher_head_dim: int | None = None
    preset: str | None = None           # where the student's shapes came from (cdviz.bench.presets)
    teacher_preset: str | None = None

    def check(self) -> None:
        side = math.isqrt(self.image_tokens)
        if side * side != self.image_tokens:
            raise OptionError(f"--image-tokens {self.image_tokens} must be a square (e.g. 576 = 24 x 24)")
        if self.seq_len < self.image_tokens + self.answer_tokens + 4:
            raise OptionError(f"--seq-len {self.seq_len} must exceed --image-tokens {self.image_tokens} + "
                              f"{self.answer_tokens} answer tokens + 4")
        for flag, hidden, heads, head_dim in (("--hidden", self.hidden, self.heads, self.head_dim),
                                              ("--teacher-hidden", self.teacher_hidden, self.teacher_heads,
                                               self.teacher_head_dim)):
            if hidden % heads and not head_dim:
                raise OptionError(f"{flag} {hidden} is not a multiple of its head count {heads}")
        if self.dtype not in ("float32", "bfloat16"):
            raise OptionError(f"--dtype {self.dtype!r}: use float32 or bfloat16")


def with_presets(cfg: TrainBenchConfig, *, student: str | None, teacher: str | None, layers: int | None = None,
                 teacher_layers: int | None = None) -> TrainBenchConfig:
    """``cfg`` with the decoder shapes (hidden, heads, kv heads, head dim, MLP width, layers: the first
    ``layers`` of the preset, default all) and vocabulary of the presets (cdviz.bench.presets) named;
    both models share the student's vocabulary (the teacher's when only it is named), as KD needs."""
    from cdviz.bench.presets import get_preset

    changes: dict = {}
    for who, name, n in (("", student, layers), ("teacher_", teacher, teacher_layers)):
        if name is None:
            continue
        text = get_preset(name, n)["text"]
        heads = int(text["num_attention_heads"])
        changes.update({f"{who}layers": int(text["num_hidden_layers"]), f"{who}hidden": int(text["hidden_size"]),
                        f"{who}heads": heads, f"{who}kv_heads": int(text.get("num_key_value_heads") or heads),
                        f"{who}intermediate": int(text["intermediate_size"]),
                        f"{who}head_dim": text.get("head_dim"), f"{who}preset" if who else "preset": name})
        changes.setdefault("vocab", int(text["vocab_size"]))
    return replace(cfg, **changes)


def _model(cfg: TrainBenchConfig, layers: int, hidden: int, heads: int, seed: int, kv_heads: int | None = None,
           intermediate: int | None = None, head_dim: int | None = None) -> LlavaAdapter:
    side = math.isqrt(cfg.image_tokens)
    config = llava_config(cfg.vocab, IMAGE_TOKEN, n_layers=layers, hidden=hidden, n_heads=heads,
                          n_kv_heads=kv_heads or heads, image_size=side * PATCH, patch_size=PATCH, vision_hidden=64,
                          intermediate=intermediate or round(MLP_RATIO * hidden))
    if head_dim:
        config.text_config.head_dim = head_dim
    config.text_config.max_position_embeddings = max(1024, cfg.seq_len)
    torch.manual_seed(seed)
    dtype = getattr(torch, cfg.dtype)
    model = LlavaForConditionalGeneration(config).to(cfg.device, dtype)
    return LlavaAdapter(model, processor=None)  # the step needs layers and heads, not a processor


def _sample(cfg: TrainBenchConfig) -> Encoded:
    """One sample: 3 prompt tokens, the image, text, then ``answer_tokens`` labelled answer tokens."""
    side = math.isqrt(cfg.image_tokens)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(IMAGE_TOKEN + 1, cfg.vocab, (1, cfg.seq_len), generator=g)  # [1, T]
    start = 3
    ids[0, start:start + cfg.image_tokens] = IMAGE_TOKEN
    labels = torch.full_like(ids, IGNORE)
    first = cfg.seq_len - cfg.answer_tokens
    labels[0, first:] = ids[0, first:]
    pixels = torch.randn(1, 3, side * PATCH, side * PATCH, generator=g)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "pixel_values": pixels}
    enc = Encoded(inputs, labels, [(start, start + cfg.image_tokens)], [(side, side)], [first - 1])
    return enc.to(cfg.device, getattr(torch, cfg.dtype))


def reference_vat(student_maps: tuple[torch.Tensor, ...], teacher_maps: tuple[torch.Tensor, ...],
                  layer_map: LayerMap, spans: list[tuple[int, int]], grids: list[Grid],
                  teacher_spans: list[tuple[int, int]], teacher_grids: list[Grid], filter: bool = True
                  ) -> torch.Tensor:
    """VAT from every layer's full attention, as the reference code computes it.

    Args:
        student_maps: per student layer [B, H, T, T] (``output_attentions``).
        teacher_maps: per teacher layer [B, Ht, Tt, Tt].
        spans, grids: per sample the student's image span and patch grid; teacher_* the teacher's.

    Returns:
        scalar: cdviz.vat.vat_loss per sample, mean over samples.
    """
    s_all = torch.stack(student_maps, 1)  # [B, Ls, H, T, T]: the stacked copy the reference makes
    t_all = torch.stack(teacher_maps, 1)  # [B, Lt, Ht, Tt, Tt]
    terms = []
    for b, ((s0, s1), (t0, t1)) in enumerate(zip(spans, teacher_spans)):
        s = s_all[b, list(layer_map.student_layers), :, s0:s1, s0:s1].mean(1)  # [L, Ns, Ns] head mean
        t = torch.stack([t_all[b, list(g), :, t0:t1, t0:t1].mean(1).mean(0)
                         for g in layer_map.teacher_groups])  # [L, Nt, Nt] head mean, then group mean
        terms.append(vat_loss(s[None], t[None], filter, grids[b], teacher_grids[b]))
    return torch.stack(terms).mean()


class TrainBench:
    """The pair, one encoded sample and an optimizer; ``step(variant)`` is one training step."""

    def __init__(self, cfg: TrainBenchConfig):
        cfg.check()
        self.cfg = cfg
        self.teacher = _model(cfg, cfg.teacher_layers, cfg.teacher_hidden, cfg.teacher_heads, seed=1,
                              kv_heads=cfg.teacher_kv_heads, intermediate=cfg.teacher_intermediate,
                              head_dim=cfg.teacher_head_dim)
        self.student = _model(cfg, cfg.layers, cfg.hidden, cfg.heads, seed=2, kv_heads=cfg.kv_heads,
                              intermediate=cfg.intermediate, head_dim=cfg.head_dim)
        self.teacher.model.requires_grad_(False).eval()
        self.student.model.requires_grad_(False).train()
        self.student.language_model().requires_grad_(True)
        self.student.model.model.multi_modal_projector.requires_grad_(True)
        self.student.model.get_output_embeddings().requires_grad_(True)
        self.enc = _sample(cfg)
        self.layer_map = default_layer_map(cfg.layers, cfg.teacher_layers)
        self.ce_kd = LossSettings({"ce": 1.0, "kd": 1.0})
        self.vat = LossSettings({"ce": 1.0, "kd": 1.0, "vat": 1.0}, self.layer_map)
        self.modules = {"ce+kd": DistillForward(self.student.model, self.ce_kd),
                        "ce+kd+vat": DistillForward(self.student.model, self.vat)}
        params = [p for p in self.student.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=1e-6, weight_decay=0.0)

    def losses(self, variant: str) -> dict[str, torch.Tensor]:
        """The forward of ``variant``: {"loss", "ce", "kd"[, "vat"]}."""
        if variant == "eager ref.":
            return self._reference_losses()
        settings = self.ce_kd if variant == "ce+kd" else self.vat
        return distill_forward(self.modules[variant], settings, self.student, self.teacher, self.enc, self.enc)

    def _reference_losses(self) -> dict[str, torch.Tensor]:
        maps: dict[str, tuple] = {}  # "teacher" / "student" -> per layer [B, H, T, T]

        def keep(name):
            return lambda module, args, out: maps.__setitem__(name, out.attentions)

        # DistillForward and teacher_targets run the backbone and keep only its last hidden state;
        # a hook on the backbone collects the attentions output_attentions=True adds to its output.
        hooks = [a.model.model.register_forward_hook(keep(name))
                 for name, a in (("teacher", self.teacher), ("student", self.student))]
        enc = Encoded({**self.enc.inputs, "output_attentions": True}, self.enc.labels, self.enc.spans,
                      self.enc.grids, self.enc.prompt_end)
        for a in (self.teacher, self.student):
            a.model.set_attn_implementation("eager")
        try:
            targets = teacher_targets(self.teacher, enc, self.ce_kd)
            parts = self.modules["ce+kd"](enc, targets, self.teacher.model.get_output_embeddings())
        finally:
            for a in (self.teacher, self.student):
                a.model.set_attn_implementation("sdpa")
            for h in hooks:
                h.remove()
        vat = reference_vat(maps["student"], maps["teacher"], self.layer_map, enc.spans, enc.grids, enc.spans,
                            enc.grids, self.vat.vat_filter)
        return {**parts, "loss": parts["loss"] + vat, "vat": vat}

    def step(self, variant: str) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.losses(variant)["loss"].backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


def run_bench(cfg: TrainBenchConfig) -> dict:
    """Median step time and peak step memory of each variant, and the ratios the issue asks for."""
    cfg.check()
    previous = torch.get_num_threads()
    cfg = replace(cfg, threads=cfg.threads or previous)
    torch.set_num_threads(cfg.threads)
    try:
        return _run(cfg)
    finally:
        torch.set_num_threads(previous)


def _run(cfg: TrainBenchConfig) -> dict:
    cuda = cfg.device.startswith("cuda")
    bench = TrainBench(cfg)
    layer_map = bench.layer_map.to_dict()
    mlp = {name: int(a.text_config.intermediate_size) for name, a in (("student", bench.student),
                                                                        ("teacher", bench.teacher))}
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    peak: dict[str, int] = {}
    for v in VARIANTS:  # warm-up: optimizer state, kernels, allocator pools
        bench.step(v)
    for _ in range(cfg.repeats):
        for v in VARIANTS:
            gc.collect()
            if cuda:
                torch.cuda.reset_peak_memory_stats()
                before = torch.cuda.memory_allocated()
            sync_device(cfg.device)
            t0 = time.perf_counter()
            bench.step(v)
            sync_device(cfg.device)
            times[v].append(time.perf_counter() - t0)
            if cuda:
                peak[v] = torch.cuda.max_memory_allocated() - before
    if cuda:
        method = "CUDA allocator peak above the memory allocated before the step"
    else:
        del bench
        gc.collect()
        results = {v: measure_in_child(cfg, v) for v in VARIANTS}
        peak = {v: r["peak_bytes"] for v, r in results.items()}
        method = results[VARIANTS[0]]["method"]
    med = {v: statistics.median(t) for v, t in times.items()}
    a, b, c = VARIANTS
    return {"config": asdict(cfg), "layer_map": layer_map, "mlp": mlp, "median_s": med, "peak_bytes": peak,
            "peak_method": method, "ratio_b_over_a_time": med[b] / med[a], "ratio_c_over_b_time": med[c] / med[b],
            "ratio_c_over_b_peak": peak[c] / max(1, peak[b])}


# --------------------------------------------------------------------------- CPU peak memory

def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise OSError(f"/proc/self/status has no {field}")


def _peak_in_this_process(cfg: TrainBenchConfig, variant: str) -> dict:
    """Build the bench here, run ``variant``'s step and report its peak resident memory growth."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    bench = TrainBench(cfg)
    try:
        bench.step(variant)  # warm-up: AdamW state and one-time buffers become resident first
        gc.collect()
        before = _status_kib("VmRSS")
        CLEAR_REFS.write_text("5")  # resets the high-water mark VmHWM to the current resident size
        bench.step(variant)
        peak = _status_kib("VmHWM") - before
        method = ("CPU: peak resident memory of a fresh process per variant, above its resident size before a "
                  "second step (VmHWM reset via /proc/self/clear_refs; large frees returned to the OS)")
    except OSError:  # no /proc (not Linux) or clear_refs not writable: the first step, from getrusage
        unit = 1 if sys.platform == "darwin" else 1024
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * unit
        bench.step(variant)
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * unit - before) // 1024
        method = ("CPU: ru_maxrss growth of a fresh process per variant over its first step after the model "
                  "build (includes allocating the AdamW state)")
    return {"peak_bytes": peak * 1024, "method": method}


def measure_in_child(cfg: TrainBenchConfig, variant: str) -> dict:
    """Run ``_peak_in_this_process`` in a fresh interpreter, so no variant inherits another's heap."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
    proc = subprocess.run([sys.executable, "-m", "cdviz.bench.train", variant, json.dumps(asdict(cfg))],
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"memory measurement of {variant!r} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def print_bench(r: dict, out) -> None:
    """The ``run_bench`` result as ``cdviz bench train`` prints it: step times, peaks, ratios against the targets."""
    from rich.table import Table

    c, lm = r["config"], r["layer_map"]
    mlp = r["mlp"]
    for who in ("preset", "teacher_preset"):
        if c.get(who):
            out.print(f"{'student' if who == 'preset' else 'teacher'} decoder shapes and vocabulary ({c['vocab']}) "
                      f"from preset {c[who]}, in the bench's LLaVA shell")
    out.print(f"student: {c['layers']} layers, hidden {c['hidden']}, MLP {mlp['student']}, {c['heads']} heads; "
              f"teacher: {c['teacher_layers']} layers, hidden {c['teacher_hidden']}, MLP {mlp['teacher']}, "
              f"{c['teacher_heads']} heads; T={c['seq_len']} with {c['image_tokens']} image tokens and "
              f"{c['answer_tokens']} answer tokens, batch 1, {c['device']} {c['dtype']}"
              + (f", {c['threads']} CPU threads" if c["device"] == "cpu" else ""))
    out.print(f"VAT layers: student {lm['student_layers']} <- teacher groups {lm['teacher_groups']}; step = forward + "
              f"backward + AdamW on the student's language model and connector; median of {c['repeats']} rounds")
    table = Table("step", "median s", "peak MiB above resident")
    labels = {"ce+kd": "(a) CE+KD, SDPA", "ce+kd+vat": "(b) CE+KD+VAT, cdviz capture",
              "eager ref.": "(c) CE+KD+VAT, eager output_attentions"}
    for v in VARIANTS:
        table.add_row(labels[v], f"{r['median_s'][v]:.3f}", f"{r['peak_bytes'][v] / 2**20:,.1f}")
    out.print(table)
    out.print(f"peak memory: {r['peak_method']}")
    for text, key, goal, ok in (
            ("ratio (b)/(a) step time  ", "ratio_b_over_a_time", "target <= 1.3", lambda x: x <= 1.3),
            ("ratio (c)/(b) step time  ", "ratio_c_over_b_time", "target >= 2", lambda x: x >= 2),
            ("ratio (c)/(b) peak memory", "ratio_c_over_b_peak", "target >= 4", lambda x: x >= 4)):
        out.print(f"{text}: {r[key]:.2f}  ({goal}: {'met' if ok(r[key]) else 'MISSED'})")


if __name__ == "__main__":
    print(json.dumps(_peak_in_this_process(TrainBenchConfig(**json.loads(sys.argv[2])), sys.argv[1])))
