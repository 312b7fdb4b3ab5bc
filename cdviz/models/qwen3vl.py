"""Adapters for ``Qwen3VLForConditionalGeneration`` and ``Qwen3VLMoeForConditionalGeneration``.

    Qwen3VLForConditionalGeneration
    ├── model: Qwen3VLModel
    │   ├── visual                  ViT (16 px patches) with a 2x2 patch merger and deepstack mergers
    │   └── language_model         Qwen3 decoder (MoE MLPs in the MoE sibling), interleaved M-RoPE;
    │       └── layers[i].self_attn   <- attention we record   deepstack features are added to the
    └── lm_head                                                image tokens' hidden states early on

Image tokens: ``<|vision_start|> <|image_pad|> x n <|vision_end|>``, exactly as Qwen2-VL: n =
t*h*w / merge^2 from ``image_grid_thw`` and the decoder's grid is (h / merge) x (w / merge),
row-major. The processor's video part needs torchvision; the inputs are built from the image
processor and tokenizer with the processor's own expansion rule (see ``Qwen2VLAdapter``).
"""

from __future__ import annotations

from cdviz.models.qwen2vl import Qwen2VLAdapter


class Qwen3VLAdapter(Qwen2VLAdapter):
    arch = "Qwen3VLForConditionalGeneration"


class Qwen3VLMoeAdapter(Qwen2VLAdapter):
    arch = "Qwen3VLMoeForConditionalGeneration"
