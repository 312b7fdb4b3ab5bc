"""Adapter for ``LlavaForConditionalGeneration`` (LLaVA-1.5 and the bundled shapes-world pair).

    LlavaForConditionalGeneration
    ├── model: LlavaModel
    │   ├── vision_tower            CLIP / SigLIP vision model
    │   ├── multi_modal_projector   connector: vision hidden -> text hidden
    │   └── language_model         decoder
    │       └── layers[i].self_attn   <- attention we record
    └── lm_head

Image tokens: one run of ``image_token_id`` per image, (crop / patch)^2 tokens (the CLS token
dropped under the "default" feature strategy), laid out row-major on a square grid.
"""

from __future__ import annotations

from typing import Any

from cdviz.models.base import Adapter


class LlavaAdapter(Adapter):
    arch = "LlavaForConditionalGeneration"

    def _encode(self, images, prompts) -> dict[str, Any]:
        # Right padding whatever the checkpoint's tokenizer says (many llava-hf ones pad left).
        return self.processor(images=images, text=prompts, return_tensors="pt", padding=True, padding_side="right")

    def _image_grids(self, inputs, n_images) -> list[list[tuple[int, int]]]:
        h, w = inputs["pixel_values"].shape[-2:]
        patch = self.config.vision_config.patch_size
        grid = (int(h) // patch, int(w) // patch)
        return [[grid] * n for n in n_images]
