"""The generic fallback adapter (``--adapter generic``): a model cdviz has no adapter for, used
through what most HF VLMs share.

    SomethingForConditionalGeneration
    ├── ...                       a vision tower and a connector (found by name when training asks)
    └── ... .layers[i].self_attn  a decoder-layer list: the ModuleList whose layers have ``self_attn``,
                                  outside the vision tower (its path is found and reported)

Assumed: one image token id (config.image_token_id / image_token_index, else the processor's
image token) whose runs in input_ids are the images, one run per image, each a grid of patches laid
out row-major. The grid is ``--grid RxC`` when given (its product must be the run's length), else a
square when the count is one, else the factorisation closest to the aspect ratio of the image as
the model receives it (the processed pixels, else the image) when that is near it; otherwise refused,
asking for --grid. One warning says what was assumed.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Sequence

import torch

from cdviz.models.base import Adapter, AdapterError, Piece, image_runs

ARCH = "generic"
#: Module path words of a vision tower, whose encoder layers also have ``self_attn``.
VISION_WORDS = ("vision", "visual", "vit", "image_encoder", "siglip", "clip")
#: Module names of the connector that carries vision features into the decoder.
CONNECTOR_NAMES = ("multi_modal_projector", "mm_projector", "connector", "merger", "projector")
#: How far (as a ratio) an inferred non-square grid may be from the image's aspect ratio.
ASPECT_TOLERANCE = 1.5


def parse_grid(spec: str | Sequence[int] | None) -> tuple[int, int] | None:
    """'24x24' (or (24, 24)) -> (24, 24); None stays None."""
    if spec is None:
        return None
    if not isinstance(spec, str):
        rows, cols = (int(x) for x in spec)
    else:
        parts = spec.lower().replace("*", "x").split("x")
        try:
            rows, cols = (int(p) for p in parts)
        except ValueError:
            raise AdapterError(f"--grid {spec!r}: give rows x columns, e.g. 24x24") from None
    if rows < 1 or cols < 1:
        raise AdapterError(f"--grid {spec!r}: rows and columns must be 1 or more")
    return rows, cols


def infer_grid(n_tokens: int, *, grid: tuple[int, int] | None = None,
               aspect: float | None = None, where: str = "") -> tuple[tuple[int, int], str]:
    """The (rows, cols) of an image of ``n_tokens`` tokens and how it was chosen.

    ``aspect`` is width / height of the image when known. Raises AdapterError asking for --grid
    when the count is not a square and no factorisation is near the aspect ratio.
    """
    prefix = f"{where}: " if where else ""
    if grid is not None:
        if grid[0] * grid[1] != n_tokens:
            raise AdapterError(f"{prefix}--grid {grid[0]}x{grid[1]} holds {grid[0] * grid[1]} tokens but the image "
                               f"has {n_tokens} image tokens; give a grid whose rows x columns = {n_tokens}")
        return grid, "given by --grid"
    side = math.isqrt(n_tokens)
    if side * side == n_tokens:
        return (side, side), f"a square of {n_tokens} tokens"
    if aspect:
        pairs = [(r, n_tokens // r) for r in range(1, n_tokens + 1) if n_tokens % r == 0]
        rows, cols = min(pairs, key=lambda rc: abs(math.log(rc[1] / rc[0]) - math.log(aspect)))
        if max(cols / rows / aspect, aspect * rows / cols) <= ASPECT_TOLERANCE:
            return (rows, cols), f"the factorisation of {n_tokens} tokens closest to the image's aspect ratio {aspect:.2f}"
        hint = f"; its closest factorisation {rows}x{cols} is far from the image's aspect ratio {aspect:.2f}"
    else:
        hint = " and the image's aspect ratio is not known"
    raise AdapterError(f"{prefix}{n_tokens} image tokens are not a square{hint}; give the patch grid with "
                       f"--grid RxC (rows x columns = {n_tokens})")


def find_decoder_layers(model: torch.nn.Module) -> tuple[str, torch.nn.ModuleList]:
    """The decoder-layer list: (module path, ModuleList) of the one list of layers with ``self_attn``
    outside the vision tower; AdapterError naming the candidates when there is none or several."""
    found = [(name, m) for name, m in model.named_modules()
             if isinstance(m, torch.nn.ModuleList) and len(m) and all(hasattr(x, "self_attn") for x in m)]
    text = [(n, m) for n, m in found if not any(w in n.lower() for w in VISION_WORDS)]
    if len(text) > 1:
        preferred = [(n, m) for n, m in text if "language_model" in n or "text_model" in n]
        text = preferred or text
    if len(text) != 1:
        names = ", ".join(n for n, _ in found) or "none"
        raise AdapterError(f"the generic adapter needs one decoder-layer list (a ModuleList of layers with "
                           f"self_attn outside the vision tower); found: {names}. Write an adapter for this "
                           f"architecture (cdviz.models.register_adapter)")
    return text[0]


class GenericAdapter(Adapter):
    arch = ARCH

    def __init__(self, model: torch.nn.Module, processor: Any, grid: tuple[int, int] | None = None):
        super().__init__(model, processor)
        self.grid = parse_grid(grid)
        self.layers_path, self._layers = find_decoder_layers(model)
        self._image_token_id, self.image_token_source = self._find_image_token()
        self._aspects: tuple[int, list[float]] = (0, [])
        self._warned = False
        n_config = getattr(self.text_config, "num_hidden_layers", None)
        if n_config is not None and int(n_config) != len(self._layers):
            raise AdapterError(f"the generic adapter found {len(self._layers)} decoder layers at {self.layers_path} "
                               f"but the text config says {n_config}")

    def _find_image_token(self) -> tuple[int, str]:
        for key in ("image_token_id", "image_token_index"):
            value = getattr(self.config, key, None)
            if isinstance(value, int):
                return value, f"config.{key}"
        processor = self.processor
        value = getattr(processor, "image_token_id", None)
        if isinstance(value, int):
            return value, "processor.image_token_id"
        token = getattr(processor, "image_token", None)
        if isinstance(token, str) and self.tokenizer is not None:
            value = self.tokenizer.convert_tokens_to_ids(token)
            if isinstance(value, int) and value != getattr(self.tokenizer, "unk_token_id", None):
                return value, f"the processor's image token {token!r}"
        raise AdapterError("the generic adapter needs a single image token id: the config has no image_token_id / "
                           "image_token_index and the processor no image_token")

    # ---- architecture facts -------------------------------------------------------------
    @property
    def image_token_id(self) -> int:
        return self._image_token_id

    @property
    def n_layers(self) -> int:
        return len(self._layers)

    def decoder_layers(self) -> list[torch.nn.Module]:
        return list(self._layers)

    def language_model(self) -> torch.nn.Module:
        parent = self.layers_path.rpartition(".")[0]
        return self.model.get_submodule(parent) if parent else self.model

    def layer_name(self, i: int) -> str:
        return f"{self.layers_path}.{i}.self_attn"

    def connector_modules(self) -> list[torch.nn.Module]:
        for name, module in self.model.named_modules():
            if name.rpartition(".")[2] in CONNECTOR_NAMES:
                return [module]
        raise AdapterError(f"the generic adapter finds no connector module (one named {', '.join(CONNECTOR_NAMES)})")

    # ---- inputs -----------------------------------------------------------------------------
    def _encode(self, images, prompts) -> dict[str, Any]:
        encoded = self.processor(images=images, text=prompts, return_tensors="pt", padding=True, padding_side="right")
        # the images' aspect ratios, for the grids of this encoding only (image_pieces checks which)
        self._aspects = (id(encoded["input_ids"]), [img.width / img.height for img in images])
        return encoded

    def _image_aspect(self, inputs: dict[str, Any], b: int, i: int) -> float | None:
        """width / height of image ``i`` of sample ``b`` as the model receives it: the processed
        pixels when they come as one [.., 3, H, W] tensor per image, else the image given."""
        pixels = inputs.get("pixel_values")
        if isinstance(pixels, torch.Tensor) and pixels.dim() == 4 and pixels.shape[1] == 3:
            return float(pixels.shape[-1]) / float(pixels.shape[-2])
        encoding, aspects = self._aspects
        if encoding != id(inputs.get("input_ids")) or b >= len(aspects):
            return None  # inputs this adapter did not encode: the images are not known
        return aspects[b]

    def image_pieces(self, inputs: dict[str, Any], n_images: list[int], uids: Sequence[str]) -> list[list[list[Piece]]]:
        ids = inputs["input_ids"]
        out, first = [], None
        for b in range(ids.shape[0]):
            runs = image_runs(ids[b], self.image_token_id, uids[b], n_images[b])
            sample = []
            for i, (start, end) in enumerate(runs):
                grid, how = infer_grid(end - start, grid=self.grid, aspect=self._image_aspect(inputs, b, i),
                                       where=uids[b])
                first = first or (grid, how)
                sample.append([Piece((start, end), grid)])
            out.append(sample)
        if first is not None and not self._warned:
            self._warned = True
            grid, how = first
            per_image = " " if self.grid else " (inferred per image; first: "
            grid_text = f"{grid[0]}x{grid[1]}, {how}" + (")" if per_image else "")
            warnings.warn(
                f"{self._label()}: --adapter generic assumes image token id {self.image_token_id} "
                f"({self.image_token_source}), one run of it per image on a row-major grid{per_image}{grid_text}, "
                f"and {self.n_layers} decoder layers at {self.layers_path} (attention: .self_attn)", stacklevel=3)
        return out
