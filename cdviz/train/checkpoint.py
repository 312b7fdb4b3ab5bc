"""Resumable training checkpoints: weights in safetensors, state in JSON, written atomically.

    OUT/<stage>/checkpoints/
        step-000300/
            trainable.safetensors    the parameters that train (LoRA, TAF linear, ...), by name
            optimizer.rank0.pt       AdamW state: tensors and numbers only, read back with
                                     torch.load(weights_only=True); one file per rank
            rng.rank0.safetensors    torch CPU / CUDA generator states of that rank
            rng.rank0.json           Python and NumPy generator states of that rank
            state.json               step, scheduler state, config fingerprint
        latest                       name of the newest complete checkpoint

A checkpoint is assembled in ``.step-000300.tmp`` and renamed into place only when every file is
written, then ``latest`` is replaced atomically; a killed run leaves at most a stale temp folder,
which the next save removes. The frozen weights are not saved: a resumed stage rebuilds them from
the same inputs and seed, then loads these files, so training continues exactly.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from cdviz.errors import CdvizError
from cdviz.io import write_text_atomic

LATEST = "latest"


class CheckpointError(CdvizError, RuntimeError):
    """A checkpoint that cannot be resumed from; the message says why and what to do."""


def step_name(step: int) -> str:
    return f"step-{step:06d}"


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Every generator training touches: (tensors for safetensors, JSON-able rest)."""
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = s
    py = random.getstate()
    np_state = np.random.get_state()
    rest = {"python": [py[0], list(py[1]), py[2]],
            "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])]}
    return tensors, rest


def set_rng_state(tensors: dict[str, torch.Tensor], rest: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch"])
    cuda = sorted(k for k in tensors if k.startswith("cuda."))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[k] for k in cuda])
    v, state, gauss = rest["python"]
    random.setstate((v, tuple(state), gauss))
    name, keys, pos, has_gauss, cached = rest["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


def save_checkpoint(root: Path, step: int, *, trainable: dict[str, torch.Tensor] | None, optimizer_state: dict,
                    state: dict[str, Any], rank: int = 0, is_main: bool = True, barrier=lambda: None,
                    keep: int = 2) -> Path:
    """Write checkpoint ``step`` under ``root`` (every rank calls this; see the module docstring)."""
    final = root / step_name(step)
    tmp = root / f".{step_name(step)}.tmp"
    if is_main:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    barrier()
    tensors, rest = rng_state()
    save_file(tensors, str(tmp / f"rng.rank{rank}.safetensors"))
    (tmp / f"rng.rank{rank}.json").write_text(json.dumps(rest))
    torch.save(optimizer_state, tmp / f"optimizer.rank{rank}.pt")
    if is_main:
        save_file({k: v.detach().cpu().contiguous() for k, v in (trainable or {}).items()},
                  str(tmp / "trainable.safetensors"))
        (tmp / "state.json").write_text(json.dumps({**state, "step": step}, indent=2, sort_keys=True))
    barrier()
    if is_main:
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        write_text_atomic(root / LATEST, final.name + "\n")
        done = sorted(p for p in root.glob("step-*") if p.is_dir())
        for old in done[:-keep] if keep > 0 else []:
            shutil.rmtree(old)
    barrier()
    return final


def latest_checkpoint(root: Path) -> Path | None:
    """The newest complete checkpoint under ``root``, or None."""
    pointer = root / LATEST
    if not pointer.is_file():
        return None
    path = root / pointer.read_text().strip()
    if not (path / "state.json").is_file():
        raise CheckpointError(f"{pointer} names {path.name}, which is incomplete; delete {pointer} to start the "
                              "stage over")
    return path


def load_checkpoint(path: Path, rank: int = 0) -> tuple[dict[str, torch.Tensor], dict, dict[str, Any], tuple]:
    """(trainable tensors, optimizer state, state.json, (rng tensors, rng rest)) of one rank."""
    opt_file = path / f"optimizer.rank{rank}.pt"
    if not opt_file.is_file():
        raise CheckpointError(f"{path} has no optimizer state for rank {rank}; resume with the same number of "
                              "processes that wrote it")
    try:
        optimizer_state = torch.load(opt_file, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - anything that is not plain tensors lands here
        raise CheckpointError(f"{opt_file} is not loadable with weights_only=True ({type(e).__name__}: {e}); "
                              "this optimizer's state cannot be resumed safely") from e
    trainable = load_file(str(path / "trainable.safetensors"))
    state = json.loads((path / "state.json").read_text())
    rng = (load_file(str(path / f"rng.rank{rank}.safetensors")),
           json.loads((path / f"rng.rank{rank}.json").read_text()))
    return trainable, optimizer_state, state, rng


def truncate_log(path: Path, step: int) -> None:
    """Drop metric rows past ``step`` (written after the checkpoint a run resumes from)."""
    if not path.is_file():
        return
    keep = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line).get("step", 0) <= step]
    write_text_atomic(path, "".join(line + "\n" for line in keep))
