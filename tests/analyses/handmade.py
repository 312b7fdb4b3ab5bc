"""Tiny run stores written by hand through the store writers, so analyses can be checked against
values worked out on paper.

    write_store(DIR, items, teacher_layers=2, student_layers=1, n_heads=2) -> DIR

Each item gives per-model attention ``att`` [L, H, N] (used as the answer-row t2i map and as
the received i2i vectors) and optionally ``filt`` [L, H, N] (i2i_filt; default = att) and
``pieces`` {model: (the "pieces" column's list, answer-row t2i_pieces [L, H, M])}: a store with any
item's pieces is written as one recorded with --pieces.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from cdviz.io import write_json_atomic
from cdviz.store import FORMAT, FORMAT_VERSION, finalize, tensor_key, write_part, write_shard


def item(uid: str, teacher: np.ndarray, student: np.ndarray, *, category: str = "swap_att", teacher_correct=True,
         student_correct=True, boxes=(), teacher_filt=None, student_filt=None, pieces=None) -> dict:
    return {"uid": uid, "category": category, "teacher_correct": teacher_correct, "student_correct": student_correct,
            "att": {"teacher": np.asarray(teacher, float), "student": np.asarray(student, float)},
            "filt": {"teacher": teacher_filt, "student": student_filt}, "boxes": list(boxes),
            "pieces": dict(pieces or {})}


def write_store(root: str | Path, items: list[dict], *, teacher_grid=(2, 2), student_grid=(2, 2),
                image_size: int = 20) -> Path:
    root = Path(root)
    first = items[0]["att"]
    n_layers = {m: first[m].shape[0] for m in ("teacher", "student")}
    n_heads = {m: first[m].shape[1] for m in ("teacher", "student")}
    grids = {"teacher": teacher_grid, "student": student_grid}
    manifest = {
        "format": FORMAT, "version": FORMAT_VERSION, "cdviz_version": "test",
        "models": {m: {"path": f"handmade:{m}", "arch": "Handmade", "n_layers": n_layers[m], "n_heads": n_heads[m],
                       "n_kv_heads": n_heads[m], "layers": list(range(n_layers[m])), "image_token_id": -1}
                   for m in ("teacher", "student")},
        "probes": {"path": str(root), "name": "handmade", "n_items": len(items), "items_sha256": ""},
        "options": {"layers": None, "queries": "answer", "store_block": False, "shard_size": len(items),
                    "batch_size": 1, "dtype": "float32",
                    "pieces": any(it.get("pieces") for it in items)},
    }
    root.mkdir(parents=True, exist_ok=True)
    write_json_atomic(root / "manifest.json", manifest)
    image = root / "image.png"
    Image.new("RGB", (image_size, image_size)).save(image)
    tensors = {"teacher": {}, "student": {}}
    rows, outcomes = [], []
    for it in items:
        row = {"uid": it["uid"], "source": "handmade", "category": it["category"], "subcategory": "",
               "skill": "perception", "kind": "choice", "split": "test", "shard": 0, "image": str(image),
               "options": json.dumps(["a", "b"]), "correct_option": 0, "question": "q",
               "boxes": json.dumps(it["boxes"]), "status": "ok", "skip_reason": ""}
        for m in ("teacher", "student"):
            att = torch.tensor(it["att"][m], dtype=torch.float32)  # [L, H, N]
            filt = torch.tensor(it["filt"][m] if it["filt"][m] is not None else it["att"][m], dtype=torch.float32)
            t = tensors[m]
            t[tensor_key(it["uid"], "t2i")] = att[:, :, None, :]
            t[tensor_key(it["uid"], "mass")] = torch.ones(att.shape[:2] + (1,))
            t[tensor_key(it["uid"], "entropy")] = torch.zeros(att.shape[:2] + (1,))
            t[tensor_key(it["uid"], "i2i")] = att
            t[tensor_key(it["uid"], "i2i_filt")] = filt
            t[tensor_key(it["uid"], "i2i_paper")] = filt.mean(1)
            listed, maps = it.get("pieces", {}).get(m, ([], None))
            if maps is not None and listed:
                t[tensor_key(it["uid"], "t2i_pieces")] = torch.tensor(np.asarray(maps), dtype=torch.float32)[:, :, None]
            right = bool(it[f"{m}_correct"])
            rows_, cols_ = grids[m]
            row.update({f"{m}_span_start": 1, f"{m}_n_image": rows_ * cols_, f"{m}_grid_rows": rows_,
                        f"{m}_grid_cols": cols_, f"{m}_seq_len": 10, f"{m}_query_tokens": "[]",
                        f"{m}_pieces": json.dumps(listed),
                        f"{m}_correct": right, f"{m}_accuracy": float(right), f"{m}_margin": 1.0 if right else -1.0})
            outcomes.append({"model": m, "uid": it["uid"], "category": it["category"], "skill": "perception",
                             "kind": "choice", "order": "01", "chosen": 0 if right else 1, "correct": right,
                             "margin": 1.0, "caption": -1, "image": 0, "score": float("nan")})
        rows.append(row)
    for m in ("teacher", "student"):
        write_shard(root, m, 0, tensors[m])
    write_part(root, 0, pd.DataFrame(rows), pd.DataFrame(outcomes))
    finalize(root, 1)
    return root
