"""Adapter for ``PaliGemmaForConditionalGeneration``.

    PaliGemmaForConditionalGeneration
    ├── model: PaliGemmaModel
    │   ├── vision_tower            SigLIP vision model
    │   ├── multi_modal_projector   linear: vision hidden -> text hidden
    │   └── language_model         Gemma decoder
    │       └── layers[i].self_attn   <- attention we record
    └── lm_head

PaliGemma has no chat template: the input is ``<image> x image_seq_length, <bos>, prompt, \n``
and the whole prefix (image and prompt) attends bidirectionally, so the image tokens also see
the text that follows them. The answer is generated after the newline.
"""

from __future__ import annotations

import math
from typing import Any

from cdviz.models.base import Adapter, AdapterError


class PaliGemmaAdapter(Adapter):
    arch = "PaliGemmaForConditionalGeneration"

    def render_prompt(self, text: str) -> str:
        return self.processor.image_token + text

    def _encode(self, images, prompts) -> dict[str, Any]:
        # Right padding whatever the checkpoint's tokenizer says, so real tokens keep their positions.
        inputs = self.processor(images=images, text=prompts, return_tensors="pt", padding=True, padding_side="right")
        inputs.pop("labels", None)
        return inputs

    def _image_grids(self, inputs, n_images) -> list[list[tuple[int, int]]]:
        n = int(self.processor.image_seq_length)
        side = math.isqrt(n)
        if side * side != n:
            raise AdapterError(f"image_seq_length {n} is not a square; cannot lay the image tokens on a grid")
        return [[(side, side)] * k for k in n_images]

    def _answer_context(self, word: str) -> tuple[str, str]:
        # No template: the processor ends the prefix with a newline and the answer follows it.
        return "x\n", "x\n" + word
