"""Grounding: how much of each model's image attention lands on the objects the text names.

For every item with boxes on the recorded image, each box is mapped to patch-cell coverage on
each model's own grid (`analyses.common.box_cover`: exact share of each cell's area inside the
union of boxes). For a map p over the N image tokens (normalised to sum 1: the share of the
image attention), per model, layer and head (and head mean):

    in_box     = sum_n p_n * cover_n          share of image attention inside the boxes
    area_share = mean_n cover_n               what a uniform map would get
    ratio      = in_box / area_share          > 1: attention concentrates on the objects

The student's grounding gap in layer s is the teacher's head-mean in_box averaged over its
group G(s) minus the student's head-mean in_box; its AUROC for "student wrong" among items the
teacher gets right says whether looking less at the objects than the teacher predicts errors.

    grounding(store) -> GroundingResult(frame, gap_auroc)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analyses.common import (
    Progress, box_cover, image_size, item_boxes, item_table, iter_usable_shards, load_maps, resolve_layer_map,
    usable_items,
)
from analyses.stats import adjust_pvalues, auroc_ci, rank_sum_p
from cdviz.store import RunStore

FIELDS = {"t2i": "t2i", "i2i": "i2i"}


@dataclass(frozen=True)
class GroundingResult:
    """items:     [I] item frame (uid, category, skill, group, teacher_correct, student_correct)
    layers:    {"teacher": [Lt], "student": [Ls]}
    in_box:    {"teacher": [I, Lt, Ht+1], "student": [I, Ls, Hs+1]}, last head = head mean; NaN
               for items without boxes or image
    area_share: [I] share of the image the boxes cover (NaN without boxes)
    gap_auroc: frame student_layer, teacher_layers, mean_gap, auroc, ci_low, ci_high, p_value,
               q_value, n_pos, n_neg
    field:     "t2i" or "i2i"
    """

    items: pd.DataFrame
    layers: dict[str, list[int]]
    in_box: dict[str, np.ndarray]
    area_share: np.ndarray
    gap_auroc: pd.DataFrame
    field: str

    def to_frame(self) -> pd.DataFrame:
        """Long frame: uid, category, skill, group, model, layer, head (-1 = mean), in_box,
        area_share, ratio; items without boxes left out."""
        parts = []
        for model, arr in self.in_box.items():
            n_i, n_l, n_h = arr.shape
            idx = np.indices((n_i, n_l, n_h)).reshape(3, -1)
            f = self.items.iloc[idx[0]].reset_index(drop=True)[["uid", "category", "skill", "group"]]
            f["model"] = model
            f["layer"] = np.asarray(self.layers[model], dtype=np.int64)[idx[1]]
            f["head"] = np.where(idx[2] == n_h - 1, -1, idx[2])
            f["in_box"] = arr.reshape(-1).astype(np.float64)
            f["area_share"] = self.area_share[idx[0]]
            parts.append(f)
        frame = pd.concat(parts, ignore_index=True)
        frame["ratio"] = frame.in_box / frame.area_share
        return frame[frame.in_box.notna()].reset_index(drop=True)

    def by_layer(self) -> pd.DataFrame:
        """Head-mean in_box and ratio per (model, layer): mean over items with boxes."""
        frame = self.to_frame()
        frame = frame[frame["head"] == -1]
        return frame.groupby(["model", "layer"], sort=True).agg(
            in_box=("in_box", "mean"), ratio=("ratio", "mean"), n=("in_box", "count")).reset_index()

    def to_dict(self) -> dict:
        return {"items": self.items.to_dict(orient="list"), "layers": self.layers, "field": self.field,
                "in_box": {m: {"shape": list(a.shape), "values": a.reshape(-1).tolist()}
                           for m, a in self.in_box.items()},
                "area_share": self.area_share.tolist(), "gap_auroc": self.gap_auroc.to_dict(orient="list")}

    @classmethod
    def from_dict(cls, d: dict) -> GroundingResult:
        in_box = {m: np.asarray(v["values"], dtype=np.float64).reshape(v["shape"]) for m, v in d["in_box"].items()}
        return cls(item_table(d["items"]), {m: [int(x) for x in v] for m, v in d["layers"].items()}, in_box,
                   np.asarray(d["area_share"], dtype=np.float64), pd.DataFrame(d["gap_auroc"]), d["field"])


def grounding(store: RunStore, *, field: str = "t2i", n_boot: int = 1000, n_perm: int = 1000, seed: int = 0,
              progress: Progress = None) -> GroundingResult:
    """Attention on the named objects' boxes per model, layer and head, and the student's gap.

    Args:
        store: an open run; items need boxes (index column ``boxes``) and a readable image
            (only its header is read, for the pixel size the boxes are given in).
        field: "t2i" (the answer position's attention) or "i2i" (attention received).
        n_boot, seed: bootstrap replicates and seed of the gap AUROC interval.
        n_perm: 0 skips the p-values; otherwise they come from the rank-sum test (the permutation
            test with every permutation), corrected across layers (BH). A report corrects them
            together with the error link (`analyses.error_link.joint_family`).
        progress: called with items done after each shard.
    """
    if field not in FIELDS:
        raise ValueError(f"unknown field {field!r}; use one of {sorted(FIELDS)}")
    usable = usable_items(store)
    layers = {m: store.layers(m) for m in ("teacher", "student")}
    in_box = {m: np.full((len(usable), len(layers[m]), store.n_heads(m) + 1), np.nan) for m in layers}
    area = np.full(len(usable), np.nan)
    pos = {u: i for i, u in enumerate(usable.uid)}
    for rows in iter_usable_shards(store, usable):
        for _, row in rows.iterrows():
            boxes = item_boxes(row)
            size = image_size(str(row["image"])) if boxes else None
            if size is None:
                continue
            i = pos[row["uid"]]
            for model in layers:
                grid = (int(row[f"{model}_grid_rows"]), int(row[f"{model}_grid_cols"]))
                cover = box_cover(boxes, size, grid)  # [N]
                maps = load_maps(store, row["uid"], model, FIELDS[field]).astype(np.float64)  # [L, H, N]
                maps = np.concatenate([maps, maps.mean(1, keepdims=True)], axis=1)  # [L, H+1, N]
                maps /= np.clip(maps.sum(-1, keepdims=True), 1e-12, None)
                in_box[model][i] = maps @ cover
                if model == "student":
                    area[i] = cover.mean()
        if progress:
            progress(len(rows))
    items = item_table(usable)
    gap = _gap_auroc(store, items, layers, in_box, n_boot, n_perm, seed)
    return GroundingResult(items, layers, in_box, area, gap, field)


def _gap_auroc(store, items, layers, in_box, n_boot, n_perm, seed) -> pd.DataFrame:
    lmap = resolve_layer_map(store)
    t_pos = {t: i for i, t in enumerate(layers["teacher"])}
    tr = items.teacher_correct.to_numpy(bool)
    wrong = ~items.student_correct.to_numpy(bool)
    rows = []
    for j, s in enumerate(layers["student"]):
        teacher = in_box["teacher"][:, [t_pos[t] for t in lmap[s]], -1].mean(1)  # [I] group mean of head means
        gap = teacher - in_box["student"][:, j, -1]  # [I], > 0: the student looks less at the objects
        auc, lo, hi = auroc_ci(gap[tr], wrong[tr], n_boot, seed)
        ok = tr & np.isfinite(gap)
        rows.append({"student_layer": int(s), "teacher_layers": ",".join(map(str, lmap[s])),
                     "mean_gap": float(np.nanmean(gap)) if np.isfinite(gap).any() else np.nan,
                     "auroc": auc, "ci_low": lo, "ci_high": hi,
                     "p_value": rank_sum_p(gap[tr], wrong[tr]) if n_perm > 0 else np.nan,
                     "n_pos": int((ok & wrong).sum()), "n_neg": int((ok & ~wrong).sum())})
    frame = pd.DataFrame(rows, columns=["student_layer", "teacher_layers", "mean_gap", "auroc", "ci_low", "ci_high",
                                        "p_value", "n_pos", "n_neg"])
    frame["q_value"] = adjust_pvalues(frame.p_value.to_numpy(), "bh")
    return frame
