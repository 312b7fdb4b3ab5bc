"""Adapter for ``Gemma3ForConditionalGeneration``.

    Gemma3ForConditionalGeneration
    ├── model: Gemma3Model
    │   ├── vision_tower            SigLIP vision model
    │   ├── multi_modal_projector   average pool to mm_tokens_per_image, RMS norm, linear
    │   └── language_model         Gemma 3 decoder: sliding-window and global layers, q/k norms
    │       └── layers[i].self_attn   <- attention we record
    └── lm_head

Image tokens: ``\\n\\n <start_of_image> <image_soft_token> x mm_tokens_per_image <end_of_image> \\n\\n``,
one run of soft tokens per image on a square grid (the pooled patch grid, row-major).

The image's soft tokens attend to each other both ways: the model builds that mask from
``token_type_ids`` (1 on image tokens), OR-ed with the causal mask and, in sliding layers, AND-ed
with the window. cdviz's capture computes probabilities with the mask the model passes to each
layer, so they are the model's real ones; ``_encode`` makes sure ``token_type_ids`` is always
there (without it the model would run a purely causal mask it was not trained with).
"""

from __future__ import annotations

import math
from typing import Any

from cdviz.models.base import Adapter, AdapterError


class Gemma3Adapter(Adapter):
    arch = "Gemma3ForConditionalGeneration"

    @property
    def image_token_id(self) -> int:
        return int(self.config.image_token_id)

    def _encode(self, images, prompts) -> dict[str, Any]:
        # One list of images per prompt: a flat list would be read as every image in the first prompt.
        nested = [[image] for image in images] if images else None
        inputs = dict(self.processor(images=nested, text=prompts, return_tensors="pt", padding=True,
                                     padding_side="right"))
        inputs.pop("num_crops", None)
        if "token_type_ids" not in inputs:
            inputs["token_type_ids"] = (inputs["input_ids"] == self.image_token_id).long()
        return inputs

    def _image_grids(self, inputs, n_images) -> list[list[tuple[int, int]]]:
        n = int(self.config.mm_tokens_per_image)
        side = math.isqrt(n)
        if side * side != n:
            raise AdapterError(f"mm_tokens_per_image {n} is not a square; cannot lay the image tokens on a grid")
        return [[(side, side)] * k for k in n_images]
