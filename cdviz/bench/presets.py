"""Real-scale model presets: the published configs of today's VLMs, typed in (nothing is downloaded).

    PRESETS["qwen2.5-vl-7b"]              the config.json values that decide shapes and sizes
    preset_config(NAME, layers=N)        the transformers config object (first N decoder layers)
    build(NAME, layers=N, device, dtype) a random-weight model of that class, in its cdviz adapter
    param_count(NAME)                    parameters computed from the config alone (no allocation)
    memory_table(NAME)                   eager output_attentions bytes vs what cdviz's capture holds
    unknown_preset(NAME)                 the error naming the known presets

The numbers below are typed from the published config.json files of the hub checkpoints
(llava-hf/llava-1.5-7b-hf, llava-hf/llava-onevision-qwen2-{0.5b,7b}-ov-hf,
Qwen/Qwen2.5-VL-{3B,7B}-Instruct, Qwen/Qwen3-VL-{2B,8B}-Instruct, OpenGVLab/InternVL3-{1B,8B}-hf,
google/gemma-3-4b-it): hidden sizes, layers, heads, kv heads, head dims, MLP widths, vocabularies,
tied embeddings and vision tower dims. Settings that decide neither shapes nor sizes (rope scaling
details, token ids of unused specials) are left at transformers' defaults where not listed.
``published_params`` is the checkpoint's parameter count as its hub page gives it.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch

from cdviz.errors import OptionError

QWEN25_VISION = dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, patch_size=14,
                     spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                     fullatt_block_indexes=[7, 15, 23, 31], hidden_act="silu", in_channels=3, tokens_per_second=2)
QWEN_SPECIAL_IDS = dict(image_token_id=151655, video_token_id=151656, vision_start_token_id=151652,
                        vision_end_token_id=151653)
QWEN25_ROPE = {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]}
QWEN3_ROPE = {"rope_type": "default", "rope_theta": 5000000.0, "mrope_interleaved": True, "mrope_section": [24, 20, 20]}
#: SigLIP so400m-patch14-384 as LLaVA-OneVision uses it (its last layer dropped: 26 of 27).
SIGLIP_OV = dict(model_type="siglip_vision_model", hidden_size=1152, intermediate_size=4304, num_hidden_layers=26,
                 num_attention_heads=16, image_size=384, patch_size=14, vision_use_head=False)
#: InternViT-300M-448px-V2.5, InternVL3's vision tower.
INTERNVIT_300M = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                      image_size=[448, 448], patch_size=[14, 14], attention_bias=True, use_qk_norm=False,
                      layer_scale_init_value=0.1, norm_type="layer_norm", use_mean_pooling=True, hidden_act="gelu")

PRESETS: dict[str, dict[str, Any]] = {
    "llava-1.5-7b": dict(
        family="llava", arch="LlavaForConditionalGeneration", published_params=7.06e9,
        text=dict(model_type="llama", hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                  num_attention_heads=32, num_key_value_heads=32, vocab_size=32064, max_position_embeddings=4096,
                  rms_norm_eps=1e-5, pad_token_id=32001, tie_word_embeddings=False),
        vision=dict(model_type="clip_vision_model", hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                    num_attention_heads=16, image_size=336, patch_size=14, projection_dim=768,
                    hidden_act="quick_gelu"),
        top=dict(image_token_index=32000, vision_feature_layer=-2, vision_feature_select_strategy="default",
                 projector_hidden_act="gelu", tie_word_embeddings=False)),
    "llava-onevision-qwen2-0.5b": dict(
        family="llava_onevision", arch="LlavaOnevisionForConditionalGeneration", published_params=0.894e9,
        text=dict(model_type="qwen2", hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                  num_attention_heads=14, num_key_value_heads=2, vocab_size=152000, max_position_embeddings=32768,
                  rms_norm_eps=1e-6, tie_word_embeddings=True),
        vision=SIGLIP_OV,
        top=dict(image_token_index=151646, video_token_index=151647, vision_feature_layer=-1,
                 vision_feature_select_strategy="full", tie_word_embeddings=True)),
    "llava-onevision-qwen2-7b": dict(
        family="llava_onevision", arch="LlavaOnevisionForConditionalGeneration", published_params=8.03e9,
        text=dict(model_type="qwen2", hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                  num_attention_heads=28, num_key_value_heads=4, vocab_size=152128, max_position_embeddings=32768,
                  rms_norm_eps=1e-6, tie_word_embeddings=False),
        vision=SIGLIP_OV,
        top=dict(image_token_index=151646, video_token_index=151647, vision_feature_layer=-1,
                 vision_feature_select_strategy="full", tie_word_embeddings=False)),
    "qwen2.5-vl-3b": dict(
        family="qwen2_5_vl", arch="Qwen2_5_VLForConditionalGeneration", published_params=3.75e9,
        text=dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
                  num_key_value_heads=2, vocab_size=151936, max_position_embeddings=128000, rms_norm_eps=1e-6,
                  rope_parameters=QWEN25_ROPE, tie_word_embeddings=True),
        vision=dict(QWEN25_VISION, out_hidden_size=2048),
        top=dict(QWEN_SPECIAL_IDS, tie_word_embeddings=True)),
    "qwen2.5-vl-7b": dict(
        family="qwen2_5_vl", arch="Qwen2_5_VLForConditionalGeneration", published_params=8.29e9,
        text=dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                  num_key_value_heads=4, vocab_size=152064, max_position_embeddings=128000, rms_norm_eps=1e-6,
                  rope_parameters=QWEN25_ROPE, tie_word_embeddings=False),
        vision=dict(QWEN25_VISION, out_hidden_size=3584),
        top=dict(QWEN_SPECIAL_IDS, tie_word_embeddings=False)),
    "qwen3-vl-2b": dict(
        family="qwen3_vl", arch="Qwen3VLForConditionalGeneration", published_params=2.13e9,
        text=dict(hidden_size=2048, intermediate_size=6144, num_hidden_layers=28, num_attention_heads=16,
                  num_key_value_heads=8, head_dim=128, vocab_size=151936, max_position_embeddings=262144,
                  rms_norm_eps=1e-6, tie_word_embeddings=True, rope_parameters=QWEN3_ROPE),
        vision=dict(depth=24, hidden_size=1024, intermediate_size=4096, num_heads=16, patch_size=16,
                    spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=2048, num_position_embeddings=2304,
                    deepstack_visual_indexes=[5, 11, 17], hidden_act="gelu_pytorch_tanh", in_channels=3),
        top=dict(QWEN_SPECIAL_IDS, tie_word_embeddings=True)),
    "qwen3-vl-8b": dict(
        family="qwen3_vl", arch="Qwen3VLForConditionalGeneration", published_params=8.77e9,
        text=dict(hidden_size=4096, intermediate_size=12288, num_hidden_layers=36, num_attention_heads=32,
                  num_key_value_heads=8, head_dim=128, vocab_size=151936, max_position_embeddings=262144,
                  rms_norm_eps=1e-6, tie_word_embeddings=False, rope_parameters=QWEN3_ROPE),
        vision=dict(depth=27, hidden_size=1152, intermediate_size=4304, num_heads=16, patch_size=16,
                    spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=4096, num_position_embeddings=2304,
                    deepstack_visual_indexes=[8, 16, 24], hidden_act="gelu_pytorch_tanh", in_channels=3),
        top=dict(QWEN_SPECIAL_IDS, tie_word_embeddings=False)),
    "internvl3-1b": dict(
        family="internvl", arch="InternVLForConditionalGeneration", published_params=0.938e9,
        text=dict(model_type="qwen2", hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                  num_attention_heads=14, num_key_value_heads=2, vocab_size=151674, max_position_embeddings=32768,
                  rms_norm_eps=1e-6, tie_word_embeddings=False),
        vision=INTERNVIT_300M,
        top=dict(image_token_id=151667, downsample_ratio=0.5, projector_hidden_act="gelu", vision_feature_layer=-1,
                 vision_feature_select_strategy="default", tie_word_embeddings=False)),
    "internvl3-8b": dict(
        family="internvl", arch="InternVLForConditionalGeneration", published_params=7.94e9,
        text=dict(model_type="qwen2", hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                  num_attention_heads=28, num_key_value_heads=4, vocab_size=151674, max_position_embeddings=32768,
                  rms_norm_eps=1e-6, tie_word_embeddings=False),
        vision=INTERNVIT_300M,
        top=dict(image_token_id=151667, downsample_ratio=0.5, projector_hidden_act="gelu", vision_feature_layer=-1,
                 vision_feature_select_strategy="default", tie_word_embeddings=False)),
    "gemma-3-4b": dict(
        family="gemma3", arch="Gemma3ForConditionalGeneration", published_params=4.30e9,
        text=dict(model_type="gemma3_text", hidden_size=2560, intermediate_size=10240, num_hidden_layers=34,
                  num_attention_heads=8, num_key_value_heads=4, head_dim=256, vocab_size=262208,
                  max_position_embeddings=131072, rms_norm_eps=1e-6, query_pre_attn_scalar=256, sliding_window=1024,
                  tie_word_embeddings=True,
                  rope_parameters={"full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1000000.0},
                                   "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}}),
        vision=dict(model_type="siglip_vision_model", hidden_size=1152, intermediate_size=4304, num_hidden_layers=27,
                    num_attention_heads=16, image_size=896, patch_size=14, vision_use_head=False),
        top=dict(mm_tokens_per_image=256, image_token_index=262144, boi_token_index=255999, eoi_token_index=256000,
                 tie_word_embeddings=True)),
}

CONFIG_CLASSES = {"llava": "LlavaConfig", "llava_onevision": "LlavaOnevisionConfig", "qwen2_5_vl": "Qwen2_5_VLConfig",
                  "qwen3_vl": "Qwen3VLConfig", "internvl": "InternVLConfig", "gemma3": "Gemma3Config"}
#: Sequence lengths of the memory table (tokens).
TABLE_LENGTHS = (1024, 2048, 4096, 8192)
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def preset_names() -> list[str]:
    return list(PRESETS)


def unknown_preset(name: str) -> OptionError:
    return OptionError(f"--preset {name!r} is not a known preset; known: {', '.join(PRESETS)}")


def get_preset(name: str, layers: int | None = None) -> dict[str, Any]:
    """A deep copy of preset ``name``, keeping the first ``layers`` decoder layers when given."""
    if name not in PRESETS:
        raise unknown_preset(name)
    preset = copy.deepcopy(PRESETS[name])
    if layers is not None:
        if layers < 1:
            raise OptionError(f"--layers {layers}: give 1 or more")
        preset["text"]["num_hidden_layers"] = min(layers, preset["text"]["num_hidden_layers"])
    return preset


def preset_config(name: str, layers: int | None = None):
    """The transformers config object of preset ``name`` (first ``layers`` decoder layers)."""
    import transformers as tf

    preset = get_preset(name, layers)
    cls = getattr(tf, CONFIG_CLASSES[preset["family"]])
    cfg = cls(text_config=preset["text"], vision_config=preset["vision"], **preset["top"])
    cfg.architectures = [preset["arch"]]
    return cfg


def build(name: str, *, layers: int | None = None, device: str = "cpu", dtype: torch.dtype = torch.float32,
          attn_implementation: str = "sdpa"):
    """A random-weight model of preset ``name`` made on ``device`` in ``dtype`` (``device="meta"``:
    shapes only, nothing allocated), wrapped in its cdviz adapter (no processor: capture needs the
    layers, not a processor)."""
    import transformers as tf

    from cdviz.models.loading import ADAPTERS

    preset = get_preset(name, layers)
    cfg = preset_config(name, layers)
    cfg._attn_implementation = attn_implementation
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):  # weights made where they live: no 15 GB pass through host memory
            model = getattr(tf, preset["arch"])(cfg)
    finally:
        torch.set_default_dtype(previous)
    model.eval()
    adapter = ADAPTERS[preset["arch"]](model, processor=None)
    adapter.preset = name
    return adapter


# ---- sizes from the config alone ------------------------------------------------------------------
def _get(d: dict, key: str, default=None):
    return d[key] if key in d else default


def text_params(text: dict, family: str) -> int:
    """Decoder parameters: embeddings, layers (attention, MLP, norms), final norm, LM head."""
    h, inter, layers = text["hidden_size"], text["intermediate_size"], text["num_hidden_layers"]
    heads, kv = text["num_attention_heads"], text.get("num_key_value_heads", text["num_attention_heads"])
    d = text.get("head_dim") or h // heads
    vocab = text["vocab_size"]
    bias = family in ("qwen2_5_vl", "llava_onevision", "internvl")  # Qwen2 / 2.5 decoders: q, k, v biases
    attn = h * heads * d + 2 * h * kv * d + heads * d * h + (heads * d + 2 * kv * d if bias else 0)
    mlp = 3 * h * inter
    norms = 2 * h
    if family == "qwen3_vl":
        norms += 2 * d  # q_norm, k_norm
    if family == "gemma3":
        norms = 4 * h + 2 * d  # input, post-attention, pre- and post-feedforward; q_norm, k_norm
    embed = vocab * h
    head = 0 if text.get("tie_word_embeddings") else vocab * h
    return embed + layers * (attn + mlp + norms) + h + head


def _vit_layer(hv: int, iv: int) -> int:
    """A ViT encoder layer: q, k, v, out with biases, two LayerNorms, a two-matrix MLP with biases."""
    return 4 * (hv * hv + hv) + 4 * hv + (hv * iv + iv) + (iv * hv + hv)


def vision_params(preset: dict) -> int:
    """Vision tower + connector parameters."""
    family, v, h = preset["family"], preset["vision"], preset["text"]["hidden_size"]
    if family in ("qwen2_5_vl", "qwen3_vl"):
        hv, iv, p, tp = v["hidden_size"], v["intermediate_size"], v["patch_size"], v["temporal_patch_size"]
        merged, out = hv * v["spatial_merge_size"] ** 2, v["out_hidden_size"]
        attn = hv * 3 * hv + 3 * hv + hv * hv + hv
        if family == "qwen2_5_vl":
            block = attn + 3 * hv * iv + 2 * iv + hv + 2 * hv  # gated MLP with biases, two RMSNorms
            patch = 3 * tp * p * p * hv
            merger = hv + merged * merged + merged + merged * out + out  # RMSNorm, two linears
            return patch + v["depth"] * block + merger
        block = attn + 2 * hv * iv + iv + hv + 4 * hv  # plain MLP with biases, two LayerNorms
        patch = 3 * tp * p * p * hv + hv + v["num_position_embeddings"] * hv
        linears = merged * merged + merged + merged * out + out
        merger = 2 * hv + linears
        deepstack = len(v["deepstack_visual_indexes"]) * (2 * merged + linears)  # post-shuffle LayerNorm
        return patch + v["depth"] * block + merger + deepstack
    hv, iv, layers = v["hidden_size"], v["intermediate_size"], v["num_hidden_layers"]
    if family == "internvl":
        side, p = v["image_size"][0], v["patch_size"][0]
        n = (side // p) ** 2
        patch = 3 * p * p * hv + hv + hv + (n + 1) * hv  # conv + bias, CLS token, positions
        block = _vit_layer(hv, iv) + 2 * hv  # + the two layer scales
        merged = int(hv / preset["top"]["downsample_ratio"] ** 2)
        projector = 2 * merged + merged * h + h + h * h + h
        return patch + layers * block + projector
    side, p = v["image_size"], v["patch_size"]
    n = (side // p) ** 2
    if v["model_type"] == "clip_vision_model":  # conv without bias, CLS token, positions, pre- and post-LayerNorm
        tower = 3 * p * p * hv + hv + (n + 1) * hv + 2 * hv + layers * _vit_layer(hv, iv) + 2 * hv
    else:  # SigLIP: conv with bias, positions, post-LayerNorm
        tower = 3 * p * p * hv + hv + n * hv + layers * _vit_layer(hv, iv) + 2 * hv
    if family == "gemma3":
        return tower + hv + hv * h  # soft-embedding norm, input projection
    projector = hv * h + h + h * h + h
    if family == "llava_onevision":
        projector += h  # image_newline
    return tower + projector


def param_count(name: str, layers: int | None = None) -> int:
    """Parameters of preset ``name`` from its config alone (nothing is built)."""
    preset = get_preset(name, layers)
    return text_params(preset["text"], preset["family"]) + vision_params(preset)


# ---- attention memory: eager output_attentions against cdviz's capture ------------------------------
def memory_row(*, layers: int, heads: int, seq_len: int, image_tokens: int, query_rows: int = 1, batch: int = 1,
               dtype_bytes: int = 2, store_block: bool = False) -> dict[str, int]:
    """Attention bytes of one forward, from the shapes alone.

    eager:  output_attentions keeps every layer's [B, H, T, T] map in the model dtype.
    cdviz:  the capture (cdviz.record.capture) computes one layer at a time, in float32, the image
            block [H + 1, N, N] (the head mean rides along as head H) and a scratch of that shape,
            plus the Q query rows over the keys [H, Q, T]; it keeps per layer and sample t2i
            [H, Q, N], mass and entropy [H, Q], i2i and i2i_filt [H, N], i2i_paper [N] (and the
            head-mean block [N, N] with store_block). Transient buffers are reused across layers
            and samples, so they count once.
    """
    n, q, h, t = image_tokens, query_rows, heads, seq_len
    eager = layers * batch * h * t * t * dtype_bytes
    transient = (2 * (h + 1) * n * n + h * q * t) * 4
    kept_per_layer = h * q * n + 2 * h * q + 2 * h * n + n + (n * n if store_block else 0)
    kept = layers * batch * kept_per_layer * 4
    return {"T": t, "N": n, "eager_bytes": eager, "cdviz_transient_bytes": transient, "cdviz_kept_bytes": kept,
            "cdviz_bytes": transient + kept}


def memory_table(name: str, *, layers: int | None = None, lengths=TABLE_LENGTHS, image_tokens: int | None = None,
                 query_rows: int = 1, batch: int = 1, dtype: str = "bfloat16") -> list[dict[str, int]]:
    """``memory_row`` for preset ``name`` at each sequence length; the image holds ``image_tokens``
    tokens (default: half the sequence, as the GPU check's T = 2048 with a 32 x 32 grid)."""
    preset = get_preset(name, layers)
    text = preset["text"]
    rows = []
    for t in lengths:
        n = min(image_tokens, t - query_rows) if image_tokens else t // 2
        rows.append(memory_row(layers=text["num_hidden_layers"], heads=text["num_attention_heads"], seq_len=t,
                               image_tokens=n, query_rows=query_rows, batch=batch, dtype_bytes=DTYPE_BYTES[dtype]))
    return rows


def print_memory_table(name: str, rows: list[dict[str, int]], out, *, layers: int, heads: int, dtype: str,
                       batch: int = 1) -> None:
    from rich.table import Table

    table = Table("T", "image tokens N", "eager output_attentions", "cdviz held (transient + kept)",
                  "cdviz transient (1 layer)", "cdviz kept", "eager / cdviz",
                  title=f"{name}: attention memory of one forward, {layers} layers x {heads} heads, batch {batch}, "
                        f"eager in {dtype}, cdviz in float32 (computed from the config; no model built)")
    for r in rows:
        table.add_row(f"{r['T']:,}", f"{r['N']:,}", _size(r["eager_bytes"]), _size(r["cdviz_bytes"]),
                      _size(r["cdviz_transient_bytes"]), _size(r["cdviz_kept_bytes"]),
                      f"{r['eager_bytes'] / r['cdviz_bytes']:,.1f}x")
    out.print(table)


def _size(n: float) -> str:
    return f"{n / 2**30:,.2f} GiB" if n >= 2**30 else f"{n / 2**20:,.2f} MiB"


def ratio(a: float, b: float) -> float:
    return a / b if b else math.inf
