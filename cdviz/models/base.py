"""What every model adapter provides, and the batch it builds.

An adapter wraps one HF multimodal model class and knows, for that architecture:
  - how to turn (image, user text) into model inputs with the model's own processor and chat
    template (right padding, so every real token keeps the positions it has unpadded);
  - where each image's tokens are, found per sample from the input ids (``image_token_id``);
  - each image's patch grid (rows x cols) as the decoder sees it;
  - for an image the model sees as several pieces (a base view and high-resolution crops, tiles
    and a global view or thumbnail), every piece: its span, grid, role and place (``Piece``);
  - the decoder layers and their attention modules, and the head counts;
  - the tokens of an answer word as the model would write it (``answer_token_ids``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from PIL import Image

from cdviz.errors import CdvizError
from cdviz.prompts import ANSWER_INSTRUCTION, LETTERS, format_choice_prompt  # noqa: F401 (re-exported)


class AdapterError(CdvizError, ValueError):
    """A model or input an adapter cannot use; the message says what to change."""


#: Roles of a piece that stands for the whole image (exactly one per image): the only piece,
#: the base view (LLaVA-NeXT / OneVision), the global view (Idefics3 / SmolVLM), the thumbnail (InternVL).
PRIMARY_ROLES = ("image", "base", "global", "thumbnail")
#: Roles of the other pieces: high-resolution crops stitched over the whole image (LLaVA-NeXT /
#: OneVision, ``place`` None) and one tile of a split image (Idefics3, InternVL, ``place`` set).
PIECE_ROLES = (*PRIMARY_ROLES, "crop", "tile")


@dataclass(frozen=True)
class Piece:
    """One contiguous piece of an image's tokens.

    span:     (start, end) token positions, end exclusive
    grid:     (rows, cols) of image patches in the piece
    role:     one of PIECE_ROLES
    place:    a tile's (row, col, n_rows, n_cols) in its image's tile layout; None otherwise
    row_end:  tokens closing each row that are not patches (LLaVA-NeXT's newline, Pixtral's
              [IMG_BREAK] / [IMG_END]): the span holds rows * (cols + row_end) tokens, row-major
    """

    span: tuple[int, int]
    grid: tuple[int, int]
    role: str = "image"
    place: tuple[int, int, int, int] | None = None
    row_end: int = 0

    @property
    def token_grid(self) -> tuple[int, int]:
        """(rows, cols + row_end): how the span's tokens lie, row-end tokens as a last column."""
        return self.grid[0], self.grid[1] + self.row_end

    @property
    def n_tokens(self) -> int:
        rows, cols = self.token_grid
        return rows * cols

    @property
    def primary(self) -> bool:
        return self.role in PRIMARY_ROLES


def primary_piece(pieces: Sequence[Piece]) -> Piece:
    """The piece standing for the whole image (see PRIMARY_ROLES)."""
    found = [p for p in pieces if p.primary]
    if len(found) != 1:
        raise AdapterError(f"an image needs exactly one base/global piece, got roles {[p.role for p in pieces]}")
    return found[0]


@dataclass
class Batch:
    """Model inputs plus where things are in them.

    inputs:       kwargs for ``model(**inputs)``; input_ids / attention_mask are [B, T]
    answer_pos:   [B] index of each sample's last real token (its logits predict the answer)
    image_spans:  per sample, per image: (start, end) token positions, end exclusive
    grids:        per sample, per image: (rows, cols) of the image tokens
    pieces:       per sample, per image: every Piece of the image in token order

    An image of several pieces is reported in ``image_spans`` / ``grids`` by its primary piece
    (base view, global view or thumbnail; ``primary_piece``), which is what capture, the store
    and the analyses use; the other pieces are listed in ``pieces`` only. A primary piece with
    row-end tokens (Pixtral) is reported with its ``token_grid``: the row-end tokens form the
    grid's last column.
    """

    inputs: dict[str, Any]
    answer_pos: torch.Tensor
    image_spans: list[list[tuple[int, int]]]
    grids: list[list[tuple[int, int]]]
    pieces: list[list[list[Piece]]] | None = None

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> Batch:
        moved = {}
        for k, v in self.inputs.items():
            if isinstance(v, torch.Tensor):
                v = v.to(device)
                if dtype is not None and v.is_floating_point():
                    v = v.to(dtype)
            moved[k] = v
        return Batch(moved, self.answer_pos.to(device), self.image_spans, self.grids, self.pieces)


def image_runs(ids: torch.Tensor, token_id: int, uid: str, n_images: int | None = None) -> list[tuple[int, int]]:
    """``find_runs`` of the image token in one sample, refused when there is none (unless
    ``n_images`` is 0: a text-only sample) or (given ``n_images``) when their number differs."""
    runs = find_runs(ids, token_id)
    if not runs and n_images == 0:
        return []
    if not runs:
        raise AdapterError(f"{uid}: no image tokens in the input; the item has no image the model can see")
    if n_images is not None and len(runs) != n_images:
        raise AdapterError(f"{uid}: {len(runs)} image token runs for {n_images} images")
    return runs


def find_runs(ids: torch.Tensor, token_id: int) -> list[tuple[int, int]]:
    """Maximal runs of ``token_id`` in the 1-D tensor ``ids`` as (start, end) pairs."""
    hit = (ids == token_id).to(torch.int8)
    if not bool(hit.any()):
        return []
    edges = torch.diff(torch.nn.functional.pad(hit, (1, 1)))
    starts = torch.nonzero(edges == 1).flatten().tolist()
    ends = torch.nonzero(edges == -1).flatten().tolist()
    return list(zip(starts, ends))


class Adapter:
    """Base adapter; subclasses set ``arch`` and implement ``_encode`` and ``_image_grids``."""

    arch: str = ""
    #: Diagram of the HF module tree this adapter relies on (kept in each subclass docstring).

    def __init__(self, model: torch.nn.Module, processor: Any):
        self.model = model
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.config = model.config
        self.text_config = model.config.get_text_config()
        self._answer_ids: dict[str, list[int]] = {}

    # ---- architecture facts -------------------------------------------------------------
    @property
    def image_token_id(self) -> int:
        return int(self.config.image_token_id)

    @property
    def n_layers(self) -> int:
        return int(self.text_config.num_hidden_layers)

    @property
    def n_heads(self) -> int:
        return int(self.text_config.num_attention_heads)

    @property
    def n_kv_heads(self) -> int:
        return int(getattr(self.text_config, "num_key_value_heads", None) or self.n_heads)

    @property
    def head_dim(self) -> int:
        hd = getattr(self.text_config, "head_dim", None)
        return int(hd) if hd else int(self.text_config.hidden_size) // self.n_heads

    @property
    def vocab_size(self) -> int:
        return int(self.text_config.vocab_size)

    def language_model(self) -> torch.nn.Module:
        return self.model.model.language_model

    def decoder_layers(self) -> list[torch.nn.Module]:
        return list(self.language_model().layers)

    def connector_modules(self) -> list[torch.nn.Module]:
        """The modules that carry vision features into the decoder (what training's "connector" opens)."""
        return [self.model.model.multi_modal_projector]

    def attention_modules(self) -> list[torch.nn.Module]:
        return [layer.self_attn for layer in self.decoder_layers()]

    def layer_name(self, i: int) -> str:
        return f"layers.{i}.self_attn"

    # ---- inputs -----------------------------------------------------------------------------
    def render_prompt(self, text: str) -> str:
        """The user turn with one image and ``text``, through the model's chat template."""
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def _encode(self, images: list[Image.Image], prompts: list[str]) -> dict[str, Any]:
        raise NotImplementedError

    def _image_grids(self, inputs: dict[str, Any], n_images: list[int]) -> list[list[tuple[int, int]]]:
        raise NotImplementedError

    def build_batch(self, images: Sequence[Image.Image], texts: Sequence[str], uids: Sequence[str] | None = None) -> Batch:
        """One image and one user text per sample -> a right-padded Batch with spans and grids."""
        uids = list(uids) if uids is not None else [f"sample {i}" for i in range(len(texts))]
        prompts = [self.render_prompt(t) for t in texts]
        inputs = dict(self._encode([img.convert("RGB") for img in images], prompts))
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        pieces = self.image_pieces(inputs, [1] * len(prompts), uids)
        spans: list[list[tuple[int, int]]] = []
        grids: list[list[tuple[int, int]]] = []
        for b, sample in enumerate(pieces):
            for image in sample:
                for p in image:
                    if p.span[1] - p.span[0] != p.n_tokens:
                        raise AdapterError(
                            f"{uids[b]}: {p.role} piece has {p.span[1] - p.span[0]} tokens but its grid is "
                            f"{'x'.join(map(str, p.token_grid))}={p.n_tokens}; the processor and model config disagree"
                        )
            spans.append([primary_piece(image).span for image in sample])
            grids.append([primary_piece(image).token_grid for image in sample])
        if bool((mask[:, 0] == 0).any()):
            # Left padding would shift every real token's position by the sample's pad count.
            raise AdapterError(
                f"{type(self).__name__}: the processor padded on the left; its _encode must pad on the right "
                f"so every token keeps the position it has unpadded"
            )
        # The last attended token; its logits predict the answer.
        answer_pos = mask.shape[1] - 1 - mask.flip(1).argmax(dim=1)
        return Batch(inputs=inputs, answer_pos=answer_pos, image_spans=spans, grids=grids, pieces=pieces)

    def image_pieces(self, inputs: dict[str, Any], n_images: list[int], uids: Sequence[str]) -> list[list[list[Piece]]]:
        """Per sample, per image, its pieces in token order, found from the input ids.

        The default: each image is one run of ``image_token_id`` on the grid ``_image_grids``
        gives. Adapters of models that see an image in several pieces override this.
        """
        ids = inputs["input_ids"]
        grids = self._image_grids(inputs, n_images)
        out = []
        for b in range(ids.shape[0]):
            runs = image_runs(ids[b], self.image_token_id, uids[b], len(grids[b]))
            out.append([[Piece(tuple(run), tuple(grid))] for run, grid in zip(runs, grids[b])])
        return out

    def letter_token_ids(self, n: int = 2) -> list[int]:
        """Answer token ids of the first ``n`` option letters (see ``answer_token_id``)."""
        return [self.answer_token_id(letter) for letter in LETTERS[:n]]

    # ---- answers ----------------------------------------------------------------------------
    def answer_token_ids(self, word: str) -> list[int]:
        """Every token of ``word`` as the model writes it as its whole answer after the prompt.

        Read from a rendered exchange, so the template decides what precedes the answer (a space
        after "ASSISTANT:", a newline) and the tokenizer how that splits ("Yes", "ĠYes", "▁Yes",
        "Y" + "es"). Raises AdapterError when the tokenizer cannot write ``word`` at all.
        """
        if word not in self._answer_ids:
            self._answer_ids[word] = self._find_answer_ids(word)
        return list(self._answer_ids[word])

    def answer_token_id(self, word: str, *alternatives: str) -> int:
        """The first token of the answer ``word``: the one whose logit at the answer position is
        scored. With ``alternatives`` (e.g. "yes" after "Yes"), the first spelling the model has."""
        refusals = []
        for w in (word, *alternatives):
            try:
                return self.answer_token_ids(w)[0]
            except AdapterError as e:
                refusals.append(e)
        if len(refusals) == 1:
            raise refusals[0]
        tried = "/".join(repr(w) for w in (word, *alternatives))
        raise AdapterError(f"{self._label()}: the tokenizer can write none of {tried} as an answer")

    def _answer_context(self, word: str) -> tuple[str, str]:
        """(text up to the answer position, that text followed by the answer ``word``)."""
        user = [{"type": "image"}, {"type": "text", "text": "x"}]
        prompt = self.processor.apply_chat_template(
            [{"role": "user", "content": user}], add_generation_prompt=True, tokenize=False
        )
        full = self.processor.apply_chat_template(
            [{"role": "user", "content": user}, {"role": "assistant", "content": [{"type": "text", "text": word}]}],
            tokenize=False,
        )
        # A template that does not extend the prompt, or writes something before the answer,
        # is read as answering right after the generation prompt.
        if not full.startswith(prompt) or not full[len(prompt):].lstrip().startswith(word):
            full = prompt + word
        return prompt, full

    def _find_answer_ids(self, word: str) -> list[int]:
        if not word.strip():
            raise AdapterError(f"{self._label()}: an empty answer has no tokens")
        prompt, full = self._answer_context(word)
        tok = self.tokenizer
        prompt_ids = tok(prompt, add_special_tokens=False).input_ids
        full_ids = tok(full, add_special_tokens=False).input_ids
        if full_ids[:len(prompt_ids)] == prompt_ids:
            cont = full_ids[len(prompt_ids):]
        else:
            # The answer merged with the prompt's last token (a prompt ending in a space, say);
            # the model still continues from the prompt's own tokens, so split the rest alone,
            # after a newline so that no tokenizer marks it as a new word ("▁Yes" for "Yes").
            # The newline's tokens are whitespace and dropped below.
            cont = tok("\n" + full[len(prompt):], add_special_tokens=False).input_ids

        def text(ids: list[int]) -> str:
            return "".join(tok.decode(ids).split())

        target = "".join(word.split())
        # Whitespace-only tokens before the word (a newline the assistant turn opens with, a lone
        # "Ġ") are left out: they are the same for every answer, so their logit tells none apart.
        # The answer ends at the first token that completes the word's text.
        start = 0
        while start < len(cont) and not text(cont[:start + 1]):
            start += 1
        for end in range(start + 1, len(cont) + 1):
            if text(cont[start:end]).startswith(target):
                ids = cont[start:end]
                if tok.unk_token_id is None or tok.unk_token_id not in ids:
                    return [int(i) for i in ids]
                break
        shown = tok.convert_ids_to_tokens(cont[start:start + 4])
        raise AdapterError(
            f"{self._label()}: the tokenizer cannot write the answer {word!r} (after the prompt it becomes "
            f"{shown}); use a model whose vocabulary has it"
        )

    def _label(self) -> str:
        """The model, as error messages name it."""
        return getattr(self, "source", "") or getattr(self.config, "_name_or_path", "") or self.arch or "the model"
