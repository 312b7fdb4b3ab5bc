"""Adapter for ``InternVLForConditionalGeneration`` (InternVL 3 in its HF form; tiles plus a thumbnail).

    InternVLForConditionalGeneration
    ├── model: InternVLModel
    │   ├── vision_tower            InternViT, run on every tile (CLS dropped)
    │   ├── multi_modal_projector   pixel shuffle (downsample_ratio) + MLP
    │   └── language_model         Qwen2 / Llama decoder
    │       └── layers[i].self_attn   <- attention we record
    └── lm_head

Image tokens: ``<img> <IMG_CONTEXT> x (image_seq_length * n) </img>``: one run per image, the
n pieces one after the other, image_seq_length tokens each on a square grid (row-major; the pixel
shuffle keeps the row-major order of the coarser grid). With ``crop_to_patches`` the image is
resized onto the tile grid (cols x rows) closest to its aspect ratio and cut into n - 1 tiles in
row-major order, followed by a thumbnail of the whole image when there is more than one tile
(role "thumbnail", the primary piece); an image of one tile is a single piece (role "image").
The tile layout is recomputed with the image processor's own ``get_optimal_tiled_canvas`` from
the image's size, and checked against the number of tokens.
"""

from __future__ import annotations

import math
from typing import Any

from cdviz.models.base import Adapter, AdapterError, Piece, image_runs


class InternVLAdapter(Adapter):
    arch = "InternVLForConditionalGeneration"

    def __init__(self, model, processor):
        super().__init__(model, processor)
        self._layouts: dict[int, list[tuple[int, int]]] = {}  # id(input_ids) -> per image (rows, cols)

    @property
    def image_seq_length(self) -> int:
        return int(self.config.image_seq_length)

    @property
    def piece_grid(self) -> tuple[int, int]:
        side = math.isqrt(self.image_seq_length)
        if side * side != self.image_seq_length:
            raise AdapterError(f"image_seq_length {self.image_seq_length} is not a square; "
                               "cannot lay the tokens on a grid")
        return side, side

    def tile_layout(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """(rows, cols) of the tiles the image processor cuts an image of (height, width) into."""
        from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import get_optimal_tiled_canvas

        ip = self.processor.image_processor
        if not getattr(ip, "crop_to_patches", False) or int(getattr(ip, "max_patches", 1)) <= 1:
            return 1, 1
        size = ip.size
        tile = (getattr(size, "height", None) or size["height"], getattr(size, "width", None) or size["width"])
        cols, rows = get_optimal_tiled_canvas(tuple(image_size), tile, int(ip.min_patches), int(ip.max_patches))
        return int(rows), int(cols)

    def _encode(self, images, prompts) -> dict[str, Any]:
        inputs = dict(self.processor(images=images, text=prompts, return_tensors="pt", padding=True,
                                     padding_side="right"))
        self._layouts = {id(inputs["input_ids"]): [self.tile_layout((im.height, im.width)) for im in images or []]}
        return inputs

    def image_pieces(self, inputs, n_images, uids) -> list[list[list[Piece]]]:
        ids = inputs["input_ids"]
        layouts = iter(self._layouts.get(id(ids), []))
        grid, n = self.piece_grid, self.image_seq_length
        out = []
        for b in range(ids.shape[0]):
            runs = image_runs(ids[b], self.image_token_id, uids[b], n_images[b])
            sample = []
            for start, end in runs:
                count, rest = divmod(end - start, n)
                if rest:
                    raise AdapterError(f"{uids[b]}: an image has {end - start} tokens, not a multiple of "
                                       f"image_seq_length {n}; the processor and model config disagree")
                rows, cols = next(layouts, (None, None))
                if count == 1:
                    sample.append([Piece((start, end), grid, "image")])
                    continue
                if rows is not None and rows * cols != count - 1:
                    raise AdapterError(f"{uids[b]}: {count - 1} tiles in the input but the image processor cuts the "
                                       f"image into {rows}x{cols}")
                pieces = [Piece((start + k * n, start + (k + 1) * n), grid, "tile",
                                (k // cols, k % cols, rows, cols) if rows is not None else None)
                          for k in range(count - 1)]
                pieces.append(Piece((end - n, end), grid, "thumbnail"))
                sample.append(pieces)
            out.append(sample)
        return out

    def _image_grids(self, inputs, n_images) -> list[list[tuple[int, int]]]:
        # Every piece (tile, thumbnail) has the same grid.
        return [[self.piece_grid] * k for k in n_images]
