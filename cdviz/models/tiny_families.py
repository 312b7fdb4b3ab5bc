"""Tiny random-weight checkpoints of the newer VLM families, built from configs (no download).

Each builder writes what a hub checkpoint holds: config + safetensors, the tokenizer (word level,
with the family's special tokens), the family's own image processor (its PIL variant, so no
torchvision is needed) and a chat template shaped like the family's. Where the family's
processor class can be built without torchvision it is saved whole (``processor_config.json``);
otherwise its parts are saved and ``cdviz.models.loading.load_processor`` builds it back.

    build_tiny_family("qwen3vl", DIR, n_layers=2)   also through cdviz.models.tiny.build_tiny
    build_tiny_family_pair("gemma3", DIR) -> (DIR/teacher, DIR/student)   a same-family pair to distil

Sizes: hidden 64, 4 heads (2 kv heads), a 1-layer vision tower; images small enough that a test
runs in a second or two on a CPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import torch

from cdviz.models.tokenizer import build_word_tokenizer, default_vocabulary

FAMILY_ARCHS = ("qwen3vl", "qwen3vl_moe", "llava_next", "llava_onevision", "gemma3", "idefics3", "smolvlm",
                "internvl", "mistral3")
#: Image side (pixels) the tests use for each family (the grid is at least 2x2 there).
FAMILY_IMAGE_SIZE = {"qwen3vl": 64, "qwen3vl_moe": 64, "llava_next": 32, "llava_onevision": 32, "gemma3": 32,
                     "idefics3": 32, "smolvlm": 32, "internvl": 32, "mistral3": 32}
MEAN, STD = [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]
#: A same-family pair (build_tiny_family_pair): the student is shallower and narrower than the
#: teacher (so TAF maps 64-d teacher features into 32 d), with the same vision tower shape,
#: tokenizer, image processor and chat template.
PAIR_TEACHER = dict(n_layers=3, hidden=64, n_heads=4, n_kv_heads=2, seed=0)
PAIR_STUDENT = dict(n_layers=2, hidden=32, n_heads=2, n_kv_heads=1, seed=1)

# ---- chat templates (the families' layouts, role words as plain words) ----------------------------
QWEN_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}IMAGE"
    "{% else %}{{ c['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
QWEN_SPECIALS = ("<|im_start|>", "<|im_end|>")
QWEN_WORDS = ("user", "assistant", "system")


def qwen_template(image: str) -> str:
    return QWEN_TEMPLATE.replace("IMAGE", image)


LLAVA_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: "
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}<image>\n{% else %}{{ c['text'] }}{% endif %}{% endfor %}"
    " {% else %}ASSISTANT: {% for c in message['content'] %}{{ c['text'] }}{% endfor %}</s>{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
GEMMA3_TEMPLATE = (
    "<s>{% for message in messages %}<start_of_turn>{{ 'model' if message['role'] == 'assistant' else 'user' }}\n"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}<start_of_image>"
    "{% else %}{{ c['text'] }}{% endif %}{% endfor %}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
IDEFICS3_TEMPLATE = (
    "<s>{% for message in messages %}{{ message['role'] | capitalize }}:"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}<image>"
    "{% else %}{{ c['text'] }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)
MISTRAL3_TEMPLATE = (
    "<s>{% for message in messages %}{% if message['role'] == 'user' %}[INST]"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}[IMG]{% else %}{{ c['text'] }}{% endif %}{% endfor %}"
    "[/INST]{% else %}{% for c in message['content'] %}{{ c['text'] }}{% endfor %}</s>{% endif %}{% endfor %}"
)


def _text(vocab_size: int, tok, *, n_layers, hidden, n_heads, n_kv_heads, **extra) -> dict:
    return dict(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=n_layers,
                num_attention_heads=n_heads, num_key_value_heads=n_kv_heads, head_dim=hidden // n_heads,
                vocab_size=vocab_size, max_position_embeddings=2048, tie_word_embeddings=False,
                bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                **extra)


def _save_parts(out: Path, tok, image_processor, template: str) -> None:
    """A checkpoint whose processor needs torchvision for video: its parts and the template."""
    tok.save_pretrained(out)
    image_processor.save_pretrained(out)
    (out / "chat_template.jinja").write_text(template)


def build_tiny_family(
    arch: str,
    out: str | Path,
    *,
    n_layers: int = 2,
    n_heads: int = 4,
    n_kv_heads: int = 2,
    hidden: int = 64,
    seed: int = 0,
    vocabulary: Iterable[str] | None = None,
) -> Path:
    """Write a random-weight checkpoint of ``arch`` (one of FAMILY_ARCHS) with its processor to ``out``."""
    import transformers as tf

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    vocabulary = list(vocabulary) if vocabulary is not None else default_vocabulary()
    torch.manual_seed(seed)
    size = dict(n_layers=n_layers, hidden=hidden, n_heads=n_heads, n_kv_heads=n_kv_heads)
    head_dim = hidden // n_heads

    if arch in ("qwen3vl", "qwen3vl_moe"):
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        specials = (*QWEN_SPECIALS, "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")
        template = qwen_template("<|vision_start|><|image_pad|><|vision_end|>")
        tok = build_word_tokenizer([*QWEN_WORDS, *vocabulary], specials=specials,
                                   extra_special_tokens={"image_token": "<|image_pad|>"}, chat_template=template)
        # Qwen3-VL: 16 px patches, 2x2 merge; 32..128 px images keep their aspect (grids 1x1..4x4).
        image_processor = Qwen2VLImageProcessorPil(
            min_pixels=32 * 32, max_pixels=128 * 128, patch_size=16, merge_size=2, temporal_patch_size=2,
            image_mean=MEAN, image_std=STD,
        )
        ids = tok.convert_tokens_to_ids
        quarter = head_dim // 2 // 4
        rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_interleaved": True,
                "mrope_section": [head_dim // 2 - 2 * quarter, quarter, quarter]}
        text = _text(len(tok), tok, **size, rope_parameters=rope)
        vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=16, spatial_merge_size=2,
                      temporal_patch_size=2, out_hidden_size=hidden, num_position_embeddings=64,
                      deepstack_visual_indexes=[0])
        specials_ids = dict(image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
                            vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"))
        if arch == "qwen3vl":
            cfg = tf.Qwen3VLConfig(text_config=text, vision_config=vision, **specials_ids)
            model = tf.Qwen3VLForConditionalGeneration(cfg)
        else:
            text.update(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=hidden, decoder_sparse_step=1)
            cfg = tf.Qwen3VLMoeConfig(text_config=text, vision_config=vision, **specials_ids)
            model = tf.Qwen3VLMoeForConditionalGeneration(cfg)
        _save_parts(out, tok, image_processor, template)
    elif arch in ("llava_next", "llava_onevision"):
        # AnyRes: a 32 px base view plus 32 px crops of the image resized into the best of these
        # resolutions (h, w); the decoder sees the base grid then the unpadded crops with newlines.
        # 128x128 (16x16 crop tokens) is over OneVision's tiny anyres_max_9 budget of 9 * 4x4: shrunk.
        pinpoints = [[32, 64], [64, 32], [64, 64], [32, 96], [96, 32], [128, 128]]
        if arch == "llava_next":
            # LLaVA-NeXT (1.6): CLIP tower whose CLS token the "default" strategy drops; LLaVA template.
            from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

            template = LLAVA_TEMPLATE
            tok = build_word_tokenizer(["USER", "ASSISTANT", ":", *vocabulary], specials=["<image>"],
                                       extra_special_tokens={"image_token": "<image>"}, chat_template=template)
            image_processor = LlavaNextImageProcessorPil(
                size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, image_grid_pinpoints=pinpoints,
                image_mean=MEAN, image_std=STD)
            vision = dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                          num_attention_heads=2, image_size=32, patch_size=8, projection_dim=32)
            cfg = tf.LlavaNextConfig(
                vision_config=vision, text_config=dict(model_type="llama", **_text(len(tok), tok, **size)),
                image_token_id=tok.convert_tokens_to_ids("<image>"), image_grid_pinpoints=pinpoints,
                vision_feature_select_strategy="default", vision_feature_layer=-1)
            model = tf.LlavaNextForConditionalGeneration(cfg)
            processor = tf.LlavaNextProcessor(
                image_processor=image_processor, tokenizer=tok, patch_size=8, vision_feature_select_strategy="default",
                num_additional_image_tokens=1, chat_template=template)
            processor.save_pretrained(out)
        else:
            # LLaVA-OneVision: SigLIP tower (no CLS, "full"), Qwen2 decoder and template, anyres_max_9.
            from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
                LlavaOnevisionImageProcessorPil,
            )

            template = qwen_template("<image>\n")
            tok = build_word_tokenizer([*QWEN_WORDS, *vocabulary], specials=[*QWEN_SPECIALS, "<image>", "<video>"],
                                       extra_special_tokens={"image_token": "<image>", "video_token": "<video>"},
                                       chat_template=template)
            image_processor = LlavaOnevisionImageProcessorPil(
                size={"height": 32, "width": 32}, image_grid_pinpoints=pinpoints, image_mean=MEAN, image_std=STD)
            vision = dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                          num_attention_heads=2, image_size=32, patch_size=8)
            cfg = tf.LlavaOnevisionConfig(
                vision_config=vision, text_config=dict(model_type="qwen2", **_text(len(tok), tok, **size)),
                image_token_id=tok.convert_tokens_to_ids("<image>"),
                video_token_id=tok.convert_tokens_to_ids("<video>"),
                image_grid_pinpoints=pinpoints, vision_feature_select_strategy="full", vision_feature_layer=-1,
                vision_aspect_ratio="anyres_max_9")
            model = tf.LlavaOnevisionForConditionalGeneration(cfg)
            _save_parts(out, tok, image_processor, template)
            # What LlavaOnevisionProcessor saves beside its parts, so a machine with torchvision
            # (and cdviz without it) builds the stock processor.
            import json

            (out / "processor_config.json").write_text(json.dumps({
                "processor_class": "LlavaOnevisionProcessor", "num_image_tokens": (32 // 8) ** 2,
                "vision_feature_select_strategy": "full", "vision_aspect_ratio": "anyres_max_9",
                "image_token": "<image>", "video_token": "<video>"}, indent=2))
    elif arch == "gemma3":
        # Gemma 3: SigLIP tower (8x8 patches of a 32 px image) average-pooled to 4x4 = 16 soft
        # tokens between <start_of_image> and <end_of_image>; sliding-window and global layers,
        # image tokens attending to each other both ways (token_type_ids).
        from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

        marks = {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>"}
        template = GEMMA3_TEMPLATE
        tok = build_word_tokenizer(["user", "model", *vocabulary],
                                   specials=["<start_of_turn>", "<end_of_turn>", *marks.values()],
                                   extra_special_tokens=marks, chat_template=template)
        ids = tok.convert_tokens_to_ids
        image_processor = Gemma3ImageProcessorPil(size={"height": 32, "width": 32}, image_mean=MEAN, image_std=STD)
        text = _text(len(tok), tok, **size, query_pre_attn_scalar=head_dim, sliding_window=8,
                     layer_types=["sliding_attention" if (i + 1) % 2 else "full_attention" for i in range(n_layers)])
        cfg = tf.Gemma3Config(
            text_config=text,
            vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                               image_size=32, patch_size=4),
            mm_tokens_per_image=16, boi_token_index=ids(marks["boi_token"]), eoi_token_index=ids(marks["eoi_token"]),
            image_token_index=ids(marks["image_token"]), tie_word_embeddings=False)
        model = tf.Gemma3ForConditionalGeneration(cfg)
        tf.Gemma3Processor(image_processor=image_processor, tokenizer=tok, chat_template=template,
                           image_seq_length=16).save_pretrained(out)
    elif arch in ("idefics3", "smolvlm"):
        # Image splitting: an image whose longest side is over 32 px is resized (longest side up to
        # 64 px) and cut into 32 px tiles, each <fake_token_around_image><row_i_col_j><image> x 16,
        # followed by the whole image at 32 px: <fake_token_around_image><global-img><image> x 16.
        # 32 px / 4 px patches = 8x8, pixel shuffle by 2 -> 4x4 = 16 tokens per piece.
        marks = ["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>",
                 *(f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7))]
        template = IDEFICS3_TEMPLATE
        tok = build_word_tokenizer(["User", "Assistant", ":", *vocabulary], specials=marks,
                                   extra_special_tokens={"image_token": "<image>"}, chat_template=template)
        vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                      image_size=32, patch_size=4)
        text = dict(model_type="llama", **_text(len(tok), tok, **size))
        split = dict(do_image_splitting=True, size={"longest_edge": 64}, max_image_size={"longest_edge": 32},
                     image_mean=MEAN, image_std=STD)
        if arch == "idefics3":
            from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

            cfg = tf.Idefics3Config(vision_config=vision, text_config=text, scale_factor=2,
                                    image_token_id=tok.convert_tokens_to_ids("<image>"))
            model = tf.Idefics3ForConditionalGeneration(cfg)
            tf.Idefics3Processor(image_processor=Idefics3ImageProcessorPil(**split), tokenizer=tok, image_seq_len=16,
                                 chat_template=template).save_pretrained(out)
        else:
            from transformers.models.smolvlm.image_processing_pil_smolvlm import SmolVLMImageProcessorPil

            cfg = tf.SmolVLMConfig(vision_config=vision, text_config=text, scale_factor=2,
                                   image_token_id=tok.convert_tokens_to_ids("<image>"))
            model = tf.SmolVLMForConditionalGeneration(cfg)
            # SmolVLMProcessor needs torchvision (video) and num2words: saved as parts.
            _save_parts(out, tok, SmolVLMImageProcessorPil(**split), template)
            import json

            (out / "processor_config.json").write_text(json.dumps(
                {"processor_class": "SmolVLMProcessor", "image_seq_len": 16}, indent=2))
    elif arch == "internvl":
        # InternVL 3: the image resized onto the best grid of 32 px tiles (1..6 tiles) plus, when
        # there is more than one, a 32 px thumbnail; 8x8 patches + CLS per tile, the CLS dropped
        # and a pixel shuffle by 0.5 -> 4x4 = 16 <IMG_CONTEXT> tokens per tile, all between <img> and </img>.
        from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil

        marks = {"start_image_token": "<img>", "end_image_token": "</img>", "context_image_token": "<IMG_CONTEXT>",
                 "video_token": "<video>"}
        template = qwen_template("<IMG_CONTEXT>\n")
        tok = build_word_tokenizer([*QWEN_WORDS, *vocabulary], specials=[*QWEN_SPECIALS, *marks.values()],
                                   extra_special_tokens=marks, chat_template=template)
        image_processor = GotOcr2ImageProcessorPil(size={"height": 32, "width": 32}, crop_to_patches=True,
                                                   min_patches=1, max_patches=6, image_mean=MEAN, image_std=STD)
        cfg = tf.InternVLConfig(
            vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                               image_size=[32, 32], patch_size=[4, 4]),
            text_config=dict(model_type="qwen2", **_text(len(tok), tok, **size)),
            image_token_id=tok.convert_tokens_to_ids(marks["context_image_token"]), image_seq_length=16,
            downsample_ratio=0.5, vision_feature_select_strategy="default", vision_feature_layer=-1,
            tie_word_embeddings=False)
        model = tf.InternVLForConditionalGeneration(cfg)
        _save_parts(out, tok, image_processor, template)
        import json

        (out / "processor_config.json").write_text(json.dumps(
            {"processor_class": "InternVLProcessor", "image_seq_length": 16}, indent=2))
    elif arch == "mistral3":
        # Mistral 3 (Pixtral tower): the image keeps its aspect, longest side 32 px, sides rounded up
        # to 8 px (4 px patches, 2x2 patch merger); per row of merged patches [IMG] x cols then
        # [IMG_BREAK], the last row closed by [IMG_END].
        from transformers.models.pixtral.image_processing_pil_pixtral import PixtralImageProcessorPil

        marks = ["[INST]", "[/INST]", "[IMG]", "[IMG_BREAK]", "[IMG_END]"]
        template = MISTRAL3_TEMPLATE
        tok = build_word_tokenizer(vocabulary, specials=marks, extra_special_tokens={"image_token": "[IMG]"},
                                   chat_template=template)
        image_processor = PixtralImageProcessorPil(size={"longest_edge": 32}, patch_size={"height": 8, "width": 8},
                                                   image_mean=MEAN, image_std=STD)
        cfg = tf.Mistral3Config(
            vision_config=dict(model_type="pixtral", hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                               num_attention_heads=2, head_dim=16, image_size=32, patch_size=4),
            text_config=dict(model_type="mistral", **_text(len(tok), tok, **size)),
            image_token_index=tok.convert_tokens_to_ids("[IMG]"), spatial_merge_size=2, tie_word_embeddings=False)
        model = tf.Mistral3ForConditionalGeneration(cfg)
        _save_parts(out, tok, image_processor, template)
        import json

        (out / "processor_config.json").write_text(json.dumps(
            {"processor_class": "PixtralProcessor", "patch_size": 4, "spatial_merge_size": 2, "image_token": "[IMG]",
             "image_break_token": "[IMG_BREAK]", "image_end_token": "[IMG_END]"}, indent=2))
    else:
        raise ValueError(f"unknown tiny architecture {arch!r}; choose from {FAMILY_ARCHS}")
    model.save_pretrained(out)
    return out


def build_tiny_family_pair(arch: str, out: str | Path, *, teacher: dict | None = None, student: dict | None = None,
                           vocabulary: Iterable[str] | None = None) -> tuple[Path, Path]:
    """A teacher and a smaller student of ``arch`` in OUT/teacher and OUT/student.

    Both come from build_tiny_family with one vocabulary, so they share the tokenizer, the image
    token, the image processor and the chat template (what cdviz.models.load_pair checks); only the
    decoder's size (``teacher`` / ``student``: build_tiny_family keywords, default PAIR_TEACHER /
    PAIR_STUDENT) and the random weights differ.
    """
    out = Path(out)
    built = []
    for name, size in (("teacher", teacher or PAIR_TEACHER), ("student", student or PAIR_STUDENT)):
        built.append(build_tiny_family(arch, out / name, vocabulary=vocabulary, **size))
    return built[0], built[1]
