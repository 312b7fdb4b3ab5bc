"""Adapter for ``Mistral3ForConditionalGeneration`` (Mistral Small 3.x; Pixtral vision tower).

    Mistral3ForConditionalGeneration
    ├── model: Mistral3Model
    │   ├── vision_tower            Pixtral ViT (2-D RoPE, any aspect ratio)
    │   ├── multi_modal_projector   RMS norm, spatial_merge_size^2 patch merger, MLP
    │   └── language_model         Mistral decoder
    │       └── layers[i].self_attn   <- attention we record
    └── lm_head

Image tokens: the image keeps its aspect ratio (longest side at most ``size["longest_edge"]``,
sides rounded up to patch * merge); per row of merged patches ``[IMG] x cols`` then
``[IMG_BREAK]``, the last row closed by ``[IMG_END]`` instead. The break and end tokens are text
embeddings, not image features, but they sit inside the image's span, so the image is one piece
with one row-end token per row: span [first [IMG], [IMG_END]] = rows x (cols + 1) tokens,
``Piece.grid`` = (rows, cols), ``row_end`` = 1. ``Batch.grids`` reports its ``token_grid``
(rows, cols + 1): capture records one contiguous span, so maps of this family carry the row-end
tokens as a last column.

PixtralProcessor wants torchvision; the prompt is expanded here from the image processor's
``image_sizes`` with the processor's own rule (``replace_image_token``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from cdviz.models.base import Adapter, AdapterError, Piece, image_runs


class Mistral3Adapter(Adapter):
    arch = "Mistral3ForConditionalGeneration"
    break_token = "[IMG_BREAK]"
    end_token = "[IMG_END]"

    @property
    def merged_patch(self) -> int:
        """Pixels per image token along each side: the tower's patch times the merger's size."""
        return int(self.config.vision_config.patch_size) * int(self.config.spatial_merge_size)

    @property
    def image_token(self) -> str:
        return self.tokenizer.convert_ids_to_tokens(self.image_token_id)

    def _marks(self) -> tuple[int, int]:
        """Ids of the row-break and end tokens (the checkpoint's processor_config.json may rename them)."""
        if getattr(self, "_mark_ids", None):
            return self._mark_ids
        ids = self.tokenizer.convert_tokens_to_ids
        saved = {}
        source = getattr(self, "source", None)
        if source and (Path(source) / "processor_config.json").is_file():
            saved = json.loads((Path(source) / "processor_config.json").read_text())
        brk, end = saved.get("image_break_token", self.break_token), saved.get("image_end_token", self.end_token)
        self._mark_ids = (ids(brk), ids(end))
        return self._mark_ids

    def _encode(self, images, prompts) -> dict[str, Any]:
        processor = getattr(self.processor, "image_processor", self.processor)
        merged = self.merged_patch
        image_inputs = dict(processor(images=images, return_tensors="pt",
                                      patch_size={"height": merged, "width": merged})) if images else {}
        brk, end = (self.tokenizer.convert_ids_to_tokens(i) for i in self._marks())
        expanded, k = [], 0
        for prompt in prompts:
            parts = prompt.split(self.image_token)
            text = parts[0]
            for part in parts[1:]:
                h, w = (int(v) for v in image_inputs["image_sizes"][k])
                row = self.image_token * (w // merged)
                text += ((row + brk) * (h // merged))[:-len(brk)] + end + part
                k += 1
            expanded.append(text)
        text_inputs = self.tokenizer(expanded, return_tensors="pt", padding=True, padding_side="right")
        return {**text_inputs, **image_inputs}

    def image_pieces(self, inputs, n_images, uids) -> list[list[list[Piece]]]:
        ids = inputs["input_ids"]
        brk, end = self._marks()
        sizes = iter([tuple(int(v) for v in hw) for hw in inputs["image_sizes"]])
        out = []
        for b in range(ids.shape[0]):
            runs = image_runs(ids[b], self.image_token_id, uids[b]) if n_images[b] else []
            images, rows = [], []
            for start, stop in runs:
                closer = int(ids[b, stop]) if stop < ids.shape[1] else None
                rows.append((start, stop))
                if closer == end:
                    widths = {e - s for s, e in rows}
                    contiguous = all(rows[i][1] + 1 == rows[i + 1][0] for i in range(len(rows) - 1))
                    if len(widths) != 1 or not contiguous:
                        raise AdapterError(f"{uids[b]}: image rows at {rows[0][0]} are not equal runs of "
                                           f"{self.image_token} separated by one {self.break_token}")
                    grid = (len(rows), widths.pop())
                    h, w = next(sizes)
                    if grid != (h // self.merged_patch, w // self.merged_patch):
                        raise AdapterError(f"{uids[b]}: an image of {h}x{w} px has {grid[0]}x{grid[1]} tokens; the "
                                           f"processor and model config disagree")
                    images.append([Piece((rows[0][0], stop + 1), grid, "image", row_end=1)])
                    rows = []
                elif closer != brk:
                    raise AdapterError(f"{uids[b]}: a row of {self.image_token} at {start} is closed by neither "
                                       f"{self.break_token} nor {self.end_token}")
            if rows or len(images) != n_images[b]:
                raise AdapterError(f"{uids[b]}: {len(images)} complete images in the input for {n_images[b]}")
            out.append(images)
        return out

    def _image_grids(self, inputs, n_images) -> list[list[tuple[int, int]]]:
        merged = self.merged_patch
        sizes: torch.Tensor = inputs["image_sizes"]
        grids, k = [], 0
        for n in n_images:
            grids.append([(int(sizes[k + i][0]) // merged, int(sizes[k + i][1]) // merged + 1) for i in range(n)])
            k += n
        return grids
