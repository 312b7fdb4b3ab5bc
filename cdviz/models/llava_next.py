"""Adapters for ``LlavaNextForConditionalGeneration`` and ``LlavaOnevisionForConditionalGeneration`` (AnyRes).

    LlavaNextForConditionalGeneration / LlavaOnevisionForConditionalGeneration
    ├── model
    │   ├── vision_tower            CLIP (NeXT) / SigLIP (OneVision), run on the base view and every crop
    │   ├── multi_modal_projector   vision hidden -> text hidden
    │   ├── image_newline           learned embedding closing each row of the high-resolution grid
    │   └── language_model         decoder
    │       └── layers[i].self_attn   <- attention we record
    └── lm_head

Image tokens: one run of ``image_token_id`` per image, in two pieces:
  base   the whole image resized to the tower's size: side x side tokens (side = image_size / patch)
  crop   the image resized into the best of ``image_grid_pinpoints`` and cut into tower-sized crops,
         whose features are stitched into one grid over the whole image, unpadded (the letterbox
         rows or columns dropped), on OneVision shrunk (bilinear) when larger than
         ``anyres_max_N`` crops allow; each row closed by the newline embedding: rows x (cols + 1).
The sizes are computed with the model's own functions (``get_anyres_image_grid_shape``,
``unpad_image``), so they are what ``pack_image_features`` builds. The base view is the image's
primary piece (what ``Batch.image_spans`` / ``grids`` report); the crops are in ``Batch.pieces``.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from cdviz.models.base import Adapter, AdapterError, Piece, image_runs


class LlavaNextAdapter(Adapter):
    arch = "LlavaNextForConditionalGeneration"

    def _encode(self, images, prompts) -> dict[str, Any]:
        # Right padding whatever the checkpoint's tokenizer says (llava-hf ones pad left).
        return dict(self.processor(images=images, text=prompts, return_tensors="pt", padding=True,
                                   padding_side="right"))

    @property
    def base_side(self) -> int:
        vision = self.config.vision_config
        return int(vision.image_size) // int(vision.patch_size)

    def crop_grid(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """(rows, cols) of the stitched, unpadded crop features of an image of (height, width) pixels."""
        from transformers.models.llava_next.modeling_llava_next import get_anyres_image_grid_shape, unpad_image

        side = self.base_side
        n_h, n_w = get_anyres_image_grid_shape(list(image_size), self.config.image_grid_pinpoints,
                                               self.config.vision_config.image_size)
        stitched = torch.empty(0, n_h * side, n_w * side)
        rows, cols = unpad_image(stitched, list(image_size)).shape[1:]
        return int(rows), int(cols)

    def _pieces_of(self, span: tuple[int, int], image_size: tuple[int, int]) -> list[Piece]:
        start, _ = span
        side = self.base_side
        rows, cols = self.crop_grid(image_size)
        base_end = start + side * side
        return [Piece((start, base_end), (side, side), "base"),
                Piece((base_end, base_end + rows * (cols + 1)), (rows, cols), "crop", row_end=1)]

    def image_pieces(self, inputs, n_images, uids) -> list[list[list[Piece]]]:
        ids = inputs["input_ids"]
        sizes = [tuple(int(v) for v in hw) for hw in inputs["image_sizes"]]
        out, k = [], 0
        for b in range(ids.shape[0]):
            runs = image_runs(ids[b], self.image_token_id, uids[b], n_images[b])
            sample = []
            for run in runs:
                pieces = self._pieces_of(tuple(run), sizes[k])
                if pieces[-1].span[1] != run[1]:
                    raise AdapterError(
                        f"{uids[b]}: the image has {run[1] - run[0]} tokens but a base view and crops of "
                        f"{' + '.join(str(p.n_tokens) for p in pieces)}; the processor and model config disagree")
                sample.append(pieces)
                k += 1
            out.append(sample)
        return out

    def _image_grids(self, inputs, n_images) -> list[list[tuple[int, int]]]:
        # The primary (base view) grid of every image; crops are in image_pieces.
        return [[(self.base_side, self.base_side)] * n for n in n_images]


class LlavaOnevisionAdapter(LlavaNextAdapter):
    arch = "LlavaOnevisionForConditionalGeneration"

    def crop_grid(self, image_size: tuple[int, int]) -> tuple[int, int]:
        rows, cols = super().crop_grid(image_size)
        # pack_image_features: shrink the unpadded grid to about anyres_max_N crops' worth of tokens.
        aspect = str(getattr(self.config, "vision_aspect_ratio", "anyres_max_9"))
        max_crops = int(aspect.strip("anyres_max_"))
        ratio = math.sqrt(rows * cols / (max_crops * self.base_side ** 2))
        if ratio > 1.1:
            rows, cols = int(rows // ratio), int(cols // ratio)
        return rows, cols
