"""What every model adapter provides, and the batch it builds.

An adapter wraps one HF multimodal model class and knows, for that architecture:
  - how to turn (image, user text) into model inputs with the model's own processor and chat
    template (right padding, so every real token keeps the positions it has unpadded);
  - where each image's tokens are, found per sample from the input ids (``image_token_id``);
  - each image's patch grid (rows x cols) as the decoder sees it;
  - the decoder layers and their attention modules, and the head counts.
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


@dataclass
class Batch:
    """Model inputs plus where things are in them.

    inputs:       kwargs for ``model(**inputs)``; input_ids / attention_mask are [B, T]
    answer_pos:   [B] index of each sample's last real token (its logits predict the answer)
    image_spans:  per sample, per image: (start, end) token positions, end exclusive
    grids:        per sample, per image: (rows, cols) of the image tokens
    """

    inputs: dict[str, Any]
    answer_pos: torch.Tensor
    image_spans: list[list[tuple[int, int]]]
    grids: list[list[tuple[int, int]]]

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> Batch:
        moved = {}
        for k, v in self.inputs.items():
            if isinstance(v, torch.Tensor):
                v = v.to(device)
                if dtype is not None and v.is_floating_point():
                    v = v.to(dtype)
            moved[k] = v
        return Batch(moved, self.answer_pos.to(device), self.image_spans, self.grids)


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
        self._letter_ids: list[int] | None = None

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
        grids = self._image_grids(inputs, [1] * len(prompts))
        spans: list[list[tuple[int, int]]] = []
        for b in range(ids.shape[0]):
            runs = find_runs(ids[b], self.image_token_id)
            if not runs:
                raise AdapterError(f"{uids[b]}: no image tokens in the input; the item has no image the model can see")
            if len(runs) != len(grids[b]):
                raise AdapterError(f"{uids[b]}: {len(runs)} image token runs for {len(grids[b])} images")
            for (s, e), (r, c) in zip(runs, grids[b]):
                if e - s != r * c:
                    raise AdapterError(
                        f"{uids[b]}: image span has {e - s} tokens but the grid is {r}x{c}={r * c}; "
                        f"the processor and model config disagree"
                    )
            spans.append(runs)
        answer_pos = mask.sum(dim=1) - 1
        if not bool((mask.gather(1, answer_pos[:, None]) == 1).all()) or bool((mask[:, 0] == 0).any()):
            raise AdapterError("the processor padded on the left; cdviz needs right padding for exact positions")
        return Batch(inputs=inputs, answer_pos=answer_pos, image_spans=spans, grids=grids)

    def letter_token_ids(self, n: int = 2) -> list[int]:
        """Token ids of the option letters as the model would emit them right after the prompt."""
        if self._letter_ids is None:
            self._letter_ids = [self._answer_token_id(letter) for letter in LETTERS]
        return self._letter_ids[:n]

    def _answer_token_id(self, letter: str) -> int:
        # The template decides whether the answer is "A" or " A"; render a finished conversation,
        # cut the prompt off, and take the first token of what follows.
        user = [{"type": "image"}, {"type": "text", "text": "x"}]
        prompt = self.processor.apply_chat_template(
            [{"role": "user", "content": user}], add_generation_prompt=True, tokenize=False
        )
        full = self.processor.apply_chat_template(
            [{"role": "user", "content": user}, {"role": "assistant", "content": [{"type": "text", "text": letter}]}],
            tokenize=False,
        )
        cont = full[len(prompt):] if full.startswith(prompt) else letter
        cont = cont[: cont.index(letter) + 1] if letter in cont else letter
        ids = self.tokenizer(cont, add_special_tokens=False).input_ids
        if not ids:
            raise AdapterError(f"the tokenizer maps the answer letter {letter!r} to no token")
        return int(ids[-1]) if len(ids) > 1 and self.tokenizer.decode(ids[-1:]).strip() == letter else int(ids[0])
