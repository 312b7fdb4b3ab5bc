"""One-shot GPU check (``make gpu-check``, ``python -m cdviz.bench.gpu_check``): real-size models built
from their published configs (random weights, nothing downloaded), in bf16 on one CUDA GPU.

    (a) record   qwen2.5-vl-7b and qwen3-vl-8b at T = 2048 (1024 image tokens, a 32 x 32 grid):
                 plain SDPA forward vs cdviz recording (every layer: answer row + image block) vs
                 eager output_attentions; median seconds and peak allocator bytes of each
    (b) train    a qwen2.5-vl-3b student against the 7b teacher, a few AdamW steps per variant:
                 CE + KD, CE + KD + VAT (cdviz capture with gradients in the target layers), and
                 CE + KD + reference-style VAT (eager attention maps of every layer); s/step,
                 peak bytes, losses
    (d) demo     ``cdviz record`` of the bundled teacher / student on shapes probes, on the GPU

and writes ``results.json`` + ``results.md`` into ``--out`` (default ``$OUT`` when set, else
``gpu-check``). ``--layers N`` keeps the first N decoder layers of every model.

Without a visible CUDA GPU it says so and exits 0 having measured nothing. ``--quick --device cpu``
runs the same code at tiny sizes (a few seconds; the test suite does this).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

from cdviz.bench.presets import PRESETS as ALL_PRESETS
from cdviz.bench.presets import QWEN25_VISION, QWEN_SPECIAL_IDS  # noqa: F401 (re-exported)

# ---- published configs (typed in cdviz.bench.presets from the hub checkpoints' config.json) -------
#: The presets this check builds, in the form build() reads: family, text, vision, tie_word_embeddings.
PRESETS: dict[str, dict[str, Any]] = {
    name: dict(family=ALL_PRESETS[name]["family"], text=ALL_PRESETS[name]["text"],
               vision=ALL_PRESETS[name]["vision"],
               tie_word_embeddings=ALL_PRESETS[name]["top"]["tie_word_embeddings"])
    for name in ("qwen2.5-vl-7b", "qwen2.5-vl-3b", "qwen3-vl-8b")
}
# --quick: the same families at tiny sizes (specials at the top of a 512-token vocabulary).
QUICK_IDS = dict(image_token_id=511, video_token_id=510, vision_start_token_id=509, vision_end_token_id=508)


def quick_preset(name: str) -> dict[str, Any]:
    preset = copy.deepcopy(PRESETS[name])
    small = {"qwen2.5-vl-7b": (96, 3), "qwen2.5-vl-3b": (64, 4), "qwen3-vl-8b": (96, 3)}[name]
    hidden, layers = small
    text = preset["text"]
    head_dim = 16
    text.update(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                num_attention_heads=hidden // head_dim, num_key_value_heads=2, vocab_size=512,
                max_position_embeddings=4096)
    if "head_dim" in text:
        text["head_dim"] = head_dim
    text["rope_parameters"]["mrope_section"] = [2, 3, 3]
    vision = preset["vision"]
    vision.update(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=hidden)
    if "fullatt_block_indexes" in vision:
        vision["fullatt_block_indexes"] = [1]
    if "deepstack_visual_indexes" in vision:
        vision.update(deepstack_visual_indexes=[0], num_position_embeddings=64)
    preset["quick"] = True
    return preset


def build(name: str, *, device: str, dtype: torch.dtype, layers: int | None = None, quick: bool = False):
    """A random-weight model of preset ``name`` on ``device`` in ``dtype``, wrapped in its cdviz adapter."""
    import transformers as tf

    from cdviz.models.qwen2vl import Qwen2_5_VLAdapter
    from cdviz.models.qwen3vl import Qwen3VLAdapter

    preset = quick_preset(name) if quick else copy.deepcopy(PRESETS[name])
    text = dict(preset["text"])
    if layers:
        text["num_hidden_layers"] = min(layers, text["num_hidden_layers"])
    ids = QUICK_IDS if quick else QWEN_SPECIAL_IDS
    if preset["family"] == "qwen2_5_vl":
        cfg = tf.Qwen2_5_VLConfig(text_config=text, vision_config=preset["vision"],
                                  tie_word_embeddings=preset["tie_word_embeddings"], **ids)
        cls, adapter_cls = tf.Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLAdapter
    else:
        cfg = tf.Qwen3VLConfig(text_config=text, vision_config=preset["vision"],
                               tie_word_embeddings=preset["tie_word_embeddings"], **ids)
        cls, adapter_cls = tf.Qwen3VLForConditionalGeneration, Qwen3VLAdapter
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):  # weights made where they live: no 15 GB pass through host memory
            model = cls(cfg)
    finally:
        torch.set_default_dtype(previous)
    model.to(device=device, dtype=dtype).eval()
    adapter = adapter_cls(model, processor=None)  # capture needs the layers, not a processor
    adapter.preset = name
    return adapter


def synthetic_inputs(adapter, *, seq_len: int, image_side: int, answer_tokens: int, device: str, seed: int = 0):
    """One sample of ``seq_len`` tokens holding an image of image_side x image_side tokens, with
    the last ``answer_tokens`` tokens labelled. Returns (inputs, labels, span, grid)."""
    cfg = adapter.config
    vision = cfg.vision_config
    merge, patch, tp = int(vision.spatial_merge_size), int(vision.patch_size), int(vision.temporal_patch_size)
    h = w = image_side * merge  # patches
    n_image = image_side * image_side
    if seq_len < n_image + answer_tokens + 8:
        raise ValueError(f"seq_len {seq_len} too short for {n_image} image tokens and {answer_tokens} answer tokens")
    g = torch.Generator().manual_seed(seed)
    low, high = (10, cfg.image_token_id - 8) if adapter.vocab_size < 1000 else (100, 150000)
    ids = torch.randint(low, high, (1, seq_len), generator=g)
    start = 4
    ids[0, start - 1] = cfg.vision_start_token_id
    ids[0, start:start + n_image] = cfg.image_token_id
    ids[0, start + n_image] = cfg.vision_end_token_id
    labels = torch.full_like(ids, -100)
    labels[0, -answer_tokens:] = ids[0, -answer_tokens:]
    pixels = torch.randn(h * w, 3 * tp * patch * patch, generator=g)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
              "mm_token_type_ids": (ids == cfg.image_token_id).to(torch.int32),
              "pixel_values": pixels.to(adapter.model.dtype), "image_grid_thw": torch.tensor([[1, h, w]])}
    inputs = {k: v.to(device) for k, v in inputs.items()}
    return inputs, labels.to(device), (start, start + n_image), (image_side, image_side)


# ---- timing ------------------------------------------------------------------------------------
def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(fn: Callable[[], Any], device: str, repeats: int) -> dict[str, float]:
    """Median seconds over ``repeats`` calls after one warm-up, and the allocator peak (CUDA)."""
    cuda = device.startswith("cuda")
    fn()
    _sync(device)
    times = []
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated() if cuda else 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
        del out
    peak = torch.cuda.max_memory_allocated() if cuda else 0
    # CPU: no allocator peak to read; 0 (reported as n/a)
    return {"median_s": statistics.median(times), "peak_bytes": int(peak), "peak_over_resident_bytes": int(peak - base)}


def bench_record(adapter, *, seq_len: int, image_side: int, device: str, repeats: int) -> dict[str, Any]:
    """(a) SDPA vs cdviz recording vs eager output_attentions on one real-size input."""
    from cdviz.record.capture import Capture, CapturePlan, SamplePlan

    inputs, _, span, grid = synthetic_inputs(adapter, seq_len=seq_len, image_side=image_side, answer_tokens=1,
                                             device=device)
    model = adapter.model
    plan = CapturePlan(list(range(adapter.n_layers)), [SamplePlan(span, [seq_len - 1])])
    checked: dict[str, float] = {}

    def sdpa():
        return model(**inputs, use_cache=False).logits

    def cdviz():
        with Capture(adapter, plan) as cap:
            model(**inputs, use_cache=False)
        return cap

    def eager():
        model.set_attn_implementation("eager")
        try:
            return model(**inputs, use_cache=False, output_attentions=True).attentions
        finally:
            model.set_attn_implementation("sdpa")

    with torch.no_grad():
        figures = {name: measure(fn, device, repeats) for name, fn in (("sdpa", sdpa), ("cdviz", cdviz),
                                                                     ("eager", eager))}
        # cdviz's recorded answer row against eager's, last layer (bf16 model, float32 softmax)
        cap, maps = cdviz(), eager()
        last = adapter.n_layers - 1
        got = cap.results[last].t2i[0][:, 0].float()
        want = maps[last][0, :, seq_len - 1, span[0]:span[1]].float().cpu()
        checked["max_abs_diff_t2i_last_layer"] = float((got - want).abs().max())
        del cap, maps
    return {"preset": adapter.preset, "seq_len": seq_len, "image_tokens": span[1] - span[0], "grid": list(grid),
            "layers": adapter.n_layers, "heads": adapter.n_heads, **figures, **checked,
            "cdviz_over_sdpa": figures["cdviz"]["median_s"] / figures["sdpa"]["median_s"],
            "eager_over_cdviz": figures["eager"]["median_s"] / figures["cdviz"]["median_s"]}


def _target_layers(n: int) -> list[int]:
    """The middle band, as cdviz's VAT default: layers from 1/2 to 3/4 of the depth, at most 4."""
    lo, hi = n // 2, max(n // 2 + 1, (3 * n) // 4)
    band = list(range(lo, hi))
    step = max(1, len(band) // 4)
    return band[::step][:4]


def bench_train(student, teacher, *, seq_len: int, image_side: int, device: str, steps: int,
                lr: float = 1e-5) -> dict[str, Any]:
    """(b) a few AdamW steps of the student's decoder per variant; the teacher is frozen."""
    import torch.nn.functional as F

    from cdviz.record.capture import Capture, CapturePlan, SamplePlan
    from cdviz.train.losses import logit_kd_loss
    from cdviz.vat import vat_loss

    inputs, labels, span, grid = synthetic_inputs(student, seq_len=seq_len, image_side=image_side,
                                                  answer_tokens=32, device=device)
    t_inputs = dict(inputs)
    s_layers = _target_layers(student.n_layers)
    t_layers = [round(i * (teacher.n_layers - 1) / max(1, student.n_layers - 1)) for i in s_layers]
    start, end = span
    for p in student.model.parameters():
        p.requires_grad_(False)
    trained = [p for p in student.language_model().parameters()]
    for p in trained:
        p.requires_grad_(True)
    student.model.train()

    def teacher_pass(vat: str):
        with torch.no_grad():
            if vat == "cdviz":
                plan = CapturePlan(t_layers, [SamplePlan(span, [])], with_grad=True)
                with Capture(teacher, plan) as cap:
                    logits = teacher.model(**t_inputs, use_cache=False).logits
                return logits, torch.stack([cap.blocks[i][0] for i in t_layers])[None]
            if vat == "eager":
                teacher.model.set_attn_implementation("eager")
                try:
                    out = teacher.model(**t_inputs, use_cache=False, output_attentions=True)
                finally:
                    teacher.model.set_attn_implementation("sdpa")
                blocks = torch.stack([out.attentions[i][0, :, start:end, start:end].float().mean(0) for i in t_layers])
                return out.logits, blocks[None]
            return teacher.model(**t_inputs, use_cache=False).logits, None

    def student_pass(vat: str):
        if vat == "cdviz":
            plan = CapturePlan(s_layers, [SamplePlan(span, [])], with_grad=True)
            with Capture(student, plan) as cap:
                logits = student.model(**inputs, use_cache=False).logits
            return logits, torch.stack([cap.blocks[i][0] for i in s_layers])[None]
        if vat == "eager":
            student.model.set_attn_implementation("eager")
            try:
                out = student.model(**inputs, use_cache=False, output_attentions=True)
            finally:
                student.model.set_attn_implementation("sdpa")
            blocks = torch.stack([out.attentions[i][0, :, start:end, start:end].float().mean(0) for i in s_layers])
            return out.logits, blocks[None]
        return student.model(**inputs, use_cache=False).logits, None

    results = {}
    for variant, vat in (("ce+kd", None), ("ce+kd+vat (cdviz)", "cdviz"), ("ce+kd+vat (eager maps)", "eager")):
        optimizer = torch.optim.AdamW(trained, lr=lr)
        losses: list[dict[str, float]] = []

        def step():
            t_logits, t_blocks = teacher_pass(vat)
            s_logits, s_blocks = student_pass(vat)
            ce = F.cross_entropy(s_logits[0, :-1].float(), labels[0, 1:], ignore_index=-100)
            kd = logit_kd_loss(s_logits, t_logits, labels)
            loss = ce + kd
            parts = {"ce": ce.item(), "kd": kd.item()}
            if s_blocks is not None:
                v = vat_loss(s_blocks.float(), t_blocks.float(), True, grid, grid)
                loss = loss + v
                parts["vat"] = v.item()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(parts)
            return None

        figures = measure(step, device, steps)
        figures.update(first=losses[0], last=losses[-1], steps=len(losses))
        results[variant] = figures
        del optimizer
    student.model.eval()
    return {"student": student.preset, "teacher": teacher.preset, "seq_len": seq_len, "image_tokens": end - start,
            "student_layers": student.n_layers, "teacher_layers": teacher.n_layers, "vat_student_layers": s_layers,
            "vat_teacher_layers": t_layers, "trained": "student decoder (vision tower and projector frozen)",
            "optimizer": f"AdamW lr={lr}", **results}


def bench_demo(device: str, n_items: int, dtype: str) -> dict[str, Any]:
    """(d) ``cdviz record`` of the bundled pair on ``n_items`` shapes probes."""
    root = Path(__file__).resolve().parents[2]
    teacher, student = root / "checkpoints" / "teacher", root / "checkpoints" / "student-kd"
    if not (teacher / "config.json").is_file() or not (student / "config.json").is_file():
        return {"skipped": f"no bundled pair under {root / 'checkpoints'}"}
    cli = [sys.executable, "-c", "from cdviz.cli import app; app()"]
    with tempfile.TemporaryDirectory() as tmp:
        probes, run = Path(tmp) / "probes", Path(tmp) / "run"
        subprocess.run([*cli, "probes", "make", "shapes", "--n", str(n_items), "--seed", "0", "--split", "test",
                        "--image-size", "48", "--out", str(probes)], check=True, capture_output=True, text=True)
        t0 = time.perf_counter()
        done = subprocess.run([*cli, "record", "--teacher", str(teacher), "--student", str(student), "--probes",
                               str(probes), "--out", str(run), "--device", device, "--dtype", dtype],
                              capture_output=True, text=True)
        seconds = time.perf_counter() - t0
    if done.returncode != 0:
        return {"error": (done.stderr or done.stdout).strip().splitlines()[-1:], "returncode": done.returncode}
    return {"items": n_items, "seconds": seconds, "items_per_s": n_items / seconds, "device": device, "dtype": dtype}


# ---- report --------------------------------------------------------------------------------------
def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n else "n/a"


def markdown(results: dict[str, Any]) -> str:
    env = results["environment"]
    lines = ["# cdviz GPU check", "", f"{env['device_name']}, torch {env['torch']}, transformers "
             f"{env['transformers']}, {results['dtype']}{' (quick: tiny sizes)' if results['quick'] else ''}.", ""]
    for r in results.get("record", []):
        lines += [f"## (a) record: {r['preset']}, T = {r['seq_len']} ({r['image_tokens']} image tokens), "
                  f"{r['layers']} layers", "", "| | median s | peak | peak over resident |", "|---|---|---|---|"]
        for k in ("sdpa", "cdviz", "eager"):
            lines.append(f"| {k} | {r[k]['median_s']:.4f} | {_gib(r[k]['peak_bytes'])} | "
                         f"{_gib(r[k]['peak_over_resident_bytes'])} |")
        lines += ["", f"cdviz / SDPA time {r['cdviz_over_sdpa']:.2f}x; eager / cdviz {r['eager_over_cdviz']:.2f}x; "
                  f"answer row vs eager, last layer: max |diff| {r['max_abs_diff_t2i_last_layer']:.2e}", ""]
    t = results.get("train")
    if t:
        lines += [f"## (b) train: {t['student']} ({t['student_layers']} layers) from {t['teacher']} "
                  f"({t['teacher_layers']} layers), T = {t['seq_len']}", "",
                  "| variant | s / step | peak | first loss | last loss |", "|---|---|---|---|---|"]
        for k, v in t.items():
            if isinstance(v, dict) and "median_s" in v:
                fmt = lambda d: ", ".join(f"{a} {b:.3f}" for a, b in d.items())  # noqa: E731
                lines.append(f"| {k} | {v['median_s']:.3f} | {_gib(v['peak_bytes'])} | {fmt(v['first'])} | "
                             f"{fmt(v['last'])} |")
        lines.append("")
    d = results.get("demo")
    if d:
        lines += ["## (d) demo record", "", json.dumps(d), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cdviz.bench.gpu_check", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.environ.get("OUT") or "gpu-check", help="results folder (default $OUT)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (CPU test of the same path)")
    ap.add_argument("--seq-len", type=int, default=None, help="tokens per input (default 2048; quick 96)")
    ap.add_argument("--layers", type=int, default=None, help="keep the first N decoder layers of every model")
    ap.add_argument("--steps", type=int, default=3, help="timed training steps per variant")
    ap.add_argument("--repeats", type=int, default=3, help="timed forwards per recording variant")
    ap.add_argument("--demo-items", type=int, default=None, help="items of (d) (default 300; quick 8); 0 skips it")
    ap.add_argument("--only", default="record,train,demo", help="parts to run, comma-separated")
    args = ap.parse_args(argv)

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"cdviz gpu-check: no CUDA GPU is visible (torch {torch.__version__}, "
              f"CUDA build {torch.version.cuda or 'none'}); nothing was measured and no results were written. "
              "Run `make gpu-check` on a machine with one GPU, or `python -m cdviz.bench.gpu_check --quick --device cpu` "
              "to test the code path.")
        return 0
    dtype = torch.bfloat16
    quick = args.quick
    seq_len = args.seq_len or (96 if quick else 2048)
    image_side = 4 if quick else 32
    parts = {p.strip() for p in args.only.split(",") if p.strip()}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cuda = args.device.startswith("cuda")
    import transformers

    results: dict[str, Any] = {
        "environment": {"device_name": torch.cuda.get_device_name(0) if cuda else platform.processor() or "cpu",
                        "torch": torch.__version__, "transformers": transformers.__version__,
                        "cuda": torch.version.cuda, "python": platform.python_version()},
        "dtype": "bfloat16", "quick": quick, "device": args.device, "record": []}
    t_start = time.perf_counter()

    def save():
        results["wall_s"] = time.perf_counter() - t_start
        (out / "results.json").write_text(json.dumps(results, indent=2))
        (out / "results.md").write_text(markdown(results))

    teacher = None
    if "record" in parts:
        for name in ("qwen2.5-vl-7b", "qwen3-vl-8b"):
            adapter = build(name, device=args.device, dtype=dtype, layers=args.layers, quick=quick)
            results["record"].append(bench_record(adapter, seq_len=seq_len, image_side=image_side,
                                                  device=args.device, repeats=args.repeats))
            print(json.dumps(results["record"][-1]), flush=True)
            if name == "qwen2.5-vl-7b" and "train" in parts:
                teacher = adapter
            del adapter
            if cuda:
                torch.cuda.empty_cache()
            save()
    if "train" in parts:
        teacher = teacher or build("qwen2.5-vl-7b", device=args.device, dtype=dtype, layers=args.layers, quick=quick)
        student = build("qwen2.5-vl-3b", device=args.device, dtype=dtype, layers=args.layers, quick=quick)
        results["train"] = bench_train(student, teacher, seq_len=seq_len, image_side=image_side, device=args.device,
                                       steps=args.steps)
        print(json.dumps(results["train"]), flush=True)
        del student, teacher
        if cuda:
            torch.cuda.empty_cache()
        save()
    demo_items = args.demo_items if args.demo_items is not None else (8 if quick else 300)
    if "demo" in parts and demo_items > 0:
        results["demo"] = bench_demo(args.device, demo_items, "bfloat16")
        print(json.dumps(results["demo"]), flush=True)
    save()
    print(markdown(results))
    print(f"written: {out / 'results.json'}, {out / 'results.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
