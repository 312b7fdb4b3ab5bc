"""The run store: what ``cdviz record`` writes and every analysis, report and page reads.

    RUN/
      manifest.json                      format, version, models, probe set, options
      shards/{teacher,student}/K.safetensors   fp16 tensors "{uid}/{field}" for the items of shard K
      parts/K.outcomes.parquet           per-query outcomes of shard K (both models)
      parts/K.parquet                    index rows of shard K; written last: "shard K is done";
                                         its schema metadata holds each shard file's size and sha256
      index.parquet                      all index rows (written once every shard is done)
      outcomes.parquet                   all per-query outcomes

Tensor fields per item and model (L recorded layers, H heads, Q text query rows, N image tokens),
their meaning, the manifest and the index columns: cdviz/schema.py.
    t2i [L, H, Q, N]   mass [L, H, Q]   entropy [L, H, Q]
    i2i [L, H, N]      i2i_filt [L, H, N]   i2i_paper [L, N]
    i2i_block [L, N, N] (--store-block)     t2i_pieces [L, H, Q, M] (--pieces: the crops / tiles, M patches)

Readers open shards memory-mapped and read only the requested (layer, head) slice.

``verify_run(RUN)`` (``cdviz verify RUN``) says which shards are missing or damaged (a truncated or
unreadable safetensors file, a size or checksum other than the part file recorded); ``cdviz record``
re-records exactly those, and ``cdviz report`` refuses a run that is not whole.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
from safetensors import safe_open

from cdviz import __version__
from cdviz.errors import CdvizError
from cdviz.io import atomic_path, write_parquet_atomic
from cdviz.schema import FIELDS, FORMAT, LOADING, MODELS, model_column, model_loading
from cdviz.schema import VERSION as FORMAT_VERSION


class StoreError(CdvizError, ValueError):
    """A run directory that cannot be read; the message says why and what to do."""


def version_message(root: Path, version: Any) -> str:
    """Why a store of another format version cannot be read, and the fix."""
    if isinstance(version, int) and version > FORMAT_VERSION:
        return (f"{root}: run store version {version} was written by a newer cdviz; this cdviz ({__version__}) "
                f"reads version {FORMAT_VERSION}: upgrade cdviz, or record into a new --out")
    return (f"{root}: run store version {version}, this cdviz ({__version__}) reads version {FORMAT_VERSION}; "
            "re-record it with this cdviz into a new --out")


def shard_name(k: int) -> str:
    return f"{k:05d}"


def tensor_key(uid: str, field: str, option: int | None = None) -> str:
    """The safetensors key of one item's field; ``option`` names the match query of that option
    (recorded only with ``--match-record all``; None: the item's recorded query, the true option's)."""
    return f"{uid}/{field}" if option is None else f"{uid}/option{option}/{field}"


class RunStore:
    """Read access to a finished (or partly finished) run."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        path = self.root / "manifest.json"
        if not path.is_file():
            raise StoreError(f"{self.root}: no manifest.json; this is not a cdviz run (make one with `cdviz record`)")
        try:
            self.manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as e:
            raise StoreError(f"{path}: corrupt manifest (not UTF-8 text); re-run `cdviz record` with the same "
                             "command to rebuild it") from e
        except json.JSONDecodeError as e:
            raise StoreError(f"{path}: corrupt manifest ({e.msg} at line {e.lineno}); re-run `cdviz record` with "
                            "the same command to rebuild it") from e
        if not isinstance(self.manifest, dict) or self.manifest.get("format") != FORMAT:
            self.manifest = self.manifest if isinstance(self.manifest, dict) else {}
            raise StoreError(f"{path}: not a cdviz run manifest (format {self.manifest.get('format')!r}); point at "
                             "a folder `cdviz record` wrote")
        version = self.manifest.get("version")
        if version != FORMAT_VERSION:
            raise StoreError(version_message(self.root, version))
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

    def model_loading(self, model: str) -> dict[str, Any]:
        """How ``model`` was loaded when recorded, as ``load_model(path, **this)`` takes it (adapter,
        grid; cdviz.schema.model_loading): what every reload of the run's models passes on."""
        self._check_model(model)
        return model_loading(self.manifest, model)

    def layers(self, model: str) -> list[int]:
        """Decoder layer numbers recorded for ``model``, in storage order."""
        return list(self.model_info(model)["layers"])

    def n_heads(self, model: str) -> int:
        return int(self.model_info(model)["n_heads"])

    def grid(self, uid: str, model: str) -> tuple[int, int]:
        row = self.row(uid)
        return int(row[model_column(model, "grid_rows")]), int(row[model_column(model, "grid_cols")])

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
    def get(self, uid: str, model: str, field: str, layer: int | None = None, head: int | None = None,
            option: int | None = None) -> np.ndarray:
        """One item's recorded tensor, optionally sliced to a decoder layer and head (float32).

        ``layer`` is the decoder layer number (not the storage position); ``head`` indexes heads.
        ``option``: the match query of that option instead of the recorded (true option's) query,
        for a run recorded with ``--match-record all``. Only the requested slice is read from disk.
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
        try:
            handle = _open_shard(str(path), path.stat().st_mtime_ns)
        except Exception as e:  # noqa: BLE001 - safetensors raises its own error type for a damaged file
            raise StoreError(f"{path}: damaged shard ({e}); re-run `cdviz record` with the same command to "
                             "re-record it (`cdviz verify RUN` lists every damaged shard)") from e
        key = tensor_key(uid, field, option)
        if key not in handle.keys():
            if option is not None:
                raise StoreError(f"item {uid!r} has no {field!r} of option {option} for {model}: record with "
                                 "--protocol match --match-record all to keep every option's attention")
            raise StoreError(f"item {uid!r} has no {field!r} for {model} (record with the option that stores it)")
        sl = handle.get_slice(key)
        index: tuple = ()
        if layer is not None:
            layers = self.layers(model)
            if layer not in layers:
                raise StoreError(f"layer {layer} was not recorded for {model}; recorded: {layers}")
            index = (layers.index(layer),)
            if head is not None:
                if not FIELDS[field].per_head:
                    raise StoreError(f"{field!r} is already a mean over heads; pass head=None")
                index = (*index, head)
        elif head is not None:
            raise StoreError("pass a layer together with a head")
        try:
            return np.asarray(sl[index] if index else sl[:], dtype=np.float32)
        except Exception as e:  # noqa: BLE001
            raise StoreError(f"{path}: damaged shard, {key} unreadable ({e}); re-run `cdviz record` with the same "
                             "command to re-record it") from e

    # ---- health -------------------------------------------------------------------------------
    def health(self, checksums: bool = False) -> "RunHealth":
        """Which shards are missing or damaged, and how many items are recorded (``verify_run``)."""
        return verify_run(self.root, checksums=checksums, manifest=self.manifest)

    def require_whole(self) -> None:
        """Raise StoreError saying what is missing or damaged unless every shard is recorded and intact."""
        health = self.health()
        if not health.ok:
            raise StoreError(health.message())

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


def shard_path(root: Path, model: str, k: int) -> Path:
    return Path(root) / "shards" / model / f"{shard_name(k)}.safetensors"


def write_shard(root: Path, model: str, k: int, tensors: dict) -> dict:
    """Atomically write one model's tensors (torch) for shard ``k`` (fp16, contiguous); returns the
    file's ``{"size", "sha256"}`` for the part file (see `write_part`)."""
    # torch is imported here, not at module level: readers (dashboard, analyses) start faster.
    import torch
    from safetensors.torch import save_file

    path = shard_path(root, model, k)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {key: t.to(torch.float16).contiguous() for key, t in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"cdviz_version": __version__, "model": model})
        facts = {"size": tmp.stat().st_size, "sha256": file_sha256(tmp)}
    return facts


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


SHARDS_META = b"cdviz_shards"  # part file schema metadata: {model: {"size", "sha256"}} of shard K's files
RUN_META = b"cdviz_run"  # part file schema metadata: run_identity of the manifest the part was recorded under


def run_identity(manifest: dict) -> str:
    """sha256 of what makes a run that run (models, probe set, options: what a resume must match),
    so a part file can be matched to the command that wrote it when manifest.json is lost."""
    ident = {k: manifest.get(k) for k in ("models", "probes", "options")}
    if isinstance(ident["models"], dict):  # loading keys at their defaults: as a run recorded before they existed
        ident["models"] = {m: {k: v for k, v in info.items() if not (k in LOADING and v == LOADING[k][0])}
                           if isinstance(info, dict) else info for m, info in ident["models"].items()}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()


def write_part(root: Path, k: int, index: pd.DataFrame, outcomes: pd.DataFrame,
               shards: dict[str, dict] | None = None, run: str | None = None) -> None:
    """Shard ``k``'s outcome and index rows; the index part is written last and marks the shard done.

    ``shards`` ({model: what `write_shard` returned}) and ``run`` (`run_identity`) go into the index
    part's schema metadata, so `verify_run` can tell a damaged or replaced shard file from the one this
    part belongs to, and `cdviz record` can rebuild a corrupt manifest from parts it can match."""
    write_parquet_atomic(outcomes_part_path(root, k), outcomes)
    if not shards and not run:
        write_parquet_atomic(part_path(root, k), index)
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(index, preserve_index=False)
    meta = dict(table.schema.metadata or {})
    if shards:
        meta[SHARDS_META] = json.dumps(shards, sort_keys=True).encode()
    if run:
        meta[RUN_META] = run.encode()
    with atomic_path(part_path(root, k)) as tmp:
        pq.write_table(table.replace_schema_metadata(meta), tmp)


def part_run(path: Path) -> str | None:
    """The `run_identity` a part file was written under; None when it holds none (an older cdviz);
    StoreError when the file cannot be read."""
    import pyarrow.parquet as pq

    try:
        meta = pq.read_schema(path).metadata or {}
    except Exception as e:  # noqa: BLE001 - a truncated parquet file raises pyarrow's own errors
        raise StoreError(f"{path} unreadable ({e})") from e
    return meta[RUN_META].decode() if RUN_META in meta else None


def outcomes_part_path(root: Path, k: int) -> Path:
    return Path(root) / "parts" / f"{shard_name(k)}.outcomes.parquet"


def clean_stale_tmp(root: Path, k: int | None = None) -> list[Path]:
    """Remove temporary files a killed writer left (of shard ``k`` only, or every one); returns them."""
    root = Path(root)
    pattern = f".{shard_name(k)}.*.tmp" if k is not None else ".*.tmp"
    folders = [root / "parts", *(root / "shards" / m for m in MODELS)] + ([root] if k is None else [])
    removed = []
    for folder in folders:
        for p in folder.glob(pattern) if folder.is_dir() else ():
            if p.is_file():
                p.unlink(missing_ok=True)
                removed.append(p)
    return removed


@dataclass
class RunHealth:
    """What `verify_run` found: shards expected, missing and damaged (with why), items recorded."""

    root: Path
    n_shards: int
    n_items: int                       # items the run should hold (manifest probes.n_items)
    n_recorded: int                    # index rows of the shards whose part exists
    missing: list[int] = field(default_factory=list)
    damaged: dict[int, str] = field(default_factory=dict)
    command: str = ""

    @property
    def ok(self) -> bool:
        return not self.missing and not self.damaged

    def message(self) -> str:
        """One paragraph: what is wrong and the command that repairs it ("" when whole)."""
        if self.ok:
            return ""
        parts = []
        if self.missing:
            names = ", ".join(shard_name(k) for k in self.missing[:5]) + (" ..." if len(self.missing) > 5 else "")
            parts.append(f"{self.n_recorded} of {self.n_items} items recorded ({len(self.missing)} of "
                         f"{self.n_shards} shards missing: {names})")
        for k, why in list(self.damaged.items())[:3]:
            parts.append(f"shard {shard_name(k)} damaged: {why}")
        if len(self.damaged) > 3:
            parts.append(f"{len(self.damaged) - 3} more damaged shards")
        fix = f"run `{self.command}` to finish" if self.command else "re-run `cdviz record` with the same command"
        return f"{self.root}: " + "; ".join(parts) + f"; {fix} (it records only what is missing or damaged)"


def record_command(manifest: dict, root: Path) -> str:
    """The `cdviz record` command line that resumes the run in ``root`` (from its manifest)."""
    models, probes, opts = manifest.get("models", {}), manifest.get("probes", {}), manifest.get("options", {})
    if not all(models.get(m, {}).get("path") for m in MODELS) or not probes.get("path"):
        return ""
    cmd = (f"cdviz record --teacher {models['teacher']['path']} --student {models['student']['path']} "
           f"--probes {probes['path']} --out {root}")
    if opts.get("layers") is not None:
        cmd += f" --layers {','.join(map(str, opts['layers']))}"
    defaults = {"queries": "answer", "shard_size": 32, "batch_size": 8, "dtype": "float32", "protocol": "letters",
                "match_record": "true"}
    for key, default in defaults.items():
        if key in opts and opts[key] != default:
            cmd += f" --{key.replace('_', '-')} {opts[key]}"
    for flag in ("store_block", "pieces"):
        if opts.get(flag):
            cmd += f" --{flag.replace('_', '-')}"
    loading = {loading_flags(model_loading(manifest, m)) for m in MODELS}
    if len(loading) > 1:  # teacher and student loaded differently: no one command line says so
        return ""
    if loading != {""}:
        cmd += f" {loading.pop()}"
    if manifest.get("skipped"):
        cmd += " --skip-bad"
    return cmd


def loading_flags(loading: dict[str, Any]) -> str:
    """The `cdviz record` flags that load a model as ``loading`` (cdviz.schema.model_loading) says:
    "" for the architecture's own adapter, else "--adapter generic" [+ " --grid RxC"]."""
    adapter, grid = loading.get("adapter") or "auto", loading.get("grid")
    flags = "" if adapter == "auto" else f"--adapter {adapter}"
    return flags + (f" --grid {grid[0]}x{grid[1]}" if grid is not None else "")


def check_shard(root: Path, k: int, checksums: bool = False) -> str | None:
    """None when shard ``k`` is done and intact, "missing" when its part file is absent, else why it is damaged."""
    root = Path(root)
    part = part_path(root, k)
    if not part.is_file():
        return "missing"
    if not outcomes_part_path(root, k).is_file():
        return f"{outcomes_part_path(root, k).name} missing"
    try:
        import pyarrow.parquet as pq

        meta = pq.read_schema(part).metadata or {}
    except Exception as e:  # noqa: BLE001 - a truncated parquet file raises pyarrow's own errors
        return f"{part.name} unreadable ({e})"
    expected = json.loads(meta[SHARDS_META]) if SHARDS_META in meta else {}
    for model in MODELS:
        path = shard_path(root, model, k)
        rel = path.relative_to(root)
        if not path.is_file():
            return f"{rel} missing"
        want = expected.get(model)
        if want and path.stat().st_size != want["size"]:
            return f"{rel} has {path.stat().st_size} bytes, {want['size']} were written (truncated or replaced)"
        try:
            with safe_open(str(path), framework="np") as handle:
                handle.keys()
        except Exception as e:  # noqa: BLE001 - safetensors' own error type
            return f"{rel} unreadable ({e})"
        if checksums and want and file_sha256(path) != want["sha256"]:
            return f"{rel} checksum differs from the one written (the file changed after recording)"
    return None


def verify_run(root: str | Path, checksums: bool = False, manifest: dict | None = None) -> RunHealth:
    """Check every shard the run's manifest calls for (see `check_shard`)."""
    root = Path(root)
    if manifest is None:
        manifest = RunStore(root).manifest
    n_items = int(manifest.get("probes", {}).get("n_items", 0))
    shard_size = max(1, int(manifest.get("options", {}).get("shard_size") or n_items or 1))
    n_shards = math.ceil(n_items / shard_size)
    health = RunHealth(root, n_shards, n_items, 0, command=record_command(manifest, root))
    for k in range(n_shards):
        why = check_shard(root, k, checksums)
        if why == "missing":
            health.missing.append(k)
            continue
        if why is not None:
            health.damaged[k] = why
        try:
            import pyarrow.parquet as pq

            health.n_recorded += pq.read_metadata(part_path(root, k)).num_rows
        except Exception:  # noqa: BLE001 - already reported as damaged
            pass
    return health


def finalize(root: Path, n_shards: int) -> bool:
    """Merge the shard parts once all exist; returns whether the run is complete."""
    parts = [part_path(root, k) for k in range(n_shards)]
    if not parts:
        raise StoreError(f"{root}: no shards to merge; a run needs at least one probe item")
    if not all(p.is_file() for p in parts):
        return False
    index = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
    outcomes = pd.concat([pd.read_parquet(p.with_suffix(".outcomes.parquet")) for p in parts], ignore_index=True)
    write_parquet_atomic(Path(root) / "outcomes.parquet", outcomes)
    write_parquet_atomic(Path(root) / "index.parquet", index)
    return True


# What every analysis reads: the items that can be analysed, their outcome group and accuracy.

GROUPS = ("TR/SR", "TR/SW", "TW/SR", "TW/SW")
"""Outcome groups: teacher right/wrong x student right/wrong (consistent / Winoground group)."""


def outcome_group(teacher_ok: bool, student_ok: bool) -> str:
    return f"T{'R' if teacher_ok else 'W'}/S{'R' if student_ok else 'W'}"


def usable_items(store: RunStore) -> pd.DataFrame:
    """Index rows recorded OK whose outcome is known for both models, with ``group`` added.

    Items skipped during recording have no tensors; items without an outcome cannot be linked
    to errors. Both are left out of every analysis (their count is in the report's summary).
    """
    idx = store.index
    ok = idx["status"].astype(str).eq("ok") if "status" in idx else pd.Series(True, index=idx.index)
    ok &= idx["teacher_correct"].notna() & idx["student_correct"].notna()
    rows = idx[ok].copy()
    rows["teacher_correct"] = rows["teacher_correct"].astype(bool)
    rows["student_correct"] = rows["student_correct"].astype(bool)
    rows["group"] = [outcome_group(t, s) for t, s in zip(rows.teacher_correct, rows.student_correct)]
    return rows.reset_index(drop=True)


def item_accuracy(frame: pd.DataFrame, model: str) -> pd.Series:
    """Per item accuracy of ``model``: the mean over query orders for choice items, the group
    score (0 / 1) for match2x2 items, which have no per-order accuracy."""
    return frame[f"{model}_accuracy"].astype(float).fillna(frame[f"{model}_correct"].astype(float))
