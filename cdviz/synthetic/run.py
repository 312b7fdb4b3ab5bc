"""Synthetic run stores with a planted, known answer, for tests and ``cdviz bench report``.

Written through the same store writers as ``cdviz record``, so readers cannot tell the
difference, but the truth is known:

  - the teacher looks at the item's object box in every layer: a Gaussian bump in image space
    (isotropic in the image, so anisotropic in cells on a non-square grid), most sharply in the
    middle layers (``depth_profile="middle"``) or more sharply with depth (``"monotone"``, so a
    layer's relative depth can be read off its maps);
  - each model's map is that one continuous picture integrated over its own patch cells, so two
    layers with the same truth carry the same mass per image region on any pair of grids (equal,
    2x, non-divisible such as 27x27 vs 24x24, non-square) and the planted answer holds across grids;
  - in the ``planted`` student layers the student's map is a mix of the teacher's and a bump at
    a wrong place, with per-item weight m ~ U(0, 1) (the item's misalignment); elsewhere it
    follows the teacher with small noise;
  - in the ``decoys`` student layers the student's map is mixed with a wrong bump too, with a
    larger weight u ~ U(0.5, 1) drawn apart from m: more misaligned than the planted layers, on
    every item, yet unrelated to the errors (a rule that ranks layers by how large their
    misalignment is picks these);
  - the teacher is right with probability 0.95; the student is wrong with probability
    sigmoid(link * (m - 0.5)), so misalignment in the planted layers predicts its errors.

    make_synthetic_run(DIR, n_items=200, seed=0) -> DIR
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageDraw
from scipy.stats import norm

from cdviz import __version__, schema
from cdviz.io import write_json_atomic
from cdviz.store import finalize, tensor_key, write_part, write_shard

CATEGORIES = {"replace_att": "perception", "swap_att": "perception", "replace_rel": "perception",
              "add_obj": "perception", "existence": "recognition", "colour": "recognition"}


FLOOR = 0.01  # share of every map spread evenly over the image, so no cell is exactly 0


def cell_integrated_bump(grid: tuple[int, int], cy: float, cx: float, sy: float, sx: float,
                         floor: float = FLOOR) -> np.ndarray:
    """[rows * cols] mass per cell of one continuous map over the image, row-major.

    The map is a Gaussian centred at (cy, cx) with standard deviations (sy, sx), all in image
    units ([0, 1] on each axis, so a grid's cells are [r / rows, (r + 1) / rows) x ...), cut to
    the image and normalised there, mixed with a uniform ``floor`` share. The Gaussian is
    separable, so a cell's mass is the product of normal CDF differences over its edges: exact,
    and the same region gets the same mass on every grid.
    """
    rows, cols = grid
    py = np.diff(norm.cdf((np.linspace(0, 1, rows + 1) - cy) / sy))  # [rows]
    px = np.diff(norm.cdf((np.linspace(0, 1, cols + 1) - cx) / sx))  # [cols]
    m = np.outer(py, px)
    m = m / m.sum()
    return ((1 - floor) * m + floor / (rows * cols)).reshape(-1)


def layer_sd(layer: int, n_layers: int, depth_profile: str = "middle") -> float:
    """Width (standard deviation, image units) of the bump a layer looks with; smaller = sharper."""
    if depth_profile not in ("middle", "monotone"):
        raise ValueError(f"unknown depth_profile {depth_profile!r}; use 'middle' or 'monotone'")
    depth = layer / max(1, n_layers - 1)
    sharpness = 2.0 * (math.sin(math.pi * depth) if depth_profile == "middle" else depth)
    return max(0.6, 2.5 - sharpness) / 8  # 0.6 to 2.5 cells of an 8x8 grid


def planted_layer_map(teacher_layers: int, student_layers: int, depth_profile: str = "monotone"
                      ) -> dict[int, set[int]]:
    """The true layer correspondence: {student layer: teacher layers whose maps are the closest in
    width} (a set, as layers of equal width tie; with "middle", mirror layers tie too)."""
    out = {}
    for s in range(student_layers):
        gap = np.array([abs(layer_sd(t, teacher_layers, depth_profile) - layer_sd(s, student_layers, depth_profile))
                        for t in range(teacher_layers)])
        out[s] = {int(t) for t in np.flatnonzero(gap <= gap.min() + 1e-12)}
    return out


def make_synthetic_run(
    root: str | Path,
    *,
    n_items: int = 200,
    seed: int = 0,
    teacher_layers: int = 8,
    student_layers: int = 4,
    n_heads: int = 4,
    teacher_grid: tuple[int, int] = (8, 8),
    student_grid: tuple[int, int] = (4, 4),
    planted: tuple[int, ...] = (1, 2),
    link: float = 6.0,
    shard_size: int = 50,
    image_size: int = 64,
    depth_profile: str = "middle",
    decoys: tuple[int, ...] = (),
) -> Path:
    root = Path(root)
    rng = np.random.default_rng(seed)
    decoy_rng = np.random.default_rng([seed, 1])  # its own stream: decoys leave every other draw as it was
    (root / "images").mkdir(parents=True, exist_ok=True)
    manifest = schema.manifest(
        {name: {"path": f"synthetic:{name}", "arch": "Synthetic", "n_layers": n_layers, "n_heads": n_heads,
                "n_kv_heads": n_heads, "layers": list(range(n_layers)), "image_token_id": -1}
         for name, n_layers in (("teacher", teacher_layers), ("student", student_layers))},
        {"path": str(root / "images"), "name": f"synthetic seed {seed}", "n_items": n_items, "items_sha256": ""},
        {"layers": None, "queries": "answer", "store_block": False, "pieces": False, "shard_size": shard_size,
         "batch_size": 0, "dtype": "synthetic"},
        cdviz_version=__version__,
        synthetic={"seed": seed, "planted_student_layers": list(planted), "link": link,
                   "decoy_student_layers": list(decoys), "depth_profile": depth_profile})
    write_json_atomic(root / "manifest.json", manifest)
    cats = list(CATEGORIES)
    n_shards = math.ceil(n_items / shard_size)
    for k in range(n_shards):
        tensors = {"teacher": {}, "student": {}}
        index_rows, outcome_rows = [], []
        for i in range(k * shard_size, min(n_items, (k + 1) * shard_size)):
            uid = f"syn-{i:05d}"
            cat = cats[i % len(cats)]
            # object box in pixels
            w = h = float(rng.integers(image_size // 5, image_size // 3))
            x, y = float(rng.uniform(0, image_size - w)), float(rng.uniform(0, image_size - h))
            img = Image.new("RGB", (image_size, image_size), (128, 128, 128))
            ImageDraw.Draw(img).rectangle([x, y, x + w - 1, y + h - 1], fill=(220, 40, 40))
            img_path = root / "images" / f"{uid}.png"
            img.save(img_path)
            m = float(rng.uniform())
            wrong_y, wrong_x = rng.uniform(0, 1, size=2)
            decoy_w, decoy_y, decoy_x = decoy_rng.uniform(0.5, 1), *decoy_rng.uniform(0, 1, size=2)
            models = (("teacher", teacher_layers, teacher_grid), ("student", student_layers, student_grid))
            for name, n_layers, grid in models:
                cy, cx = (y + h / 2) / image_size, (x + w / 2) / image_size  # image units
                maps = []
                for layer in range(n_layers):
                    sd = layer_sd(layer, n_layers, depth_profile)
                    base = cell_integrated_bump(grid, cy, cx, sd, sd)
                    if name == "student" and layer in planted:
                        base = (1 - m) * base + m * cell_integrated_bump(grid, wrong_y, wrong_x, sd, sd)
                    elif name == "student" and layer in decoys:
                        base = (1 - decoy_w) * base + decoy_w * cell_integrated_bump(grid, decoy_y, decoy_x, sd, sd)
                    heads = [base * rng.uniform(0.8, 1.2, size=base.shape) for _ in range(n_heads)]
                    maps.append(np.stack([hm / hm.sum() for hm in heads]))
                att = torch.tensor(np.stack(maps), dtype=torch.float32)  # [L, H, N]
                mass = torch.tensor(rng.uniform(0.1, 0.6, size=(n_layers, n_heads, 1)), dtype=torch.float32)
                t = tensors[name]
                t[tensor_key(uid, "t2i")] = (att * mass)[:, :, None, :]  # [L, H, 1, N]
                t[tensor_key(uid, "mass")] = mass
                t[tensor_key(uid, "entropy")] = -(att * att.clamp_min(1e-12).log()).sum(-1, keepdim=True)
                t[tensor_key(uid, "i2i")] = att
                t[tensor_key(uid, "i2i_filt")] = att
                t[tensor_key(uid, "i2i_paper")] = att.mean(1)
            t_right = bool(rng.uniform() < 0.95)
            s_right = bool(rng.uniform() >= 1 / (1 + math.exp(-link * (m - 0.5))))
            options = [f"option {i} true", f"option {i} false"]
            columns = {"uid": uid, "source": "synthetic", "category": cat, "subcategory": "", "skill": CATEGORIES[cat],
                       "kind": "choice", "split": "test", "shard": k, "image": str(img_path),
                       "options": json.dumps(options), "correct_option": 0,
                       "question": "Which caption best describes the image?",
                       "boxes": json.dumps([{"phrase": "red square", "x": x, "y": y, "w": w, "h": h, "image": 0}]),
                       "status": "ok", "skip_reason": ""}
            per_model = {}
            for name, right, grid in (("teacher", t_right, teacher_grid), ("student", s_right, student_grid)):
                margin = float(rng.uniform(0.2, 3.0)) * (1 if right else -1)
                per_model[name] = {"span_start": 2, "n_image": grid[0] * grid[1], "grid_rows": grid[0],
                                   "grid_cols": grid[1], "seq_len": 40, "query_tokens": json.dumps([":"]),
                                   "pieces": "[]", "correct": right, "strict": None, "accuracy": 1.0 if right else 0.0,
                                   "margin": margin}
                for order in ("01", "10"):
                    outcome_rows.append({"model": name, "uid": uid, "category": cat, "skill": CATEGORIES[cat],
                                         "kind": "choice", "order": order, "chosen": 0 if right else 1,
                                         "correct": right, "margin": margin, "caption": -1, "image": 0,
                                         "score": float("nan")})
            index_rows.append(schema.index_row(columns, per_model, planted_misalignment=m))
        for name in ("teacher", "student"):
            write_shard(root, name, k, tensors[name])
        write_part(root, k, pd.DataFrame(index_rows), pd.DataFrame(outcome_rows))
    finalize(root, n_shards)
    return root
