"""Adapters for ``Idefics3ForConditionalGeneration`` and ``SmolVLMForConditionalGeneration`` (image splitting).

    Idefics3ForConditionalGeneration / SmolVLMForConditionalGeneration
    ├── model
    │   ├── vision_model            SigLIP-style tower, run on every tile and on the global view
    │   ├── connector               pixel shuffle (scale_factor) + linear: (side/s)^2 tokens per piece
    │   └── text_model             Llama decoder
    │       └── layers[i].self_attn   <- attention we record
    └── lm_head

Image tokens, per image (the image processor decides rows x cols from the image's size; an
image no larger than one tile is not split, rows = cols = 0):

    <fake_token_around_image><row_1_col_1><image> x n  <fake_token_around_image><row_1_col_2><image> x n ... \\n
    ...
    \\n<fake_token_around_image><global-img><image> x n<fake_token_around_image>

so every piece is its own run of ``image_token_id``, named by the token before it: a tile
``<row_i_col_j>`` (role "tile", place (i-1, j-1, rows, cols)) or the global view ``<global-img>``
(role "global", the primary piece). n = (image_size / patch)^2 / scale_factor^2 on a square grid,
row-major (the pixel shuffle keeps the row-major order of the coarser grid).

When the checkpoint's processor cannot be built (SmolVLM's wants torchvision and num2words), the
prompt is expanded here with transformers' own ``get_image_prompt_string`` from the image
processor's rows and cols, the same text the processor writes.
"""

from __future__ import annotations

import math
import re
from typing import Any

from cdviz.models.base import Adapter, AdapterError, Piece, image_runs

_TILE = re.compile(r"<row_(\d+)_col_(\d+)>")


class Idefics3Adapter(Adapter):
    arch = "Idefics3ForConditionalGeneration"
    global_token = "<global-img>"

    def language_model(self):
        return self.model.model.text_model

    def connector_modules(self):
        return [self.model.model.connector]

    @property
    def image_seq_len(self) -> int:
        vision = self.config.vision_config
        return (int(vision.image_size) // int(vision.patch_size)) ** 2 // int(self.config.scale_factor) ** 2

    @property
    def piece_grid(self) -> tuple[int, int]:
        side = math.isqrt(self.image_seq_len)
        if side * side != self.image_seq_len:
            raise AdapterError(f"{self.image_seq_len} tokens per image piece is not a square; "
                               "cannot lay them on a grid")
        return side, side

    def _stock_processor(self) -> bool:
        return callable(self.processor) and hasattr(self.processor, "image_seq_len")

    def _encode(self, images, prompts) -> dict[str, Any]:
        nested = [[image] for image in images] if images else None
        if self._stock_processor():
            return dict(self.processor(images=nested, text=prompts, return_tensors="pt", padding=True,
                                       padding_side="right"))
        from transformers.models.smolvlm.processing_smolvlm import get_image_prompt_string

        image_inputs = dict(self.processor.image_processor(images=nested, return_tensors="pt",
                                                           return_row_col_info=True)) if nested else {}
        rows = [r for sample in image_inputs.pop("rows", []) for r in sample]
        cols = [c for sample in image_inputs.pop("cols", []) for c in sample]
        image_token = self.tokenizer.convert_ids_to_tokens(self.image_token_id)
        expanded, k = [], 0
        for prompt in prompts:
            parts = prompt.split(image_token)
            text = parts[0]
            for part in parts[1:]:
                text += get_image_prompt_string(rows[k], cols[k], self.image_seq_len, "<fake_token_around_image>",
                                                image_token, self.global_token) + part
                k += 1
            expanded.append(text)
        text_inputs = self.tokenizer(expanded, return_tensors="pt", padding=True, padding_side="right")
        return {**text_inputs, **image_inputs}

    def image_pieces(self, inputs, n_images, uids) -> list[list[list[Piece]]]:
        ids = inputs["input_ids"]
        tokens = self.tokenizer.convert_ids_to_tokens
        grid = self.piece_grid
        out = []
        for b in range(ids.shape[0]):
            runs = image_runs(ids[b], self.image_token_id, uids[b]) if n_images[b] else []
            images, tiles = [], []
            for start, end in runs:
                if end - start != self.image_seq_len:
                    raise AdapterError(f"{uids[b]}: an image piece has {end - start} tokens, the model makes "
                                       f"{self.image_seq_len}; the processor and model config disagree")
                mark = tokens(int(ids[b, start - 1])) if start > 0 else ""
                tile = _TILE.fullmatch(mark or "")
                if tile:
                    tiles.append(((start, end), int(tile.group(1)) - 1, int(tile.group(2)) - 1))
                elif mark == self.global_token:
                    n_rows = max((r for _, r, _ in tiles), default=-1) + 1
                    n_cols = max((c for _, _, c in tiles), default=-1) + 1
                    images.append([Piece(span, grid, "tile", (r, c, n_rows, n_cols)) for span, r, c in tiles]
                                  + [Piece((start, end), grid, "global")])
                    tiles = []
                else:
                    raise AdapterError(f"{uids[b]}: image tokens at {start} follow {mark!r}, neither a tile mark "
                                       f"<row_i_col_j> nor {self.global_token}")
            if tiles or len(images) != n_images[b]:
                raise AdapterError(f"{uids[b]}: {len(images)} complete images in the input for {n_images[b]}")
            out.append(images)
        return out

    def _image_grids(self, inputs, n_images) -> list[list[tuple[int, int]]]:
        # Every piece (tile or global view) has the same grid.
        return [[self.piece_grid] * n for n in n_images]


class SmolVLMAdapter(Idefics3Adapter):
    arch = "SmolVLMForConditionalGeneration"
