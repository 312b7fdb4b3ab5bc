"""Adapters for ``Qwen2VLForConditionalGeneration`` and ``Qwen2_5_VLForConditionalGeneration``.

    Qwen2VLForConditionalGeneration
    ├── model: Qwen2VLModel
    │   ├── visual                  ViT with a 2x2 patch merger (the connector is inside)
    │   └── language_model         Qwen2 decoder with multimodal RoPE
    │       └── layers[i].self_attn   <- attention we record
    └── lm_head

Image tokens: ``<|vision_start|> <|image_pad|> x n <|vision_end|>`` with n = t*h*w / merge^2
from ``image_grid_thw``; the grid the decoder sees is (h / merge) x (w / merge).

Inputs are built from the checkpoint's own image processor and tokenizer with the processor's
expansion rule, so a machine without torchvision (whose absence stops transformers from
building Qwen2-VL's video processor) still gets exactly the processor's token layout.
"""

from __future__ import annotations

from typing import Any

import torch

from cdviz.models.base import Adapter


class Qwen2VLAdapter(Adapter):
    arch = "Qwen2VLForConditionalGeneration"

    def connector_modules(self) -> list[torch.nn.Module]:
        # The patch merger, and Qwen3-VL's deepstack mergers (they feed early decoder layers).
        visual = self.model.model.visual
        return [visual.merger, *getattr(visual, "deepstack_merger_list", [])]

    @property
    def merge_size(self) -> int:
        return int(self.processor.image_processor.merge_size)

    @property
    def image_token(self) -> str:
        return self.tokenizer.convert_ids_to_tokens(self.image_token_id)

    def _encode(self, images, prompts) -> dict[str, Any]:
        image_inputs = self.processor.image_processor(images=images, return_tensors="pt")
        grid_thw = image_inputs["image_grid_thw"]  # [n_images, 3] = (t, h, w) in patches
        expanded, k = [], 0
        for prompt in prompts:
            parts = prompt.split(self.image_token)
            text = parts[0]
            for part in parts[1:]:
                n = int(grid_thw[k].prod()) // self.merge_size**2
                text += self.image_token * n + part
                k += 1
            expanded.append(text)
        text_inputs = self.tokenizer(expanded, return_tensors="pt", padding=True, padding_side="right")
        ids = text_inputs["input_ids"]
        # Modality per token (0 text, 1 image), which multimodal RoPE needs to place the image.
        mm_types = (ids == self.image_token_id).to(torch.int32)
        return {**text_inputs, "mm_token_type_ids": mm_types, **image_inputs}

    def _image_grids(self, inputs, n_images) -> list[list[tuple[int, int]]]:
        grid_thw: torch.Tensor = inputs["image_grid_thw"]
        grids, k = [], 0
        for n in n_images:
            row = []
            for _ in range(n):
                t, h, w = (int(v) for v in grid_thw[k])
                row.append((t * h // self.merge_size, w // self.merge_size))
                k += 1
            grids.append(row)
        return grids


class Qwen2_5_VLAdapter(Qwen2VLAdapter):
    arch = "Qwen2_5_VLForConditionalGeneration"
