"""Chat conversations with an image, encoded for one model with labels on the answer tokens only.

    Example (HF chat messages + image) --render--> text, answer character ranges
      --encode--> Encoded(inputs, labels [B, T], image spans and grids, prompt ends, regions, route, absent)

Training batches them (cdviz.train.data) and evaluation scores answers with them
(cdviz.evaluate.answer_loglik); both read the same labels, so what is trained is what is scored.

Labels: the conversation is rendered once; each assistant turn is a character range of the
rendered text (prompt-so-far with the generation prompt .. conversation through that turn). The
range becomes token positions counted from the END of the sequence, by tokenising the text after
each boundary; the text after the first answer holds no image, so this does not depend on how the
processor expands the image token. The token ids are checked against the sequence, and a template
or tokenizer that merges tokens across an answer boundary is an error, not a silent shift.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from PIL import Image

from cdviz.errors import CdvizError
from cdviz.metrics import Grid, box_cover
from cdviz.models.base import AdapterError, primary_piece

IGNORE = -100  # the label of a token that is not scored (PyTorch's cross-entropy ignore_index)


class DataError(CdvizError, ValueError):
    """Training data that cannot be used; the message names the record and the fix."""


@dataclass
class Example:
    """One conversation in HF chat format; the image (if any) is a content part of a user turn."""

    uid: str
    messages: list[dict[str, Any]]
    image: Image.Image | None = None
    # Pixel boxes {"x", "y", "w", "h"} of what the answer is about, for the grounding loss; None: unknown.
    regions: list[dict[str, float]] | None = None
    # Words of the prompt that name what the answer is about, for the route loss; None: unknown.
    route_words: list[str] | None = None
    # The answer says what the prompt names is not in the image (a "no" to a match query or an
    # existence question): the presence loss wants the answer row off the image, not on regions.
    absent: bool = False


@dataclass
class Encoded:
    """One model's view of a batch.

    inputs:     model kwargs; input_ids / attention_mask [B, T], right padded
    labels:     [B, T] token ids on answer tokens, IGNORE elsewhere (unshifted)
    spans:      per sample the image token span (start, end) or None (no image)
    grids:      per sample the image's (rows, cols) or None
    prompt_end: per sample the row whose logits predict the first answer token
    regions:    per sample [N] share of each image patch inside the example's regions, or None
    route:      per sample bool [T], the prompt tokens of the example's route words, or None
    absent:     per sample whether the answer says the named thing is not in the image (Example.absent)
    """

    inputs: dict[str, Any]
    labels: torch.Tensor
    spans: list[tuple[int, int] | None]
    grids: list[Grid | None]
    prompt_end: list[int] = field(default_factory=list)
    regions: list[torch.Tensor | None] = field(default_factory=list)
    route: list[torch.Tensor | None] = field(default_factory=list)
    absent: list[bool] = field(default_factory=list)

    def to(self, device, dtype: torch.dtype | None = None) -> Encoded:
        moved = {k: (v.to(device, dtype) if dtype is not None and v.is_floating_point() else v.to(device))
                 if isinstance(v, torch.Tensor) else v for k, v in self.inputs.items()}
        regions = [r.to(device) if r is not None else None for r in self.regions]
        route = [r.to(device) if r is not None else None for r in self.route]
        return Encoded(moved, self.labels.to(device), self.spans, self.grids, self.prompt_end, regions, route,
                       self.absent)


def _special_suffix(tokenizer) -> int:
    """How many special tokens the tokenizer appends at the end of a text (0 for most)."""
    plain = tokenizer("a", add_special_tokens=False).input_ids
    full = tokenizer("a").input_ids
    for k in range(len(full) - len(plain) + 1):
        if full[k:k + len(plain)] == plain:
            return len(full) - len(plain) - k
    return 0


def render(processor, ex: Example) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character range of every assistant turn in it."""
    if not getattr(processor, "chat_template", None):
        raise DataError("the model's processor has no chat template; cdviz trains on chat-formatted conversations "
                        "(add chat_template.jinja to the model directory)")
    full = processor.apply_chat_template(ex.messages, tokenize=False)
    ranges = []
    for i, m in enumerate(ex.messages):
        if m["role"] != "assistant":
            continue
        prefix = processor.apply_chat_template(ex.messages[:i], tokenize=False, add_generation_prompt=True)
        through = processor.apply_chat_template(ex.messages[:i + 1], tokenize=False)
        if not (through.startswith(prefix) and full.startswith(through)):
            raise DataError(f"{ex.uid}: the chat template does not render turn by turn (a prefix changes when a "
                            "turn is added), so answer tokens cannot be located")
        ranges.append((len(prefix), len(through)))
    return full, ranges


def encode(adapter, examples: Sequence[Example], max_len: int | None = None) -> Encoded:
    """Examples -> model inputs for ``adapter`` with answer-only labels (see the module docstring)."""
    texts, ranges = zip(*(render(adapter.processor, ex) for ex in examples))
    images = [ex.image.convert("RGB") for ex in examples if ex.image is not None]
    tok = adapter.tokenizer
    side, tok.padding_side = tok.padding_side, "right"
    try:
        inputs = dict(adapter._encode(images or None, list(texts)))
    finally:
        tok.padding_side = side
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    if bool((mask[:, 0] == 0).any()):
        raise DataError("the processor padded on the left; cdviz trains with right padding")
    labels = torch.full_like(ids, IGNORE)
    suffix = _special_suffix(tok)
    for b, (text, rngs) in enumerate(zip(texts, ranges)):
        n = int(mask[b].sum())
        for start_c, end_c in rngs:
            tail = tok(text[start_c:], add_special_tokens=False).input_ids
            start = n - suffix - len(tail)
            end = n - suffix - len(tok(text[end_c:], add_special_tokens=False).input_ids)
            if start < 0 or ids[b, start:n - suffix].tolist() != tail:
                raise DataError(f"{examples[b].uid}: the text after an answer boundary tokenises differently inside "
                                "the conversation (tokens merge across the boundary, or an image follows it)")
            labels[b, start:end] = ids[b, start:end]
    n_images = [int(ex.image is not None) for ex in examples]
    try:
        pieces = adapter.image_pieces(inputs, n_images, [ex.uid for ex in examples])
    except AdapterError as e:
        raise DataError(str(e)) from e
    # An image seen in several pieces (tiles, crops, a thumbnail) is trained and measured on its
    # primary piece, as it is recorded (cdviz.models.base.Batch); Pixtral's row-end tokens are
    # the grid's last column there too.
    spans, grids, patch_grids = [], [], []
    for b, ex in enumerate(examples):
        if len(pieces[b]) != n_images[b]:
            raise DataError(f"{ex.uid}: {len(pieces[b])} images in the tokens for {n_images[b]} image(s)")
        main = primary_piece(pieces[b][0]) if pieces[b] else None
        spans.append(main.span if main else None)
        grids.append(main.token_grid if main else None)
        patch_grids.append((main.grid, main.row_end) if main else None)
    if max_len is not None and ids.shape[1] > max_len:
        for b, span in enumerate(spans):
            if span is not None and span[1] > max_len:
                raise DataError(f"{examples[b].uid}: image tokens reach past max_seq_len={max_len}; raise it")
        t = ids.shape[1]
        inputs = {k: v[:, :max_len] if isinstance(v, torch.Tensor) and v.dim() >= 2 and v.shape[1] == t
                  and k != "pixel_values" else v for k, v in inputs.items()}
        labels = labels[:, :max_len]
    prompt_end = []
    for b in range(len(examples)):
        hits = torch.nonzero(labels[b] != IGNORE).flatten()
        prompt_end.append(int(hits[0]) - 1 if len(hits) else -1)
    route = [_route_tokens(tok, ex, inputs["input_ids"][b], prompt_end[b], spans[b]) for b, ex in enumerate(examples)]
    return Encoded(inputs, labels, spans, grids, prompt_end,
                   [_region_cover(ex, g) for ex, g in zip(examples, patch_grids)], route,
                   [bool(ex.absent) for ex in examples])


def _route_tokens(tokenizer, ex: Example, ids: torch.Tensor, prompt_end: int, span) -> torch.Tensor | None:
    """bool [T]: the prompt tokens (before the answer, outside the image) that spell the example's
    route words, as the words stand alone or after a space; None when there are none."""
    if not ex.route_words or prompt_end < 0:
        return None
    wanted: set[int] = set()
    for w in ex.route_words:
        for text in (w, " " + w):
            wanted.update(tokenizer(text, add_special_tokens=False).input_ids)
    wanted -= set(tokenizer.all_special_ids) | set(tokenizer(" ", add_special_tokens=False).input_ids)
    on = torch.isin(ids, torch.tensor(sorted(wanted), dtype=ids.dtype))
    on[prompt_end + 1:] = False
    if span is not None:
        on[span[0]:span[1]] = False
    return on if bool(on.any()) else None


def _region_cover(ex: Example, grid: tuple[Grid, int] | None) -> torch.Tensor | None:
    """[rows * (cols + row_end)] share of each image token inside the example's regions (0 on
    row-end tokens); None without regions or image. ``grid``: the primary piece's (patch grid, row_end).

    The processors cdviz supports resize the whole image onto the patch grid, so pixel boxes map
    to patches through the image's own size.
    """
    if not ex.regions or grid is None or ex.image is None or grid[0][0] * grid[0][1] == 0:
        return None
    (rows, cols), row_end = grid
    cover = torch.from_numpy(box_cover(ex.regions, ex.image.size, (rows, cols))).float()  # [rows * cols]
    cover = torch.nn.functional.pad(cover.view(rows, cols), (0, row_end)).flatten()  # [rows * (cols + row_end)]
    return cover if bool(cover.any()) else None
