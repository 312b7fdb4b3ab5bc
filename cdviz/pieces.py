"""The detail view of an image: one map over the whole image at the resolution of its other pieces.

A model that sees an image as several pieces (cdviz.models.base: a primary piece, the base /
global view or thumbnail, plus crops or tiles) has, with ``cdviz record --pieces``, its text
query rows' attention on those other pieces' patches in ``t2i_pieces`` [L, H, Q, M], laid out by
the row's per-model "pieces" column (cdviz.schema.row_pieces: {role, grid, offset into M, place}).
The detail view puts them back where they lie in the image:

  tiles (Idefics3 / SmolVLM, InternVL; ``place`` = [row, col, n_rows, n_cols]): placed into one
      grid of n_rows x n_cols tiles, each tile's patches row-major in its cell, so the detail grid
      is (n_rows * tile rows, n_cols * tile cols). Tiles of one image have equal grids, and every
      cell of the layout holds exactly one tile.
  crops (LLaVA-NeXT / OneVision; no place): the model stitches its high-resolution crops into one
      grid over the whole image, row-major, and drops the letterbox rows or columns (unpadding;
      OneVision may shrink it too); the adapter records that stitched grid as one "crop" piece
      (row-end newlines left out), which is the detail grid as it is.

``t2i_pieces`` holds text-to-image maps only: image-to-image attention per piece is not recorded,
so a detail view exists for ``t2i`` alone. An image of one piece (or a run recorded without
``--pieces``) has none; the functions below then say why instead of raising.

    detail_layout(pieces) -> (DetailLayout | None, reason)
    assemble(maps [..., M], layout) -> [..., rows * cols]
    detail_map(pieces, maps) -> (map [..., rows * cols] | None, grid | None, reason)
    store_detail(store, uid, model) -> (DetailMaps | None, reason)   t2i_pieces of one item, assembled
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from cdviz.schema import row_pieces

NO_PIECES = "an image of one piece (no crops or tiles)"
NOT_RECORDED = "the run was recorded without --pieces (record with `cdviz record --pieces`)"


@dataclass(frozen=True)
class DetailLayout:
    """Where each cell of the detail grid comes from.

    grid:   (rows, cols) of the detail map over the whole image
    index:  [rows * cols] position in M (``t2i_pieces``' last axis) of each cell, row-major
    kind:   "tiles" or "crops"
    """

    grid: tuple[int, int]
    index: np.ndarray
    kind: str


def detail_layout(pieces: Sequence[Mapping[str, Any]]) -> tuple[DetailLayout | None, str]:
    """The detail layout of an image's other pieces (a row's "pieces" column, cdviz.schema.row_pieces).

    Returns (layout, "") or (None, why there is none): an image of one piece, tiles without places
    or of unequal grids, places that leave a cell empty or fill one twice, several crops (the
    adapters record LLaVA-NeXT's crops as one stitched piece), or crops mixed with tiles.
    """
    if not pieces:
        return None, NO_PIECES
    roles = {str(p["role"]) for p in pieces}
    if roles == {"crop"}:
        if len(pieces) != 1:
            return None, (f"{len(pieces)} crops without places: the crops are recorded as one stitched piece, "
                          "so this layout is unknown")
        (p,) = pieces
        rows, cols = (int(v) for v in p["grid"])
        return DetailLayout((rows, cols), int(p["offset"]) + np.arange(rows * cols), "crops"), ""
    if roles != {"tile"}:
        return None, f"pieces of roles {sorted(roles)}: a detail view needs tiles or one stitched crop grid"
    if any(p.get("place") is None for p in pieces):
        return None, "tiles without a place in the tile layout"
    grids = {tuple(int(v) for v in p["grid"]) for p in pieces}
    shapes = {tuple(int(v) for v in p["place"][2:]) for p in pieces}
    if len(grids) != 1 or len(shapes) != 1:
        return None, f"tiles of unequal grids {sorted(grids)} or layouts {sorted(shapes)}"
    (gr, gc), (n_rows, n_cols) = grids.pop(), shapes.pop()
    index = np.full((n_rows * gr, n_cols * gc), -1, dtype=np.int64)
    cell = np.arange(gr * gc).reshape(gr, gc)
    for p in pieces:
        r, c = int(p["place"][0]), int(p["place"][1])
        if not (0 <= r < n_rows and 0 <= c < n_cols):
            return None, f"a tile placed at ({r}, {c}) outside its {n_rows}x{n_cols} layout"
        block = index[r * gr:(r + 1) * gr, c * gc:(c + 1) * gc]
        if (block >= 0).any():
            return None, f"two tiles placed at ({r}, {c})"
        block[...] = int(p["offset"]) + cell
    if (index < 0).any():
        return None, f"{len(pieces)} tiles leave cells of their {n_rows}x{n_cols} layout empty"
    return DetailLayout((n_rows * gr, n_cols * gc), index.reshape(-1), "tiles"), ""


def assemble(maps: np.ndarray, layout: DetailLayout) -> np.ndarray:
    """``maps`` [..., M] over the other pieces' patches -> [..., rows * cols] over the detail grid, row-major."""
    if int(layout.index.max()) >= maps.shape[-1]:
        raise ValueError(f"the pieces index reaches patch {int(layout.index.max())} but the maps have "
                         f"{maps.shape[-1]}; the row's pieces column and t2i_pieces disagree")
    return np.take(maps, layout.index, axis=-1)


def detail_map(pieces: Sequence[Mapping[str, Any]], maps: np.ndarray
               ) -> tuple[np.ndarray | None, tuple[int, int] | None, str]:
    """``maps`` [..., M] (``t2i_pieces``) assembled over the whole image: (map [..., rows * cols], grid, "")
    or (None, None, why there is no detail view)."""
    layout, reason = detail_layout(pieces)
    if layout is None:
        return None, None, reason
    return assemble(maps, layout), layout.grid, ""


@dataclass(frozen=True)
class DetailMaps:
    """One item's detail view for one model.

    maps:   [L, H, Q, rows * cols] float32, ``t2i_pieces`` assembled (not renormalised)
    grid:   (rows, cols)
    kind:   "tiles" or "crops"
    """

    maps: np.ndarray
    grid: tuple[int, int]
    kind: str


def store_detail(store, uid: str, model: str) -> tuple[DetailMaps | None, str]:
    """``model``'s detail view of item ``uid`` in a run store (a cdviz.store.RunStore), or (None, why not)."""
    if not store.manifest.get("options", {}).get("pieces", False):
        return None, NOT_RECORDED
    layout, reason = detail_layout(row_pieces(store.row(uid), model))
    if layout is None:
        return None, reason
    return DetailMaps(assemble(store.get(uid, model, "t2i_pieces"), layout), layout.grid, layout.kind), ""


__all__ = ["NOT_RECORDED", "NO_PIECES", "DetailLayout", "DetailMaps", "assemble", "detail_layout", "detail_map",
           "store_detail"]
