"""Layer correspondence: which teacher layer does each student layer look most like?

1. Similarity matrix S [Lt, Ls]: for every teacher layer t and student layer s, the metric
   between their head-mean maps of one item (t2i: answer row; i2i: the paper's received vector
   ``i2i_paper``), resampled onto the common grid, averaged over items.
2. Monotone layer map: the student layers, in order, get non-decreasing teacher layers
   t(s0) <= t(s1) <= ... maximising sum_s S'[t(s), s] (S' = S, or -S for distances), found by
   dynamic programming in O(Lt * Ls). Depth order is kept, unlike a per-layer argmax.
3. Head matching: within each matched pair (s, t(s)), the [Hs, Ht] mean similarity between
   individual heads, and the one-to-one assignment maximising the total
   (scipy.optimize.linear_sum_assignment; min(Hs, Ht) pairs).

    layer_correspondence(store) -> LayerCorrespondenceResult(similarity, layer_map, heads)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from scipy.optimize import linear_sum_assignment

from analyses.common import Progress, by_grid, iter_usable_shards, load_maps, usable_items
from cdviz.metrics import HIGHER_IS_ALIGNED, METRICS, align_pair
from cdviz.store import RunStore

HEAD_MEAN_FIELD = {"t2i": "t2i", "i2i": "i2i_paper"}
HEAD_COLUMNS = ["student_layer", "teacher_layer", "student_head", "teacher_head", "value", "matched"]
ELEMENT_BUDGET = 4_000_000  # elements of one batched pairwise comparison
PER_HEAD_FIELD = {"t2i": "t2i", "i2i": "i2i_filt"}


@dataclass(frozen=True)
class LayerCorrespondenceResult:
    """field, metric:   what was compared; higher_is_aligned says the metric's direction
    teacher_layers [Lt], student_layers [Ls]
    similarity [Lt, Ls]: mean metric value over items (raw metric: a distance for js / emd)
    layer_map:          {student layer: teacher layer}, monotone
    heads:              frame student_layer, teacher_layer, student_head, teacher_head, value, matched
    n_items:            items averaged
    """

    field: str
    metric: str
    higher_is_aligned: bool
    teacher_layers: list[int]
    student_layers: list[int]
    similarity: np.ndarray
    layer_map: dict[int, int]
    heads: pd.DataFrame
    n_items: int

    def to_frame(self) -> pd.DataFrame:
        """Long frame: teacher_layer, student_layer, value, matched (on the monotone map)."""
        t, s = np.meshgrid(self.teacher_layers, self.student_layers, indexing="ij")
        frame = pd.DataFrame({"teacher_layer": t.ravel(), "student_layer": s.ravel(),
                              "value": self.similarity.ravel().astype(np.float64)})
        frame["matched"] = [self.layer_map.get(int(s)) == int(t)
                            for t, s in zip(frame.teacher_layer, frame.student_layer)]
        return frame

    def head_matrix(self, student_layer: int) -> np.ndarray:
        """[Hs, Ht] mean head-to-head values within ``student_layer``'s matched pair."""
        sub = self.heads[self.heads.student_layer == student_layer]
        return sub.pivot(index="student_head", columns="teacher_head", values="value").to_numpy()

    def to_dict(self) -> dict:
        return {"field": self.field, "metric": self.metric, "higher_is_aligned": self.higher_is_aligned,
                "teacher_layers": list(self.teacher_layers), "student_layers": list(self.student_layers),
                "similarity": self.similarity.tolist(), "layer_map": {str(k): v for k, v in self.layer_map.items()},
                "heads": self.heads.to_dict(orient="list"), "n_items": self.n_items}

    @classmethod
    def from_dict(cls, d: dict) -> LayerCorrespondenceResult:
        return cls(d["field"], d["metric"], bool(d["higher_is_aligned"]), [int(t) for t in d["teacher_layers"]],
                   [int(s) for s in d["student_layers"]], np.asarray(d["similarity"], dtype=np.float64),
                   {int(k): int(v) for k, v in d["layer_map"].items()}, pd.DataFrame(d["heads"]), int(d["n_items"]))


def monotone_map(score: np.ndarray) -> list[int]:
    """Non-decreasing assignment of rows to columns maximising the summed score.

    Args:
        score: [Lt, Ls], larger is better.

    Returns:
        [Ls] row index (teacher position) per column (student position), non-decreasing.
    """
    n_t, n_s = score.shape
    best = np.empty((n_s, n_t))
    arg = np.zeros((n_s, n_t), dtype=int)  # where the prefix maximum of the previous column sits
    best[0] = score[:, 0]
    for s in range(1, n_s):
        prev = best[s - 1]
        run_arg = np.zeros(n_t, dtype=int)
        for t in range(1, n_t):  # prefix argmax: best previous choice among teacher rows <= t
            run_arg[t] = t if prev[t] > prev[run_arg[t - 1]] else run_arg[t - 1]
        best[s] = score[:, s] + prev[run_arg]
        arg[s] = run_arg
    path = [int(np.argmax(best[-1]))]
    for s in range(n_s - 1, 0, -1):
        path.append(int(arg[s][path[-1]]))
    return path[::-1]


def layer_correspondence(store: RunStore, *, field: str = "t2i", metric: str = "js",
                         head_matching: bool = True, progress: Progress = None) -> LayerCorrespondenceResult:
    """Teacher x student layer similarity, a monotone layer map and head matching.

    Args:
        store: an open run.
        field: "t2i" (answer-row maps) or "i2i" (received vectors).
        metric: a cdviz.metrics.METRICS name. The default JS divergence is cheap and sensitive to
            where the mass sits; "spearman" costs a sort per pair (about 2x slower), exact "emd"
            is far too slow for Lt * Ls pairs per item.
        head_matching: also match heads within matched layers (a second pass over the store).
        progress: called with items done after each shard (both passes).
    """
    if field not in HEAD_MEAN_FIELD:
        raise ValueError(f"unknown field {field!r}; use one of {sorted(HEAD_MEAN_FIELD)}")
    if metric not in METRICS:
        raise KeyError(f"unknown metric {metric!r}; registered: {', '.join(sorted(METRICS))}")
    fn, sign = METRICS[metric], 1.0 if HIGHER_IS_ALIGNED[metric] else -1.0
    t_layers, s_layers = store.layers("teacher"), store.layers("student")
    usable = usable_items(store)
    total, count = np.zeros((len(t_layers), len(s_layers))), np.zeros((len(t_layers), len(s_layers)))
    pairs = len(t_layers) * len(s_layers)
    # t [B, Lt, Ht, N], s [B, Ls, Hs, N]
    for t, s, grid in _batches(store, usable, HEAD_MEAN_FIELD[field], progress, pairs):
        v = fn(t.mean(2)[:, :, None, :].expand(-1, -1, len(s_layers), -1),
               s.mean(2)[:, None, :, :].expand(-1, len(t_layers), -1, -1), grid).double().numpy()  # [B, Lt, Ls]
        ok = np.isfinite(v)
        total += np.where(ok, v, 0).sum(0)
        count += ok.sum(0)
    sim = total / np.maximum(count, 1)
    sim[count == 0] = np.nan
    path = monotone_map(np.nan_to_num(sign * sim, nan=-np.inf))
    layer_map = {int(s_layers[j]): int(t_layers[i]) for j, i in enumerate(path)}
    if head_matching:
        heads = _match_heads(store, usable, PER_HEAD_FIELD[field], fn, sign, layer_map, progress)
    else:
        heads = pd.DataFrame(columns=HEAD_COLUMNS)
    return LayerCorrespondenceResult(field, metric, bool(HIGHER_IS_ALIGNED[metric]), t_layers, s_layers, sim,
                                     layer_map, heads, len(usable))


def _batches(store: RunStore, usable: pd.DataFrame, field: str, progress: Progress, pairs: int):
    """Yield (teacher [B, Lt, Ht, N], student [B, Ls, Hs, N], grid) on the common grid, for items
    sharing a grid pair; B is capped so the B x ``pairs`` x N pairwise tensors stay near
    ELEMENT_BUDGET elements (memory stays bounded for 40 x 24 layers on 27 x 27 grids)."""
    for rows in iter_usable_shards(store, usable):
        for (grid_t, grid_s), uids in by_grid(rows).items():
            n = max(grid_t[0], grid_s[0]) * max(grid_t[1], grid_s[1])
            max_items = max(1, ELEMENT_BUDGET // (pairs * n))
            for i in range(0, len(uids), max_items):
                chunk = uids[i:i + max_items]
                t = torch.from_numpy(np.stack([load_maps(store, u, "teacher", field) for u in chunk]))
                s = torch.from_numpy(np.stack([load_maps(store, u, "student", field) for u in chunk]))
                t, s, grid = align_pair(t, grid_t, s, grid_s)
                yield t, s, grid
        if progress:
            progress(len(rows))


def _match_heads(store, usable, field, fn, sign, layer_map, progress) -> pd.DataFrame:
    t_pos = {t: i for i, t in enumerate(store.layers("teacher"))}
    s_layers = store.layers("student")
    t_idx = [t_pos[layer_map[s]] for s in s_layers]
    n_s, n_t = store.n_heads("student"), store.n_heads("teacher")
    total, count = np.zeros((len(s_layers), n_s, n_t)), np.zeros((len(s_layers), n_s, n_t))
    for t, s, grid in _batches(store, usable, field, progress, len(s_layers) * n_s * n_t):  # t [B, Lt, Ht, N]
        t = t[:, t_idx]  # [B, Ls, Ht, N]: each student layer's matched teacher layer
        v = fn(s[:, :, :, None, :].expand(-1, -1, -1, n_t, -1), t[:, :, None, :, :].expand(-1, -1, n_s, -1, -1),
               grid).double().numpy()  # [B, Ls, Hs, Ht]
        ok = np.isfinite(v)
        total += np.where(ok, v, 0).sum(0)
        count += ok.sum(0)
    mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    rows = []
    for j, s in enumerate(s_layers):
        r, c = linear_sum_assignment(np.nan_to_num(sign * mean[j], nan=-1e9), maximize=True)
        matched = set(zip(r.tolist(), c.tolist()))
        for hs in range(n_s):
            for ht in range(n_t):
                rows.append({"student_layer": int(s), "teacher_layer": int(layer_map[s]), "student_head": hs,
                             "teacher_head": ht, "value": float(mean[j, hs, ht]), "matched": (hs, ht) in matched})
    return pd.DataFrame(rows)
