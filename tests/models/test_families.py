"""Adapters of today's VLM families on tiny random checkpoints built from configs,
saved and reloaded through ``load_model``: image spans and pieces found from the input ids, patch
grids, and cdviz's exact capture against eager ``output_attentions`` on a padded batch of 2."""

from __future__ import annotations

import warnings

import pytest
import torch
from PIL import Image

from cdviz.models import AdapterError, Piece, format_choice_prompt, load_model, primary_piece
from cdviz.models.tiny_families import FAMILY_ARCHS, build_tiny_family
from cdviz.record import Capture, CapturePlan, SamplePlan

#: Two image sizes (width, height) per family: a square and a wide one, chosen so that the
#: family's multi-piece layouts show (crops, tiles, thumbnails, rows of different lengths).
SIZES = {
    "qwen3vl": [(64, 64), (96, 64)],
    "qwen3vl_moe": [(64, 64), (96, 64)],
    "llava_next": [(40, 40), (70, 30)],
    "llava_onevision": [(40, 40), (70, 30)],
    "gemma3": [(40, 40), (70, 30)],
    "idefics3": [(30, 30), (70, 30)],
    "smolvlm": [(30, 30), (70, 30)],
    "internvl": [(30, 30), (70, 30)],
    "mistral3": [(30, 30), (70, 30)],
}
#: Pieces per image for those sizes: (roles of the first image, roles of the second).
ROLES = {
    "qwen3vl": (["image"], ["image"]),
    "qwen3vl_moe": (["image"], ["image"]),
    "llava_next": (["base", "crop"], ["base", "crop"]),
    "llava_onevision": (["base", "crop"], ["base", "crop"]),
    "gemma3": (["image"], ["image"]),
    "idefics3": (["tile"] * 4 + ["global"], ["tile"] * 2 + ["global"]),
    "smolvlm": (["tile"] * 4 + ["global"], ["tile"] * 2 + ["global"]),
    "internvl": (["image"], ["tile"] * 2 + ["thumbnail"]),
    "mistral3": (["image"], ["image"]),
}
TEXTS = [format_choice_prompt("Which caption best describes the image?", ["a red circle", "a blue square"]),
         "a red circle ."]  # different lengths: the second sample is padded


@pytest.fixture(scope="session")
def family_dir(tmp_path_factory):
    built = {}

    def get(arch: str):
        if arch not in built:
            built[arch] = build_tiny_family(arch, tmp_path_factory.mktemp(f"family-{arch}"))
        return built[arch]

    return get


@pytest.fixture(params=FAMILY_ARCHS)
def family(request):
    return request.param


def _load(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "built without its video processor"
        return load_model(path)


def _images(arch):
    return [Image.new("RGB", SIZES[arch][0], (255, 0, 0)), Image.new("RGB", SIZES[arch][1], (0, 0, 255))]


def _cells(piece: Piece) -> tuple[list[int], list[int]]:
    """(positions of the piece's patches, positions of its row-end tokens)."""
    rows, cols = piece.grid
    width = cols + piece.row_end
    start = piece.span[0]
    patches = [start + r * width + c for r in range(rows) for c in range(cols)]
    ends = [start + r * width + cols + k for r in range(rows) for k in range(piece.row_end)]
    return patches, ends


def test_pieces_cover_exactly_the_image_tokens(family_dir, family):
    adapter = _load(family_dir(family))
    batch = adapter.build_batch(_images(family), TEXTS)
    ids = batch.inputs["input_ids"]
    # tokens that may close a row: the newline embedding on an image token, Pixtral's break / end
    row_closers = {adapter.image_token_id, *(adapter._marks() if hasattr(adapter, "_marks") else ())}
    for b in range(2):
        (image,) = batch.pieces[b]
        assert [p.role for p in image] == ROLES[family][b]
        # pieces in token order, none overlapping
        assert all(p.span[1] <= q.span[0] for p, q in zip(image, image[1:]))
        covered, ends = [], []
        for p in image:
            assert p.span[1] - p.span[0] == p.n_tokens == p.token_grid[0] * p.token_grid[1]
            patches, row_ends = _cells(p)
            covered += patches
            ends += row_ends
        image_positions = torch.nonzero(ids[b] == adapter.image_token_id).flatten().tolist()
        # every patch is an image token; a row-end token is either an image token carrying the
        # newline embedding (LLaVA-NeXT) or a special break/end token (Pixtral)
        assert sorted(covered + [e for e in ends if e in image_positions]) == image_positions
        assert all(int(ids[b, e]) in row_closers for e in ends)
        # the primary piece is what image_spans / grids report
        main = primary_piece(image)
        assert batch.image_spans[b] == [main.span]
        assert batch.grids[b] == [main.token_grid]
        rows, cols = batch.grids[b][0]
        assert rows * cols == main.span[1] - main.span[0]
        # tiles: each place of the layout exactly once
        tiles = [p.place for p in image if p.role == "tile"]
        if tiles:
            n_rows, n_cols = tiles[0][2:]
            assert sorted((r, c) for r, c, _, _ in tiles) == [(r, c) for r in range(n_rows) for c in range(n_cols)]
        assert batch.inputs["attention_mask"][b, batch.answer_pos[b]] == 1
        assert batch.inputs["attention_mask"][b, batch.answer_pos[b] + 1:].sum() == 0
    assert adapter.n_layers == 2 and adapter.n_heads == 4 and adapter.n_kv_heads == 2
    assert len(adapter.attention_modules()) == 2
    # the model accepts the inputs (it checks its image features against the image tokens)
    with torch.no_grad():
        assert torch.isfinite(adapter.model(**batch.inputs).logits).all()


def test_grids_follow_the_image(family_dir):
    """Two sizes give the layouts the families' own rules give."""
    qwen = _load(family_dir("qwen3vl")).build_batch(_images("qwen3vl"), TEXTS)
    assert qwen.grids == [[(2, 2)], [(2, 3)]]  # 16 px patches, 2x2 merge: 64x64 and 96 (w) x 64 (h)
    nxt = _load(family_dir("llava_next")).build_batch(_images("llava_next"), TEXTS)
    assert [[p.grid for p in s[0]] for s in nxt.pieces] == [[(4, 4), (8, 8)], [(4, 4), (4, 10)]]
    assert [s[0][1].row_end for s in nxt.pieces] == [1, 1]
    mistral = _load(family_dir("mistral3")).build_batch(_images("mistral3"), TEXTS)
    assert [s[0][0].grid for s in mistral.pieces] == [(4, 4), (2, 4)]
    assert mistral.grids == [[(4, 5)], [(2, 5)]]  # the [IMG_BREAK]/[IMG_END] column included
    intern = _load(family_dir("internvl")).build_batch(_images("internvl"), TEXTS)
    assert [p.place for p in intern.pieces[1][0]] == [(0, 0, 1, 2), (0, 1, 1, 2), None]


def test_onevision_shrinks_large_crop_grids(family_dir):
    """Past anyres_max_9 crops' worth of tokens OneVision shrinks the crop grid; the adapter's
    count is the model's (build_batch checks the tokens; the forward checks the features)."""
    adapter = _load(family_dir("llava_onevision"))
    batch = adapter.build_batch([Image.new("RGB", (120, 120), (9, 9, 9))], ["a red circle ."])
    base, crop = batch.pieces[0][0]
    assert base.grid == (4, 4) and crop.grid == (12, 12)  # 16x16 unpadded, ratio 4/3 -> 12x12
    with torch.no_grad():
        adapter.model(**batch.inputs)


def test_processor_spans_match_the_stock_processor(family_dir):
    """Qwen3-VL expands its prompts itself (like Qwen2-VL); the stock processor, built here
    without its video part, writes the same tokens."""
    adapter = _load(family_dir("qwen3vl"))
    assert type(adapter.processor).__name__ == "Qwen3VLProcessor"
    images = _images("qwen3vl")
    batch = adapter.build_batch(images, TEXTS)
    stock = adapter.processor(images=images, text=[adapter.render_prompt(t) for t in TEXTS], return_tensors="pt",
                              padding=True, padding_side="right")
    assert torch.equal(stock["input_ids"], batch.inputs["input_ids"])
    assert torch.equal(stock["image_grid_thw"], batch.inputs["image_grid_thw"])


def test_smolvlm_expansion_matches_idefics3_processor(family_dir):
    """SmolVLM's processor needs torchvision and num2words; the adapter's own expansion writes
    what the (identical) Idefics3 processor writes."""
    smol, idefics = _load(family_dir("smolvlm")), _load(family_dir("idefics3"))
    images = _images("smolvlm")
    assert torch.equal(smol.build_batch(images, TEXTS).inputs["input_ids"],
                       idefics.build_batch(images, TEXTS).inputs["input_ids"])


def test_video_processor_missing_is_one_warning(family_dir):
    from cdviz.models import loading

    loading._WARNED_NO_VIDEO.discard("LlavaOnevisionProcessor")
    with pytest.warns(UserWarning, match="LlavaOnevisionProcessor built .* without its video processor"):
        loading.load_processor(family_dir("llava_onevision"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        processor = loading.load_processor(family_dir("llava_onevision"))  # said once
    assert type(processor).__name__ == "LlavaOnevisionProcessor" and not hasattr(processor, "video_processor")


def _sharpen(adapter):
    """Scale queries and keys so attention is far from uniform: a wrong scale or mask shows."""
    with torch.no_grad():
        for attn in adapter.attention_modules():
            for name, p in attn.named_parameters():
                if name in ("q_proj.weight", "k_proj.weight"):
                    p.mul_(12.0)
                elif name in ("q_norm.weight", "k_norm.weight"):
                    p.fill_(3.0)


def _text_rows(batch, b, span):
    start, end = span
    return [i for i in range(int(batch.answer_pos[b]) + 1) if not start <= i < end]


def test_capture_matches_eager(family_dir, family):
    adapter = _load(family_dir(family))
    _sharpen(adapter)
    batch = adapter.build_batch(_images(family), TEXTS)
    assert batch.inputs["attention_mask"].min() == 0, "the test needs a padded batch"
    with torch.no_grad():
        sdpa_logits = adapter.model(**batch.inputs).logits
    adapter.model.set_attn_implementation("eager")
    with torch.no_grad():
        eager = adapter.model(**batch.inputs, output_attentions=True).attentions  # L x [B, H, T, T]
    adapter.model.set_attn_implementation("sdpa")
    layers = list(range(adapter.n_layers))
    # the primary piece, then the last other piece of each image (crops, the last tile)
    plans = [[primary_piece(s[0]).span for s in batch.pieces],
             [([p for p in s[0] if not p.primary] or [primary_piece(s[0])])[-1].span for s in batch.pieces]]
    sharp = 0.0
    for spans in plans:
        plan = CapturePlan(layers, [SamplePlan(spans[b], _text_rows(batch, b, spans[b])) for b in range(2)],
                           store_block=True)
        with torch.no_grad(), Capture(adapter, plan) as cap:
            logits = adapter.model(**batch.inputs).logits
        torch.testing.assert_close(logits, sdpa_logits, atol=1e-5, rtol=1e-5)
        for layer in layers:
            res = cap.results[layer]
            for b in range(2):
                start, end = spans[b]
                rows = _text_rows(batch, b, spans[b])
                full = eager[layer][b].float()  # [H, T, T]
                sharp = max(sharp, float(full[:, rows].max()))
                torch.testing.assert_close(res.t2i[b], full[:, rows, start:end], atol=1e-5, rtol=0)
                torch.testing.assert_close(res.mass[b], full[:, rows, start:end].sum(-1), atol=1e-5, rtol=0)
                p = full[:, rows]
                entropy = -(p * torch.log(p.clamp_min(1e-30))).sum(-1)
                torch.testing.assert_close(res.entropy[b], entropy, atol=1e-5, rtol=0)
                block = full[:, start:end, start:end]
                torch.testing.assert_close(res.i2i[b], block.mean(1), atol=1e-5, rtol=0)
                torch.testing.assert_close(res.i2i_block[b], block.mean(0), atol=1e-5, rtol=0)
    assert sharp > 0.3, "attention stayed near uniform; the comparison would not see a wrong scale"
    assert adapter.model.config._attn_implementation == "sdpa"


def test_gemma3_image_tokens_see_each_other(family_dir):
    """Gemma 3's image tokens attend to later image tokens: the captured block is not causal,
    and equals eager's (the model's real mask), in the sliding and the global layer."""
    adapter = _load(family_dir("gemma3"))
    batch = adapter.build_batch(_images("gemma3"), TEXTS)
    assert "token_type_ids" in batch.inputs
    (start, end), = batch.image_spans[0]
    plan = CapturePlan([0, 1], [SamplePlan(batch.image_spans[b][0], []) for b in range(2)], store_block=True)
    with torch.no_grad(), Capture(adapter, plan) as cap:
        adapter.model(**batch.inputs)
    adapter.model.set_attn_implementation("eager")
    with torch.no_grad():
        eager = adapter.model(**batch.inputs, output_attentions=True).attentions
    adapter.model.set_attn_implementation("sdpa")
    for layer in (0, 1):
        block = cap.results[layer].i2i_block[0]
        assert float(block.triu(1).sum()) > 0.1  # above the diagonal: later image tokens
        torch.testing.assert_close(block, eager[layer][0, :, start:end, start:end].float().mean(0), atol=1e-5, rtol=0)


def test_letters_and_answers(family_dir, family):
    adapter = _load(family_dir(family))
    ids = adapter.letter_token_ids(4)
    assert len(set(ids)) == 4
    assert [adapter.tokenizer.decode([i]).strip() for i in ids] == ["A", "B", "C", "D"]
    assert adapter.answer_token_id("Yes") != adapter.answer_token_id("No")


def test_wrong_token_count_is_refused(family_dir):
    adapter = _load(family_dir("llava_next"))
    batch_inputs = adapter._encode([Image.new("RGB", (40, 40))], [adapter.render_prompt("a red circle .")])
    batch_inputs["image_sizes"] = torch.tensor([[30, 70]])  # crops of another image
    with pytest.raises(AdapterError, match="processor and model config disagree"):
        adapter.image_pieces(batch_inputs, [1], ["item"])
