"""Misalignment: how far each student layer (and head) looks from its teacher layer group, per item.

For every usable item and recorded student layer s, with teacher group G(s) (default: the
paper's group matching generalised to any depth, `analyses.common.default_layer_map`):

  i2i (VAT form, what the VAT loss trains): received-attention vectors over image tokens.
      head mean: student ``i2i_paper`` [N] vs the mean over G(s) of the teacher's ``i2i_paper``;
      head h:    student ``i2i_filt`` head h vs the mean over G(s) and heads of teacher ``i2i_filt``.
      measure "i2i:vat_cosine" = 1 - vat_cosine_from_vectors(student, teacher).
      (The paper averages the teacher's blocks over the group before filtering; stores keep
      per-layer vectors, so the group mean is taken after filtering.)
  t2i (where the answer position looks): the last recorded query row of ``t2i``, the answer
      position, over image tokens; the student's head (or head mean) vs the teacher's head mean
      averaged over G(s); both resampled onto their common grid. Measures "t2i:<metric>" for
      each metric in ``t2i_metrics`` from cdviz.metrics.METRICS.

Noise baseline per measure, item and layer: the same measure between two halves of the
teacher's heads (heads [0, H/2) vs [H/2, H), each averaged over G(s)), on the same comparison
grid. It is what two looks at one picture already differ by, so a value can be read against
it: t2i:spearman and t2i:topk_iou sit far from 0 even for maps equal up to noise (about 0.2
and 0.35 on 8x8 grids). NaN for a teacher with fewer than 2 heads.

Every value is a misalignment, larger = further apart: 1 - similarity for metrics where higher
is aligned (cosine, topk_iou: [0, 1]; spearman: [0, 2]), the distance itself otherwise (js in
[0, ln 2], emd in patch units). Teacher and student heads are not assumed to correspond (see
layer_correspondence for head matching), hence the teacher head mean as reference.

Views (``view``): "primary" (default) compares the maps over each model's primary image piece,
the base / global view or thumbnail that every run records. "detail" compares the text-to-image
maps over an image's other pieces (crops, tiles; a run recorded with ``cdviz record --pieces``),
each model's pieces assembled into one map over the whole image (cdviz.pieces.store_detail) and
the two maps resampled onto their common grid with mass kept per region (cdviz.metrics.align_pair),
then the same t2i measures and teacher split-half baseline as the primary view. ``--pieces``
records text-to-image maps per piece; image-to-image per piece is not recorded, so the detail view
has t2i measures only (i2i in ``fields`` is left out). Items where either model has no detail view
(an image of one piece) are left out of the result, their reasons in ``skipped``.

    misalignment(store) -> MisalignmentResult(values [I, L, H+1, M], ...)
    misalignment(store, view="detail") -> the same over the detail view, t2i measures only
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from analyses.common import (
    Progress, by_grid, group_matrix, item_table, iter_usable_shards, load_maps, resolve_layer_map, usable_items,
)
from cdviz.errors import OptionError
from cdviz.metrics import (HIGHER_IS_ALIGNED, METRICS, align_pair, common_grid, resample_to_grid,
                           vat_cosine_from_vectors)
from cdviz.pieces import store_detail
from cdviz.schema import MODELS
from cdviz.store import RunStore

FIELDS = ("i2i", "t2i")
DEFAULT_T2I_METRICS = ("js", "spearman", "topk_iou")
VIEWS = ("primary", "detail")  # the primary image piece; the crops / tiles assembled over the image
ELEMENT_BUDGET = 4_000_000  # map elements compared in one batched call


@dataclass(frozen=True)
class MisalignmentResult:
    """Per item x student layer x head misalignment.

    items:          [I] frame: uid, category, skill, group, teacher_correct, student_correct
    student_layers: [L] recorded student layer numbers
    teacher_groups: [L] teacher layers each student layer is compared with
    measures:       [M] names "field:metric", e.g. "i2i:vat_cosine", "t2i:js"
    n_heads:        H student heads; head index H along ``values`` axis 2 is the head mean
    values:         [I, L, H + 1, M] float32 misalignment (larger = further apart)
    baseline:       [I, L, M] float32 teacher split-half noise baseline (None: not computed)
    view:           "primary" (the primary image piece) or "detail" (crops / tiles over the image)
    skipped:        {uid: reason} usable items left out because a model has no such view
    """

    items: pd.DataFrame
    student_layers: list[int]
    teacher_groups: list[list[int]]
    measures: list[str]
    n_heads: int
    values: np.ndarray
    baseline: np.ndarray | None = None
    view: str = "primary"
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def n_skipped(self) -> int:
        return len(self.skipped)

    def head_labels(self) -> list[int]:
        """Head index per position on axis 2: 0..H-1, then -1 for the head mean."""
        return [*range(self.n_heads), -1]

    def to_frame(self) -> pd.DataFrame:
        """Long frame: uid, category, skill, group, student_layer, teacher_layers, head (-1 = mean),
        measure, misalignment; one row per item x layer x head x measure."""
        n_i, n_l, n_h, n_m = self.values.shape
        idx = np.indices((n_i, n_l, n_h, n_m)).reshape(4, -1)
        frame = self.items.iloc[idx[0]].reset_index(drop=True)
        frame["student_layer"] = np.asarray(self.student_layers, dtype=np.int64)[idx[1]]
        frame["teacher_layers"] = np.asarray([_fmt(g) for g in self.teacher_groups], dtype=object)[idx[1]]
        frame["head"] = np.asarray(self.head_labels(), dtype=np.int64)[idx[2]]
        frame["measure"] = np.asarray(self.measures, dtype=object)[idx[3]]
        frame["misalignment"] = self.values.reshape(-1).astype(np.float64)
        return frame

    def item_layer(self, measure: str) -> pd.DataFrame:
        """[I, L] head-mean misalignment for ``measure``: index uid, one column per student layer."""
        m = self.measure_index(measure)
        return pd.DataFrame(self.values[:, :, -1, m], index=self.items.uid.to_numpy(), columns=self.student_layers)

    def measure_index(self, measure: str) -> int:
        if measure not in self.measures:
            raise KeyError(f"unknown measure {measure!r}; this result has {self.measures}")
        return self.measures.index(measure)

    def by_layer(self) -> pd.DataFrame:
        """Head-mean misalignment per (measure, student layer): mean, std, sem, normal 95% CI, n,
        and baseline (the mean teacher split-half value of the measure in that layer)."""
        out = self._summarise(self._head_mean_frame(), ["measure", "student_layer", "teacher_layers"])
        base = self.layer_baseline()
        out["baseline"] = [base[self.measures.index(m), self.student_layers.index(s)]
                           for m, s in zip(out.measure, out.student_layer)]
        return out

    def layer_baseline(self) -> np.ndarray:
        """[M, L] mean noise baseline per measure and student layer (NaN when not computed)."""
        if self.baseline is None or not np.isfinite(self.baseline).any():
            return np.full((len(self.measures), len(self.student_layers)), np.nan)
        with np.errstate(all="ignore"):
            return np.nanmean(self.baseline, axis=0).T.astype(np.float64)

    def by_layer_head(self) -> pd.DataFrame:
        """Mean misalignment per (measure, student layer, head); head -1 is the head mean."""
        frame = self.to_frame()
        return self._summarise(frame, ["measure", "student_layer", "teacher_layers", "head"])

    def by(self, column: str) -> pd.DataFrame:
        """Head-mean misalignment per (measure, student layer, ``column``), e.g. "category",
        "skill" or "group" (outcome group)."""
        return self._summarise(self._head_mean_frame(), ["measure", "student_layer", "teacher_layers", column])

    def _head_mean_frame(self) -> pd.DataFrame:
        n_i, n_l, _, n_m = self.values.shape
        idx = np.indices((n_i, n_l, n_m)).reshape(3, -1)
        frame = self.items.iloc[idx[0]].reset_index(drop=True)
        frame["student_layer"] = np.asarray(self.student_layers, dtype=np.int64)[idx[1]]
        frame["teacher_layers"] = np.asarray([_fmt(g) for g in self.teacher_groups], dtype=object)[idx[1]]
        frame["measure"] = np.asarray(self.measures, dtype=object)[idx[2]]
        frame["misalignment"] = self.values[:, :, -1, :].reshape(-1).astype(np.float64)
        return frame

    @staticmethod
    def _summarise(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
        g = frame.groupby(keys, sort=True, observed=True)["misalignment"]
        out = g.agg(mean="mean", std="std", n="count").reset_index()
        out["sem"] = out["std"] / np.sqrt(out["n"].clip(lower=1))
        out["ci_low"] = out["mean"] - 1.96 * out["sem"]
        out["ci_high"] = out["mean"] + 1.96 * out["sem"]
        return out

    def to_dict(self) -> dict:
        return {"items": self.items.to_dict(orient="list"), "student_layers": list(self.student_layers),
                "teacher_groups": [list(g) for g in self.teacher_groups], "measures": list(self.measures),
                "n_heads": self.n_heads, "shape": list(self.values.shape),
                "values": self.values.reshape(-1).tolist(),
                "baseline": None if self.baseline is None else self.baseline.reshape(-1).tolist(),
                "view": self.view, "skipped": dict(self.skipped)}

    @classmethod
    def from_dict(cls, d: dict) -> MisalignmentResult:
        values = np.asarray(d["values"], dtype=np.float32).reshape(d["shape"])
        baseline = d.get("baseline")
        if baseline is not None:
            baseline = np.asarray(baseline, dtype=np.float32).reshape(values.shape[0], values.shape[1], values.shape[3])
        return cls(item_table(d["items"]), [int(s) for s in d["student_layers"]],
                   [[int(t) for t in g] for g in d["teacher_groups"]], list(d["measures"]), int(d["n_heads"]), values,
                   baseline, str(d.get("view", "primary")), {str(k): str(v) for k, v in (d.get("skipped") or {}).items()})


def _fmt(group: Sequence[int]) -> str:
    return ",".join(str(t) for t in group)


def measure_names(fields: Sequence[str], t2i_metrics: Sequence[str]) -> list[str]:
    names = []
    for f in fields:
        if f not in FIELDS:
            raise ValueError(f"unknown field {f!r}; misalignment compares {FIELDS}")
        names += ["i2i:vat_cosine"] if f == "i2i" else [f"t2i:{m}" for m in t2i_metrics]
    for m in t2i_metrics:
        if m not in METRICS:
            raise KeyError(f"unknown metric {m!r}; registered: {', '.join(sorted(METRICS))}")
    return names


def misalignment(store: RunStore, *, fields: Sequence[str] = FIELDS,
                 t2i_metrics: Sequence[str] = DEFAULT_T2I_METRICS, layer_map: dict[int, Sequence[int]] | None = None,
                 group_size: int | None = None, view: str = "primary", progress: Progress = None) -> MisalignmentResult:
    """Misalignment between the student and its teacher layer groups, per item, layer and head.

    Args:
        store: an open run.
        fields: which attention to compare, any of "i2i" (VAT form) and "t2i" (answer row).
        t2i_metrics: cdviz.metrics.METRICS names used on t2i maps ("emd" is exact and slow,
            about a second per map pair on 27x27; "emd_sliced" is the fast approximation).
        layer_map: {student layer: [teacher layers]} to override the default group matching.
        group_size: teacher group size for the default map (default ceil(T / S)).
        view: "primary" (the primary image piece) or "detail" (t2i over the crops / tiles assembled
            over the whole image; a run recorded with ``cdviz record --pieces``; i2i is left out,
            items where a model has one piece only are skipped, see the module docstring).
        progress: called with the number of items done after each shard.

    Returns:
        MisalignmentResult with values [I, L, H + 1, M].

    Raises:
        OptionError: an unknown view, or a detail view with no item to compare (a run recorded
            without --pieces, or images of one piece only).
    """
    if view not in VIEWS:
        raise OptionError(f"unknown view {view!r}; use one of {', '.join(VIEWS)}")
    if view == "detail":
        if "t2i" not in fields:
            raise OptionError("the detail view compares t2i maps only (--pieces records text-to-image maps per piece; "
                              "image-to-image per piece is not recorded): include 't2i' in fields")
        fields = ("t2i",)
    measures = measure_names(fields, t2i_metrics)
    lmap = resolve_layer_map(store, layer_map, group_size)
    s_layers = store.layers("student")
    t_layers = store.layers("teacher")
    w = torch.from_numpy(group_matrix(t_layers, lmap, s_layers))  # [Ls, Lt]
    n_heads = store.n_heads("student")
    usable = usable_items(store)
    if view == "detail":
        return _detail(store, usable, t2i_metrics, lmap, s_layers, w, n_heads, measures, progress)
    values = np.full((len(usable), len(s_layers), n_heads + 1, len(measures)), np.nan, dtype=np.float32)
    baseline = np.full((len(usable), len(s_layers), len(measures)), np.nan, dtype=np.float32)
    pos = {u: i for i, u in enumerate(usable.uid)}
    for rows in iter_usable_shards(store, usable):
        # Items with one grid pair are stacked and compared in one batched call.
        for (grid_t, grid_s), uids in by_grid(rows).items():
            n = max(grid_t[0], grid_s[0]) * max(grid_t[1], grid_s[1])
            step = max(1, ELEMENT_BUDGET // (len(s_layers) * (n_heads + 1) * n))  # bounded memory per batch
            for i in range(0, len(uids), step):
                chunk = uids[i:i + step]
                at = [pos[u] for u in chunk]
                values[at], baseline[at] = _compare(store, chunk, fields, t2i_metrics, w, grid_t, grid_s)
        if progress:
            progress(len(rows))
    return MisalignmentResult(item_table(usable), s_layers, [lmap[s] for s in s_layers], measures, n_heads, values,
                              baseline)


def _detail(store: RunStore, usable: pd.DataFrame, t2i_metrics, lmap, s_layers, w, n_heads, measures,
            progress: Progress) -> MisalignmentResult:
    """The detail view (see `misalignment`): items without one in either model go to ``skipped``."""
    found: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    skipped: dict[str, str] = {}
    for rows in iter_usable_shards(store, usable):
        maps: dict[str, dict[str, np.ndarray]] = {}  # uid -> model -> [L, H, N] answer row
        groups: dict[tuple, list[str]] = {}
        for uid in rows.uid:
            got = {}
            for model in MODELS:
                d, why = store_detail(store, uid, model)
                if d is None:
                    skipped[uid] = f"{model}: {why}"
                    break
                got[model] = (d.maps[:, :, -1, :], d.grid)  # the answer position's row
            else:
                maps[uid] = {m: v[0] for m, v in got.items()}
                groups.setdefault((got["teacher"][1], got["student"][1]), []).append(uid)
        for (grid_t, grid_s), uids in groups.items():
            n = max(grid_t[0], grid_s[0]) * max(grid_t[1], grid_s[1])
            step = max(1, ELEMENT_BUDGET // (len(s_layers) * (n_heads + 1) * n))
            for i in range(0, len(uids), step):
                chunk = uids[i:i + step]
                cols, base = [], []
                s = torch.from_numpy(np.stack([maps[u]["student"] for u in chunk]))  # [B, Ls, H, Ns]
                t = torch.from_numpy(np.stack([maps[u]["teacher"] for u in chunk]))  # [B, Lt, Ht, Nt]
                _t2i(s, t, w, grid_t, grid_s, t2i_metrics, cols, base)
                values, baseline = _finish(cols, base)
                found.update({u: (values[k], baseline[k]) for k, u in enumerate(chunk)})
        if progress:
            progress(len(rows))
    if not found:
        reasons = sorted(set(skipped.values()))
        raise OptionError(f"{store.root}: no item has a detail view in both models ({len(skipped)} skipped: "
                          f"{'; '.join(reasons[:3])}); the detail view needs a run recorded with `cdviz record "
                          "--pieces` of images the models cut into crops or tiles")
    kept = usable[usable.uid.isin(list(found))]
    values = np.stack([found[u][0] for u in kept.uid]).astype(np.float32)
    baseline = np.stack([found[u][1] for u in kept.uid]).astype(np.float32)
    return MisalignmentResult(item_table(kept), s_layers, [lmap[s] for s in s_layers], measures, n_heads, values,
                              baseline, "detail", skipped)


def _stack(store: RunStore, uids: list[str], model: str, field: str) -> torch.Tensor:
    return torch.from_numpy(np.stack([load_maps(store, u, model, field) for u in uids]))  # [B, L, H, N]


def _halves(heads: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Teacher heads [B, Lt, Ht, N] -> the group means of heads [0, Ht/2) and [Ht/2, Ht), each
    [B, Ls, N]; None with fewer than 2 heads."""
    half = heads.shape[2] // 2
    if half == 0:
        return None
    return (torch.einsum("st,btn->bsn", w, heads[:, :, :half].mean(2)),
            torch.einsum("st,btn->bsn", w, heads[:, :, half:].mean(2)))


def _compare(store, uids, fields, t2i_metrics, w, grid_t, grid_s) -> tuple[np.ndarray, np.ndarray]:
    """Misalignment [B, Ls, H+1, M] and the teacher split-half baseline [B, Ls, M] for items sharing
    the teacher grid ``grid_t`` and student ``grid_s``, all compared on their common grid."""
    grid = common_grid(grid_t, grid_s)
    cols, base = [], []
    for f in fields:
        if f == "i2i":
            s_heads = _stack(store, uids, "student", "i2i_filt")  # [B, Ls, H, Ns]
            s_mean = _stack(store, uids, "student", "i2i_paper")  # [B, Ls, 1, Ns]
            t_filt = _stack(store, uids, "teacher", "i2i_filt")  # [B, Lt, Ht, Nt]
            t_heads = torch.einsum("st,btn->bsn", w, t_filt.mean(2))
            t_mean = torch.einsum("st,btn->bsn", w, _stack(store, uids, "teacher", "i2i_paper")[:, :, 0])
            sim_h = vat_cosine_from_vectors(s_heads, t_heads[:, :, None, :], grid_s, grid_t)  # [B, Ls, H]
            sim_m = vat_cosine_from_vectors(s_mean, t_mean[:, :, None, :], grid_s, grid_t)  # [B, Ls, 1]
            cols.append((1 - torch.cat([sim_h, sim_m], dim=2))[..., None])
            halves = _halves(t_filt, w)
            base.append(torch.full(t_heads.shape[:2], float("nan")) if halves is None else
                        1 - vat_cosine_from_vectors(*(resample_to_grid(h, grid_t, grid) for h in halves)))
        else:
            _t2i(_stack(store, uids, "student", "t2i"), _stack(store, uids, "teacher", "t2i"), w, grid_t, grid_s,
                 t2i_metrics, cols, base)
    return _finish(cols, base)


def _finish(cols: list[torch.Tensor], base: list[torch.Tensor]) -> tuple[np.ndarray, np.ndarray]:
    values = torch.cat(cols, dim=-1).to(torch.float32).numpy()
    return values, torch.stack([b.to(torch.float32) for b in base], dim=-1).numpy()


def _t2i(s: torch.Tensor, t_all: torch.Tensor, w: torch.Tensor, grid_t, grid_s, t2i_metrics,
         cols: list[torch.Tensor], base: list[torch.Tensor]) -> None:
    """Append the t2i measures [B, Ls, H+1, 1] and their baselines [B, Ls] for student maps ``s``
    [B, Ls, H, Ns] on ``grid_s`` and teacher maps ``t_all`` [B, Lt, Ht, Nt] on ``grid_t``, compared
    on their common grid."""
    grid = common_grid(grid_t, grid_s)
    s = torch.cat([s, s.mean(2, keepdim=True)], dim=2)  # [B, Ls, H+1, Ns]
    t = torch.einsum("st,btn->bsn", w, t_all.mean(2))  # [B, Ls, Nt]
    t = t[:, :, None, :].expand(-1, -1, s.shape[2], -1)  # [B, Ls, H+1, Nt]
    sa, ta, _ = align_pair(s, grid_s, t, grid_t, grid)
    halves = _halves(t_all, w)
    if halves is not None:
        ha, hb = (resample_to_grid(h, grid_t, grid) for h in halves)
    for m in t2i_metrics:
        v = METRICS[m](sa, ta, grid)  # [B, Ls, H+1]
        cols.append((1 - v if HIGHER_IS_ALIGNED[m] else v)[..., None])
        if halves is None:
            base.append(torch.full(t.shape[:2], float("nan")))
        else:
            b = METRICS[m](ha, hb, grid)  # [B, Ls]
            base.append(1 - b if HIGHER_IS_ALIGNED[m] else b)
