"""Store-reading helpers shared by the analyses: which items count, outcome groups, the default
teacher-group correspondence, per-shard map loading, and boxes as patch-cell coverage.

    usable_items(store)                  index rows recorded OK with an outcome for both models
    outcome_group(teacher_ok, student_ok) "TR/SR" | "TR/SW" | "TW/SR" | "TW/SW"
    default_layer_map(...)               student layer -> consecutive teacher layers (group matching)
    load_maps(store, rows, model, field) per-item [L, H, N] maps (answer row for t2i)
    box_cover(boxes, image_size, grid)   [rows * cols] share of each patch cell inside the boxes (cdviz.metrics)
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Callable, Iterator, Sequence

import numpy as np
import pandas as pd
from PIL import Image

from cdviz.layer_map import proportional_groups
from cdviz.metrics import box_cover  # noqa: F401  (re-exported: analyses use it from here)
from cdviz.store import GROUPS, RunStore, outcome_group, usable_items  # noqa: F401  (re-exported)

ITEM_COLUMNS = ("uid", "category", "skill", "group", "teacher_correct", "student_correct")

Progress = Callable[[int], None] | None


def iter_usable_shards(store: RunStore, usable: pd.DataFrame) -> Iterator[pd.DataFrame]:
    """The rows of ``usable`` shard by shard, in storage order, so one shard is open at a time."""
    for _k, rows in usable.groupby("shard", sort=True):
        yield rows


def item_table(usable: pd.DataFrame | dict) -> pd.DataFrame:
    """The per-item columns every result keeps, from index rows or a result's to_dict() lists.

    Strings are kept as object columns and flags as bool, so a result rebuilt from JSON
    compares equal to the original.
    """
    out = pd.DataFrame(usable)[list(ITEM_COLUMNS)].copy()
    for c in ("uid", "category", "skill", "group"):
        out[c] = out[c].astype(str).astype(object)
    for c in ("teacher_correct", "student_correct"):
        out[c] = out[c].astype(bool)
    return out.reset_index(drop=True)


# ---------------------------------------------------------------------------- layer correspondence

def default_layer_map(teacher_layers: Sequence[int], student_layers: Sequence[int], teacher_n_layers: int,
                      student_n_layers: int, group_size: int | None = None) -> dict[int, list[int]]:
    """Student layer -> the group of consecutive teacher layers it is compared with.

    The paper's group matching generalised to any depth, the same default the trainer uses
    (cdviz/layer_map.py, proportional groups): student layer s of S covers the slice
    [s, s + 1) of a normalised depth axis, and its group is the teacher layers in that slice,
    [floor(s T / S), floor((s + 1) T / S)) (at least one layer), so 8 -> 4 layers pairs (0, 1),
    (2, 3), ... and groups do not overlap. ``group_size`` instead takes that many consecutive
    layers from the same start (overlapping windows, as in the reference code). Only recorded
    teacher layers can be used; a group with none of them falls back to the nearest recorded
    layer to its start.

    Returns:
        {student layer: [teacher layers]} for every recorded student layer.
    """
    if not teacher_layers:
        raise ValueError("the teacher has no recorded layers")
    recorded = sorted(teacher_layers)
    out = {}
    for s in student_layers:
        span = proportional_groups([int(s)], student_n_layers, teacher_n_layers)[0]
        lo = span[0]
        hi = lo + group_size if group_size else span[-1] + 1
        group = [t for t in recorded if lo <= t < hi]
        out[int(s)] = group or [min(recorded, key=lambda t: (abs(t - lo), t))]
    return out


def resolve_layer_map(store: RunStore, layer_map: dict[int, Sequence[int]] | None = None,
                      group_size: int | None = None) -> dict[int, list[int]]:
    """A given map checked against the recorded layers, or `default_layer_map` for this run."""
    t_layers, s_layers = store.layers("teacher"), store.layers("student")
    if layer_map is None:
        t_info, s_info = store.model_info("teacher"), store.model_info("student")
        return default_layer_map(t_layers, s_layers, int(t_info["n_layers"]), int(s_info["n_layers"]), group_size)
    out = {}
    for s, group in layer_map.items():
        group = [int(t) for t in ([group] if isinstance(group, (int, np.integer)) else group)]
        missing = [t for t in group if t not in t_layers] + ([s] if int(s) not in s_layers else [])
        if missing or not group:
            raise ValueError(f"layer map {int(s)} -> {group}: layers {missing} not recorded (teacher {t_layers}, "
                             f"student {s_layers})")
        out[int(s)] = group
    return out


def group_matrix(t_layers: Sequence[int], layer_map: dict[int, list[int]], student_layers: Sequence[int]) -> np.ndarray:
    """[Ls, Lt] averaging weights: row s is 1/g on the teacher layers of student layer s's group."""
    w = np.zeros((len(student_layers), len(t_layers)), dtype=np.float32)
    pos = {t: i for i, t in enumerate(t_layers)}
    for i, s in enumerate(student_layers):
        for t in layer_map[s]:
            w[i, pos[t]] = 1.0 / len(layer_map[s])
    return w


# ---------------------------------------------------------------------------------- map loading

def load_maps(store: RunStore, uid: str, model: str, field: str) -> np.ndarray:
    """One item's maps over image tokens, [L, H, N] (float32, not renormalised).

    ``t2i`` is reduced to its last query row, which is the answer position in both query modes
    (``answer`` records only it, ``prompt`` records every text row up to and including it).
    ``i2i_paper`` ([L, N], already a head mean) comes back as [L, 1, N].
    """
    x = store.get(uid, model, field)
    if field == "t2i":
        return x[:, :, -1, :]  # [L, H, Q, N] -> [L, H, N]
    if field == "i2i_paper":
        return x[:, None, :]
    return x


def by_grid(rows: pd.DataFrame) -> dict[tuple[tuple[int, int], tuple[int, int]], list[str]]:
    """{(teacher grid, student grid): uids}: items that can be stacked into one batch."""
    out: dict = {}
    cols = ["uid", "teacher_grid_rows", "teacher_grid_cols", "student_grid_rows", "student_grid_cols"]
    for uid, tr, tc, sr, sc in rows[cols].itertuples(index=False):
        out.setdefault(((int(tr), int(tc)), (int(sr), int(sc))), []).append(str(uid))
    return out


# ------------------------------------------------------------------------------------------ boxes

@lru_cache(maxsize=4096)
def image_size(path: str) -> tuple[int, int] | None:
    """(width, height) in pixels from the image header, or None when the file is gone."""
    try:
        with Image.open(path) as img:
            return img.size
    except OSError:
        return None


def item_boxes(row: pd.Series, image: int = 0) -> list[dict]:
    """The item's boxes on image ``image`` (the recorded query shows image 0)."""
    raw = row.get("boxes", "[]")
    boxes = json.loads(raw) if isinstance(raw, str) and raw else []
    return [b for b in boxes if int(b.get("image", 0)) == image]
