"""Small random-weight checkpoints of every supported architecture, built from configs.

Tests, benchmarks and the demo-model builder use these: they go through exactly the code path a
real checkpoint takes (``save_pretrained`` -> ``load_model``), with a word-level tokenizer and
the architecture's own image processor, so no download is ever needed.

    build_tiny("llava", DIR, n_layers=2, image_size=32, patch_size=8) -> DIR (model + processor)
    build_tiny("gemma3", DIR)   the newer families (FAMILY_ARCHS, cdviz.models.tiny_families): their
                                image sizes are fixed there, image_size / patch_size do not apply
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import torch
from transformers import (
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PaliGemmaConfig,
    PaliGemmaForConditionalGeneration,
    PaliGemmaProcessor,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
)
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

from cdviz.models.tiny_families import FAMILY_ARCHS, build_tiny_family
from cdviz.models.tokenizer import (
    LLAVA_CHAT_TEMPLATE,
    LLAVA_TEMPLATE_WORDS,
    QWEN2VL_CHAT_TEMPLATE,
    QWEN2VL_SPECIALS,
    QWEN2VL_TEMPLATE_WORDS,
    build_word_tokenizer,
    default_vocabulary,
)

TINY_ARCHS = ("llava", "qwen2vl", "paligemma")
IMAGE_MEAN = [0.5, 0.5, 0.5]
IMAGE_STD = [0.5, 0.5, 0.5]


def siglip_image_processor(image_size: int) -> SiglipImageProcessorPil:
    return SiglipImageProcessorPil(
        size={"height": image_size, "width": image_size}, image_mean=IMAGE_MEAN, image_std=IMAGE_STD, resample=2
    )


def llava_processor(vocabulary: Iterable[str], image_size: int, patch_size: int) -> LlavaProcessor:
    """The shapes-world processor: word tokenizer, SigLIP-style image processor, LLaVA template."""
    tok = build_word_tokenizer(
        [*LLAVA_TEMPLATE_WORDS, *vocabulary],
        specials=["<image>"],
        extra_special_tokens={"image_token": "<image>"},
        chat_template=LLAVA_CHAT_TEMPLATE,
    )
    return LlavaProcessor(
        image_processor=siglip_image_processor(image_size),
        tokenizer=tok,
        patch_size=patch_size,
        vision_feature_select_strategy="full",
        chat_template=LLAVA_CHAT_TEMPLATE,
    )


def llava_config(
    vocab_size: int,
    image_token_id: int,
    *,
    n_layers: int = 2,
    hidden: int = 64,
    n_heads: int = 4,
    n_kv_heads: int = 2,
    image_size: int = 32,
    patch_size: int = 8,
    vision_hidden: int = 32,
    vision_layers: int = 1,
    pad_token_id: int = 0,
    intermediate: int | None = None,
    bos_token_id: int | None = None,
    eos_token_id: int | None = None,
) -> LlavaConfig:
    vision = dict(
        model_type="siglip_vision_model", hidden_size=vision_hidden, intermediate_size=2 * vision_hidden,
        num_hidden_layers=vision_layers, num_attention_heads=2, image_size=image_size, patch_size=patch_size,
    )
    text = dict(
        model_type="llama", hidden_size=hidden, intermediate_size=intermediate or 2 * hidden, num_hidden_layers=n_layers,
        num_attention_heads=n_heads, num_key_value_heads=n_kv_heads, vocab_size=vocab_size,
        max_position_embeddings=1024, pad_token_id=pad_token_id, tie_word_embeddings=False,
        # Llama's defaults (1, 2) are not our tokenizer's <s>, </s>; generation must stop at </s>.
        bos_token_id=bos_token_id, eos_token_id=eos_token_id,
    )
    return LlavaConfig(
        vision_config=vision, text_config=text, image_token_id=image_token_id,
        vision_feature_select_strategy="full", vision_feature_layer=-1, projector_hidden_act="gelu",
    )


def build_tiny(
    arch: str,
    out: str | Path,
    *,
    n_layers: int = 2,
    n_heads: int = 4,
    n_kv_heads: int = 2,
    hidden: int = 64,
    image_size: int = 32,
    patch_size: int = 8,
    seed: int = 0,
    vocabulary: Iterable[str] | None = None,
    intermediate: int | None = None,
    vision_hidden: int = 32,
    vision_layers: int = 1,
) -> Path:
    """Write a random-weight ``arch`` checkpoint with its processor to ``out``."""
    out = Path(out)
    vocabulary = list(vocabulary) if vocabulary is not None else default_vocabulary()
    torch.manual_seed(seed)
    if arch == "llava":
        processor = llava_processor(vocabulary, image_size, patch_size)
        tok = processor.tokenizer
        cfg = llava_config(len(tok), processor.image_token_id, n_layers=n_layers, hidden=hidden, n_heads=n_heads,
                           n_kv_heads=n_kv_heads, image_size=image_size, patch_size=patch_size,
                           intermediate=intermediate, vision_hidden=vision_hidden, vision_layers=vision_layers,
                           bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
        model = LlavaForConditionalGeneration(cfg)
        processor.save_pretrained(out)
    elif arch == "qwen2vl":
        tok = build_word_tokenizer(
            [*QWEN2VL_TEMPLATE_WORDS, *vocabulary], specials=QWEN2VL_SPECIALS,
            extra_special_tokens={"image_token": "<|image_pad|>"}, chat_template=QWEN2VL_CHAT_TEMPLATE,
        )
        # Pixel budget fixed so every image becomes image_size/14 x image_size/14 patches.
        pixels = (image_size // 28 * 28) ** 2
        image_processor = Qwen2VLImageProcessorPil(
            min_pixels=pixels, max_pixels=pixels, patch_size=14, merge_size=2, temporal_patch_size=2,
            image_mean=IMAGE_MEAN, image_std=IMAGE_STD,
        )
        ids = tok.convert_tokens_to_ids
        head_dim = hidden // n_heads
        cfg = Qwen2VLConfig(
            text_config=dict(
                hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=n_layers,
                num_attention_heads=n_heads, num_key_value_heads=n_kv_heads, vocab_size=len(tok),
                max_position_embeddings=1024, tie_word_embeddings=False,
                bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                 "mrope_section": [head_dim // 8, head_dim // 8, head_dim // 4]},
            ),
            vision_config=dict(depth=1, embed_dim=32, hidden_size=hidden, num_heads=2, in_chans=3, patch_size=14,
                               spatial_merge_size=2, temporal_patch_size=2, mlp_ratio=2),
            image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
            vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"),
        )
        model = Qwen2VLForConditionalGeneration(cfg)
        tok.save_pretrained(out)
        image_processor.save_pretrained(out)
        (out / "chat_template.jinja").write_text(QWEN2VL_CHAT_TEMPLATE)
    elif arch == "paligemma":
        tok = build_word_tokenizer(vocabulary, specials=["<image>"], extra_special_tokens={"image_token": "<image>"})
        image_processor = siglip_image_processor(image_size)
        image_processor.image_seq_length = (image_size // patch_size) ** 2
        processor = PaliGemmaProcessor(image_processor=image_processor, tokenizer=tok)
        cfg = PaliGemmaConfig(
            text_config=dict(model_type="gemma", hidden_size=hidden, intermediate_size=2 * hidden,
                             num_hidden_layers=n_layers, num_attention_heads=n_heads, num_key_value_heads=n_kv_heads,
                             head_dim=hidden // n_heads, vocab_size=len(tok)),
            vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                               image_size=image_size, patch_size=patch_size),
            image_token_id=processor.image_token_id, projection_dim=hidden,
        )
        model = PaliGemmaForConditionalGeneration(cfg)
        processor.save_pretrained(out)
    elif arch in FAMILY_ARCHS:
        return build_tiny_family(arch, out, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv_heads, hidden=hidden,
                                 seed=seed, vocabulary=vocabulary)
    else:
        raise ValueError(f"unknown tiny architecture {arch!r}; choose from {TINY_ARCHS}")
    model.save_pretrained(out)
    return out
