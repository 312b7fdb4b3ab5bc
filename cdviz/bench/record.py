"""``cdviz bench record``: what recording costs next to a plain forward and to eager attention.

One process, one random-weight LLaVA-shaped model (by default the decoder layer shapes of the
paper's 1.8B student, Qwen1.5-1.8B: hidden 2048, 16 heads, MLP 5504; fewer layers), one input of ``seq_len`` tokens of which
``image_tokens`` are image tokens; timed side by side, interleaved over ``repeats`` rounds:

    (a) plain SDPA forward
    (b) cdviz recording: every requested layer, the answer row + the image->image block
    (c) eager attention with output_attentions=True (every layer's full T x T map)

Prints the median time ratios b/a and c/b, peak memory of each (CUDA: allocator peak; CPU: the
bytes of attention each approach materialises), the bytes stored per sample, and the analytic
attention memory of each approach for 7B-class shapes.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass

import torch
from transformers import LlavaForConditionalGeneration

from cdviz.errors import OptionError
from cdviz.models.llava import LlavaAdapter
from cdviz.models.loading import DTYPES
from cdviz.models.tiny import llava_config
from cdviz.record.capture import Capture, CapturePlan, SamplePlan

STORED_FIELDS_PER_HEAD = ("i2i", "i2i_filt")  # [H, N] each; t2i [H, Q, N]; mass, entropy [H, Q]


@dataclass
class BenchConfig:
    device: str = "cpu"
    seq_len: int = 1024
    image_tokens: int = 576
    n_layers: int = 4
    hidden: int = 2048
    n_heads: int = 16
    n_kv_heads: int = 16
    intermediate: int = 5504
    layers: tuple[int, ...] | None = None
    repeats: int = 5
    dtype: str = "float32"


def _model(cfg: BenchConfig):
    side = math.isqrt(cfg.image_tokens)
    if side * side != cfg.image_tokens:
        raise OptionError(f"--image-tokens {cfg.image_tokens} must be a square (e.g. 576 = 24 x 24)")
    if cfg.seq_len <= cfg.image_tokens + 2:
        raise OptionError(f"--seq-len {cfg.seq_len} must exceed --image-tokens {cfg.image_tokens} + 2")
    vocab = 512
    config = llava_config(vocab, image_token_id=5, n_layers=cfg.n_layers, hidden=cfg.hidden, n_heads=cfg.n_heads,
                          n_kv_heads=cfg.n_kv_heads, image_size=side * 4, patch_size=4, vision_hidden=64,
                          intermediate=cfg.intermediate)
    dtype = DTYPES[cfg.dtype]
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config).to(cfg.device, dtype).eval()
    ids = torch.randint(10, vocab, (1, cfg.seq_len))
    start = 3
    ids[0, start:start + cfg.image_tokens] = 5
    inputs = {"input_ids": ids.to(cfg.device), "attention_mask": torch.ones_like(ids).to(cfg.device),
              "pixel_values": torch.randn(1, 3, side * 4, side * 4, device=cfg.device, dtype=dtype)}
    return model, inputs, (start, start + cfg.image_tokens)


def sync_device(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_bench(cfg: BenchConfig) -> dict:
    model, inputs, span = _model(cfg)
    adapter = LlavaAdapter(model, processor=None)  # capture needs the layers, not a processor
    layers = list(cfg.layers) if cfg.layers is not None else list(range(cfg.n_layers))
    plan = CapturePlan(layers, [SamplePlan(span, [cfg.seq_len - 1])])
    return _time(cfg, model, adapter, inputs, plan)


def _time(cfg: BenchConfig, model, adapter, inputs: dict, plan: CapturePlan) -> dict:
    """Time plain SDPA, cdviz recording and eager output_attentions side by side on ``model``."""
    cuda = cfg.device.startswith("cuda")

    def plain():
        return model(**inputs, use_cache=False)

    def recording():
        with Capture(adapter, plan) as cap:
            out = model(**inputs, use_cache=False)
        return out, cap

    def eager():
        model.set_attn_implementation("eager")
        try:
            return model(**inputs, use_cache=False, output_attentions=True)
        finally:
            model.set_attn_implementation("sdpa")

    runs = {"sdpa": plain, "cdviz": recording, "eager": eager}
    times: dict[str, list[float]] = {k: [] for k in runs}
    peak: dict[str, int] = {}
    with torch.no_grad():
        for fn in runs.values():  # warm-up
            fn()
        for _ in range(cfg.repeats):
            for name, fn in runs.items():
                if cuda:
                    torch.cuda.reset_peak_memory_stats()
                sync_device(cfg.device)
                t0 = time.perf_counter()
                result = fn()
                sync_device(cfg.device)
                times[name].append(time.perf_counter() - t0)
                if cuda:
                    peak[name] = torch.cuda.max_memory_allocated()
                elif name == "eager":
                    peak[name] = sum(a.numel() * a.element_size() for a in result.attentions)
                elif name == "cdviz":
                    _, cap = result
                    peak[name] = _captured_bytes(cap, 4)
                else:
                    peak[name] = 0
                del result
    _, cap = recording()
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "config": cfg.__dict__, "median_s": med,
        "ratio_cdviz_over_sdpa": med["cdviz"] / med["sdpa"],
        "ratio_eager_over_cdviz": med["eager"] / med["cdviz"],
        "peak_bytes": peak, "peak_kind": "cuda allocator peak" if cuda else "attention bytes materialised",
        "stored_bytes_per_sample": _captured_bytes(cap, 2),
        "analytic_7b": analytic_memory(),
    }


def _captured_bytes(cap: Capture, bytes_per_value: int) -> int:
    total = 0
    for res in cap.results.values():
        for name in ("t2i", "mass", "entropy", "i2i", "i2i_filt", "i2i_paper", "i2i_block"):
            total += sum(t.numel() for t in getattr(res, name))
    return total * bytes_per_value


def analytic_memory(layers: int = 32, heads: int = 32, image_tokens: int = 576, query_rows: int = 1,
                    bytes_per_value: int = 2) -> list[dict]:
    """Attention memory per sample for a 7B-class decoder (32 layers x 32 heads), bf16.

    eager + output_attentions keeps every layer's [H, T, T] map; cdviz holds one layer's
    [H, N + Q, T] rows at a time (fp32) and keeps [H, N] x 2 + [H, Q, N] + [H, Q] x 2 per layer.
    """
    rows = []
    for t in (1024, 2048, 4096):
        eager = layers * heads * t * t * bytes_per_value
        transient = heads * (image_tokens + query_rows) * t * 4
        kept = layers * (heads * (2 * image_tokens + query_rows * image_tokens + 2 * query_rows) + image_tokens) * 2
        rows.append({"T": t, "eager_bytes": eager, "cdviz_transient_bytes": transient, "cdviz_kept_bytes": kept})
    return rows


def print_bench(r: dict, out) -> None:
    """The ``run_bench`` result as ``cdviz bench record`` prints it: times, peaks, ratios, 7B-class memory."""
    from rich.table import Table

    c = r["config"]
    if r.get("preset"):
        out.print(f"preset {r['preset']}: its text decoder (random weights; vision tower not built)")
    out.print(f"model: {c['n_layers']} layers, hidden {c['hidden']}, MLP {c['intermediate']}, "
              f"{c['n_heads']} heads ({c['n_kv_heads']} kv), "
              f"T={c['seq_len']} with {c['image_tokens']} image tokens, {c['device']} {c['dtype']}")
    table = Table("approach", "median s", f"peak ({r['peak_kind']})")
    for name in ("sdpa", "cdviz", "eager"):
        table.add_row(name, f"{r['median_s'][name]:.4f}", _mib(r["peak_bytes"][name]))
    out.print(table)
    out.print(f"ratio cdviz / sdpa  (b/a): {r['ratio_cdviz_over_sdpa']:.3f}")
    out.print(f"ratio eager / cdviz (c/b): {r['ratio_eager_over_cdviz']:.3f}")
    out.print(f"stored per sample (fp16): {_mib(r['stored_bytes_per_sample'])}")
    t7 = Table("T", "eager output_attentions", "cdviz transient (1 layer)", "cdviz kept",
               title="7B-class analytic attention memory per sample (32 layers x 32 heads, 576 image tokens, bf16)")
    for row in r["analytic_7b"]:
        t7.add_row(str(row["T"]), _mib(row["eager_bytes"]), _mib(row["cdviz_transient_bytes"]), _mib(row["cdviz_kept_bytes"]))
    out.print(t7)


def build_decoder(name: str, *, layers: int | None, device: str, dtype: str):
    """The text decoder of preset ``name`` (its own transformers class, first ``layers`` layers) with
    random weights on ``device``; the vision tower is not built (it costs the same in all three
    approaches). Returns an adapter-like object: ``.model`` (the decoder) and ``attention_modules()``."""
    from types import SimpleNamespace

    from cdviz.bench.presets import build

    shell = build(name, layers=layers, device="meta")  # the whole model, shapes only: nothing allocated
    text_config = shell.model.config.get_text_config()
    text_config._attn_implementation = "sdpa"
    decoder_cls = type(shell.language_model())
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(DTYPES[dtype])
    try:
        with torch.device(device):
            decoder = decoder_cls(text_config)
    finally:
        torch.set_default_dtype(previous)
    decoder.to(device=device, dtype=DTYPES[dtype]).eval()
    return SimpleNamespace(model=decoder, attention_modules=lambda: [layer.self_attn for layer in decoder.layers],
                           n_layers=len(decoder.layers), n_heads=int(text_config.num_attention_heads),
                           n_kv_heads=int(text_config.num_key_value_heads), hidden=int(text_config.hidden_size),
                           intermediate=int(text_config.intermediate_size), vocab=int(text_config.vocab_size))


def run_preset_bench(name: str, *, layers: int | None = None, device: str = "cpu", seq_len: int = 1024,
                     image_tokens: int = 576, record_layers: tuple[int, ...] | None = None, repeats: int = 5,
                     dtype: str = "float32") -> dict:
    """``run_bench`` on the text decoder of preset ``name`` (cdviz.bench.presets): the same three
    approaches, timed side by side; the image is a span of ``image_tokens`` positions of the input."""
    if seq_len <= image_tokens + 2:
        raise OptionError(f"--seq-len {seq_len} must exceed --image-tokens {image_tokens} + 2")
    dec = build_decoder(name, layers=layers, device=device, dtype=dtype)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(10, dec.vocab, (1, seq_len), generator=g).to(device)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    span = (3, 3 + image_tokens)
    wanted = list(record_layers) if record_layers is not None else list(range(dec.n_layers))
    plan = CapturePlan(wanted, [SamplePlan(span, [seq_len - 1])])
    cfg = BenchConfig(device=device, seq_len=seq_len, image_tokens=image_tokens, n_layers=dec.n_layers,
                      hidden=dec.hidden, n_heads=dec.n_heads, n_kv_heads=dec.n_kv_heads, intermediate=dec.intermediate,
                      layers=tuple(wanted), repeats=repeats, dtype=dtype)
    result = _time(cfg, dec.model, dec, inputs, plan)
    result["preset"] = name
    return result


def _mib(n: int) -> str:
    return f"{n / 2**20:,.2f} MiB"
