"""The run store: what ``cdviz record`` writes and every analysis, report and page reads.

    RUN/
      manifest.json                      format, version, models, probe set, options
      shards/{teacher,student}/K.safetensors   fp16 tensors "{uid}/{field}" for the items of shard K
      parts/K.outcomes.parquet           per-query outcomes of shard K (both models)
      parts/K.parquet                    index rows of shard K; written last: "shard K is done"
      index.parquet                      all index rows (written once every shard is done)
      outcomes.parquet                   all per-query outcomes

Tensor fields per item and model (L recorded layers, H heads, Q text query rows, N image tokens),
see cdviz/record/capture.py for their meaning:
    t2i [L, H, Q, N]   mass [L, H, Q]   entropy [L, H, Q]
    i2i [L, H, N]      i2i_filt [L, H, N]   i2i_paper [L, N]   i2i_block [L, N, N] (optional)

Readers open shards memory-mapped and read only the requested (layer, head) slice.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
from safetensors import safe_open

from cdviz import __version__
from cdviz.errors import CdvizError
from cdviz.io import atomic_path, write_parquet_atomic

FORMAT = "cdviz-run"
FORMAT_VERSION = 1
MODELS = ("teacher", "student")
FIELDS = ("t2i", "mass", "entropy", "i2i", "i2i_filt", "i2i_paper", "i2i_block")


class StoreError(CdvizError, ValueError):
    """A run directory that cannot be read; the message says why and what to do."""


def shard_name(k: int) -> str:
    return f"{k:05d}"


def tensor_key(uid: str, field: str) -> str:
    return f"{uid}/{field}"


class RunStore:
    """Read access to a finished (or partly finished) run."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        path = self.root / "manifest.json"
        if not path.is_file():
            raise StoreError(f"{self.root}: no manifest.json; this is not a cdviz run (make one with `cdviz record`)")
        try:
            self.manifest: dict[str, Any] = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise StoreError(f"{path}: corrupt manifest ({e.msg} at line {e.lineno}); re-run `cdviz record`") from e
        if self.manifest.get("format") != FORMAT:
            raise StoreError(f"{path}: not a cdviz run manifest (format {self.manifest.get('format')!r})")
        version = self.manifest.get("version")
        if version != FORMAT_VERSION:
            raise StoreError(
                f"{self.root}: run store version {version}, this cdviz ({__version__}) reads version "
                f"{FORMAT_VERSION}; re-record it with this cdviz"
            )
        self._index: pd.DataFrame | None = None
        self._outcomes: pd.DataFrame | None = None

    # ---- tables --------------------------------------------------------------------------
    @property
    def complete(self) -> bool:
        return (self.root / "index.parquet").is_file()

    @property
    def index(self) -> pd.DataFrame:
        """One row per item: metadata, spans, grids, outcomes per model, shard."""
        if self._index is None:
            self._index = self._read_table("index.parquet", "*.parquet", exclude=".outcomes.")
        return self._index

    @property
    def outcomes(self) -> pd.DataFrame:
        """One row per (model, query): as ``cdviz eval`` writes, with a ``model`` column."""
        if self._outcomes is None:
            self._outcomes = self._read_table("outcomes.parquet", "*.outcomes.parquet")
        return self._outcomes

    def _read_table(self, final: str, part_glob: str, exclude: str | None = None) -> pd.DataFrame:
        if (self.root / final).is_file():
            return pd.read_parquet(self.root / final)
        parts = sorted(p for p in (self.root / "parts").glob(part_glob) if not exclude or exclude not in p.name)
        if not parts:
            raise StoreError(f"{self.root}: no finished shards yet; let `cdviz record` run (it resumes where it stopped)")
        return pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)

    # ---- facts -------------------------------------------------------------------------------
    def model_info(self, model: str) -> dict[str, Any]:
        self._check_model(model)
        return self.manifest["models"][model]

    def layers(self, model: str) -> list[int]:
        """Decoder layer numbers recorded for ``model``, in storage order."""
        return list(self.model_info(model)["layers"])

    def n_heads(self, model: str) -> int:
        return int(self.model_info(model)["n_heads"])

    def grid(self, uid: str, model: str) -> tuple[int, int]:
        row = self.row(uid)
        return int(row[f"{model}_grid_rows"]), int(row[f"{model}_grid_cols"])

    def row(self, uid: str) -> pd.Series:
        idx = self._uid_rows()
        if uid not in idx:
            raise StoreError(f"{self.root}: no item {uid!r} in this run")
        return self.index.iloc[idx[uid]]

    def _uid_rows(self) -> dict[str, int]:
        if not hasattr(self, "_uid_pos"):
            self._uid_pos = {u: i for i, u in enumerate(self.index.uid)}
        return self._uid_pos

    def _check_model(self, model: str) -> None:
        if model not in self.manifest.get("models", {}):
            raise StoreError(f"unknown model {model!r}; this run has {sorted(self.manifest.get('models', {}))}")

    # ---- tensors -----------------------------------------------------------------------------
    def get(self, uid: str, model: str, field: str, layer: int | None = None, head: int | None = None) -> np.ndarray:
        """One item's recorded tensor, optionally sliced to a decoder layer and head (float32).

        ``layer`` is the decoder layer number (not the storage position); ``head`` indexes heads.
        Only the requested slice is read from disk.
        """
        self._check_model(model)
        if field not in FIELDS:
            raise StoreError(f"unknown field {field!r}; fields: {', '.join(FIELDS)}")
        row = self.row(uid)
        if row.get("status", "ok") != "ok":
            raise StoreError(f"item {uid!r} was skipped during recording: {row.get('skip_reason')}")
        path = self.root / "shards" / model / f"{shard_name(int(row['shard']))}.safetensors"
        if not path.is_file():
            raise StoreError(f"{path}: shard missing; re-run `cdviz record` with the same command to restore it")
        handle = _open_shard(str(path), path.stat().st_mtime_ns)
        key = tensor_key(uid, field)
        if key not in handle.keys():
            raise StoreError(f"item {uid!r} has no {field!r} for {model} (record with the option that stores it)")
        sl = handle.get_slice(key)
        index: tuple = ()
        if layer is not None:
            layers = self.layers(model)
            if layer not in layers:
                raise StoreError(f"layer {layer} was not recorded for {model}; recorded: {layers}")
            index = (layers.index(layer),)
            if head is not None:
                if field == "i2i_paper" or field == "i2i_block":
                    raise StoreError(f"{field!r} is already a mean over heads; pass head=None")
                index = (*index, head)
        elif head is not None:
            raise StoreError("pass a layer together with a head")
        return np.asarray(sl[index] if index else sl[:], dtype=np.float32)

    def iter_shards(self) -> Iterator[tuple[int, pd.DataFrame]]:
        """(shard number, its index rows), so streaming readers hold one shard at a time."""
        for k, rows in self.index.groupby("shard", sort=True):
            yield int(k), rows


@lru_cache(maxsize=64)
def _open_shard(path: str, mtime_ns: int):
    """A memory-mapped shard; keyed by modification time too, so a re-recorded shard is reread."""
    return safe_open(path, framework="np")


def open_run(root: str | Path) -> RunStore:
    return RunStore(root)


# ---- writing (used by the recorder and by synthetic stores) -------------------------------------
def part_path(root: Path, k: int) -> Path:
    return Path(root) / "parts" / f"{shard_name(k)}.parquet"


def write_shard(root: Path, model: str, k: int, tensors: dict) -> None:
    """Atomically write one model's tensors (torch) for shard ``k`` (fp16, contiguous)."""
    # torch is imported here, not at module level: readers (dashboard, analyses) start faster.
    import torch
    from safetensors.torch import save_file

    path = Path(root) / "shards" / model / f"{shard_name(k)}.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {key: t.to(torch.float16).contiguous() for key, t in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"cdviz_version": __version__, "model": model})


def write_part(root: Path, k: int, index: pd.DataFrame, outcomes: pd.DataFrame) -> None:
    """Shard ``k``'s outcome and index rows; the index part is written last and marks the shard done."""
    write_parquet_atomic(Path(root) / "parts" / f"{shard_name(k)}.outcomes.parquet", outcomes)
    write_parquet_atomic(part_path(root, k), index)


def finalize(root: Path, n_shards: int) -> bool:
    """Merge the shard parts once all exist; returns whether the run is complete."""
    parts = [part_path(root, k) for k in range(n_shards)]
    if not all(p.is_file() for p in parts):
        return False
    index = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
    outcomes = pd.concat([pd.read_parquet(p.with_suffix(".outcomes.parquet")) for p in parts], ignore_index=True)
    write_parquet_atomic(Path(root) / "outcomes.parquet", outcomes)
    write_parquet_atomic(Path(root) / "index.parquet", index)
    return True
