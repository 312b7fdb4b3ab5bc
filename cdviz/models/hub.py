"""Where a model comes from: a local directory or a Hugging Face hub id, resolved to a directory.

    resolve_model("checkpoints/teacher")          -> ModelRef(path=checkpoints/teacher, ...)
    resolve_model("Qwen/Qwen2.5-VL-3B-Instruct")  -> ModelRef(path=HF_HUB_CACHE/models--Qwen--.../snapshots/<commit>)
    resolve_model("org/name@v1.0")                 a branch, tag or commit hash after the "@"
    ModelRef.to_dict()                              what the store manifest / recipe.json record

A hub id goes through ``huggingface_hub.snapshot_download`` with only the files a model needs
(config, processor / tokenizer files, chat template, the safetensors weights and their index;
``.bin`` pickles only with ``allow_bin=True`` or CDVIZ_ALLOW_BIN=1). The environment is read at
call time: HF_HOME / HF_HUB_CACHE pick the cache, HF_HUB_OFFLINE=1 (or TRANSFORMERS_OFFLINE=1)
uses the cache only, HF_TOKEN (or ``hf auth login``) authenticates. Every failure is one line
naming the input and the fix (the `hf download` command when a model is not cached).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from cdviz.models.base import AdapterError

SAFE_INDEX = "model.safetensors.index.json"
SAFE_SINGLE = "model.safetensors"
BIN_INDEX = "pytorch_model.bin.index.json"
BIN_SINGLE = "pytorch_model.bin"

#: Everything but the weights: config, generation config, processor / tokenizer / chat template files.
META_PATTERNS = ("*.json", "*.jinja", "*.txt", "*.model", "*.tiktoken")
#: Top-level files only: repos keep other formats (original/, onnx/, gguf/) in subfolders.
IGNORE_PATTERNS = ("*/*",)

_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_CACHE_DIR = re.compile(r"^models--(.+)$")


@dataclass(frozen=True)
class ModelRef:
    """A model resolved to a local directory, and what was found there."""

    spec: str                    # what the user gave
    path: str                    # local directory the model loads from
    id: str | None = None        # hub id (org/name), None for a directory outside the HF cache
    revision: str | None = None  # the revision asked for (branch, tag or commit); None: main
    commit: str | None = None    # the commit the revision resolved to
    weights: str = ""            # the weight index (sharded) or the single weights file
    weights_sha256: str = ""     # sha256 of that file
    shards: int = 1              # weight files the index lists

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def is_offline() -> bool:
    """HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE, read now (huggingface_hub reads them once, on import)."""
    from huggingface_hub import constants

    return env_true("HF_HUB_OFFLINE") or env_true("TRANSFORMERS_OFFLINE") or bool(constants.HF_HUB_OFFLINE)


def hub_cache_dir() -> Path:
    """The hub cache huggingface_hub would use, from the environment as it is now."""
    env = os.environ
    explicit = env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(os.path.expandvars(explicit)).expanduser()
    home = env.get("HF_HOME") or os.path.join(env.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    return Path(os.path.expandvars(home)).expanduser() / "hub"


def parse_hub_id(spec: str) -> tuple[str, str | None] | None:
    """'org/name' or 'org/name@revision' -> (id, revision); None when ``spec`` is not of that form."""
    repo, at, revision = spec.partition("@")
    if not _ID.match(repo) or ".." in repo or repo.endswith((".", "-")) or (at and not revision.strip()):
        return None
    return repo, revision or None


def download_command(repo_id: str, revision: str | None) -> str:
    return f"hf download {repo_id}" + (f" --revision {revision}" if revision else "")


def resolve_model(
    spec: str | Path | ModelRef,
    *,
    allow_bin: bool | None = None,
    trust_remote_code: bool = False,
    progress: Callable[[int], None] | None = None,
) -> ModelRef:
    """A local model directory or a hub id ``org/name[@revision]`` -> ModelRef (raises AdapterError)."""
    if isinstance(spec, ModelRef):
        return spec
    allow_bin = env_true("CDVIZ_ALLOW_BIN") if allow_bin is None else allow_bin
    text = str(spec)
    local = Path(text).expanduser()
    if local.exists():
        if not local.is_dir():
            raise AdapterError(f"{text}: a file, not a model directory; pass the directory holding config.json, "
                               "or a hub id like org/name")
        repo_id, commit = _cache_origin(local)
        return _with_weights(ModelRef(spec=text, path=str(local), id=repo_id, commit=commit), allow_bin)
    parsed = parse_hub_id(text) if isinstance(spec, str) else None
    if parsed is None:
        raise AdapterError(f"{text}: not a directory, and not a hub id of the form org/name[@revision]; pass a "
                           "local HF model directory or a hub id like Qwen/Qwen2.5-VL-3B-Instruct")
    repo_id, revision = parsed
    return _from_hub(text, repo_id, revision, allow_bin=allow_bin, trust_remote_code=trust_remote_code,
                     progress=progress)


def _cache_origin(path: Path) -> tuple[str | None, str | None]:
    """A directory inside the HF cache (``models--org--name/snapshots/<commit>``) -> (id, commit)."""
    parts = path.resolve().parts
    if len(parts) >= 3 and parts[-2] == "snapshots":
        m = _CACHE_DIR.match(parts[-3])
        if m:
            return m.group(1).replace("--", "/"), parts[-1]
    return None, None


def _from_hub(spec: str, repo_id: str, revision: str | None, *, allow_bin: bool, trust_remote_code: bool,
              progress: Callable[[int], None] | None) -> ModelRef:
    cache = hub_cache_dir()
    offline = is_offline()
    meta = list(META_PATTERNS) + (["*.py"] if trust_remote_code else [])
    # First the small files (config, processor, index), then the weights the index lists.
    folder = Path(_snapshot(spec, repo_id, revision, meta, cache, offline, revision))
    commit = folder.name
    wanted = _weight_files(folder, allow_bin)
    if wanted:
        _snapshot(spec, repo_id, commit, wanted, cache, offline, revision)
    ref = ModelRef(spec=spec, path=str(folder), id=repo_id, revision=revision, commit=commit)
    try:
        return _with_weights(ref, allow_bin, progress)
    except AdapterError:
        if not offline and not (folder / SAFE_INDEX).is_file() and not (folder / SAFE_SINGLE).is_file():
            _raise_if_bin_only(spec, repo_id, commit, folder)
        raise


def _snapshot(spec: str, repo_id: str, revision: str | None, patterns: list[str], cache: Path, offline: bool,
              shown: str | None) -> str:
    """snapshot_download of ``patterns``; each failure becomes one AdapterError line (``shown``: the
    revision the user gave, for the fetch command)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError,
    )

    fetch = download_command(repo_id, shown)
    not_local = f" (no local directory {spec} either)" if "@" not in spec else ""
    try:
        return snapshot_download(repo_id, revision=revision, cache_dir=cache, allow_patterns=patterns,
                                 ignore_patterns=list(IGNORE_PATTERNS), local_files_only=offline)
    except GatedRepoError as e:
        raise AdapterError(f"{spec}: a gated model; accept its terms on https://huggingface.co/{repo_id} and set "
                           f"HF_TOKEN (or run `hf auth login`) with an account that has access") from e
    except RevisionNotFoundError as e:
        raise AdapterError(f"{spec}: {repo_id} has no revision {revision or 'main'!r}; give a branch, tag or commit "
                           f"hash that exists (see https://huggingface.co/{repo_id}/commits/main)") from e
    except RepositoryNotFoundError as e:
        raise AdapterError(f"{spec}: no model {repo_id} on the Hub, or it is private and no token with access was "
                           f"sent; check the id, or set HF_TOKEN (or run `hf auth login`){not_local}") from e
    except LocalEntryNotFoundError as e:  # also IncompleteSnapshotError: a cached snapshot missing files
        what = "not (completely) in the Hugging Face cache"
        if offline:
            raise AdapterError(
                f"{spec}: {what} {cache} and HF_HUB_OFFLINE is set, so nothing is downloaded; fetch it with "
                f"`{fetch}` where there is network (same HF_HOME / HF_HUB_CACHE), or pass a local model "
                f"directory{not_local}") from e
        raise AdapterError(
            f"{spec}: the Hub cannot be reached and it is {what} {cache}; check the network, or fetch it with "
            f"`{fetch}` elsewhere into that cache{not_local}") from e
    except HfHubHTTPError as e:
        status = getattr(getattr(e, "response", None), "status_code", "?")
        hint = "set HF_TOKEN (or run `hf auth login`)" if status in (401, 403) else "try again later"
        raise AdapterError(f"{spec}: the Hub answered HTTP {status} for {repo_id}; {hint}") from e


def _weight_files(folder: Path, allow_bin: bool) -> list[str]:
    """The weight files to fetch once the index (if any) is there."""
    if (folder / SAFE_INDEX).is_file():
        return sorted(set(_read_index(folder / SAFE_INDEX).values()))
    names = [SAFE_SINGLE]
    if allow_bin:
        names += [BIN_SINGLE, *(sorted(set(_read_index(folder / BIN_INDEX).values()))
                                if (folder / BIN_INDEX).is_file() else [])]
    return names


def _read_index(path: Path) -> dict[str, str]:
    try:
        weight_map = json.loads(path.read_text()).get("weight_map")
    except (json.JSONDecodeError, OSError) as e:
        raise AdapterError(f"{path}: unreadable weight index ({e}); download it again") from e
    if not isinstance(weight_map, dict) or not weight_map:
        raise AdapterError(f"{path}: no 'weight_map' in the weight index; download it again")
    return weight_map


def _raise_if_bin_only(spec: str, repo_id: str, commit: str, folder: Path) -> None:
    """Online, a repo with no safetensors: say so if it has .bin pickles."""
    try:
        from huggingface_hub import HfApi

        files = HfApi().list_repo_files(repo_id, revision=commit)
    except Exception:  # noqa: BLE001 - the caller's error stands
        return
    if any(f.endswith(".bin") and "/" not in f for f in files):
        raise AdapterError(_bin_message(spec, folder))


def _bin_message(spec: str, folder: Path) -> str:
    arch = "AutoModelForImageTextToText"
    try:
        arch = (json.loads((folder / "config.json").read_text()).get("architectures") or [arch])[0]
    except (OSError, json.JSONDecodeError):
        pass
    return (f"{spec}: only PyTorch .bin (pickle) weights; cdviz loads safetensors. Convert once with `python -c "
            f"\"import transformers as t; t.{arch}.from_pretrained('{spec}').save_pretrained('OUT')\"` and pass OUT, "
            f"or set CDVIZ_ALLOW_BIN=1 to load the pickles (they can run code; only for checkpoints you trust)")


def _with_weights(ref: ModelRef, allow_bin: bool, progress: Callable[[int], None] | None = None) -> ModelRef:
    """Find the weights in ``ref.path`` (index or single file), check the shards exist, hash the index."""
    folder = Path(ref.path)
    if not (folder / "config.json").is_file():
        where = f" (commit {ref.commit} of {ref.id})" if ref.id else ""
        raise AdapterError(f"{ref.spec}: no config.json in {folder}{where}; this is not an HF model directory "
                           "(save one with save_pretrained)")
    index, single = folder / SAFE_INDEX, folder / SAFE_SINGLE
    pickles = (folder / BIN_INDEX).is_file() or (folder / BIN_SINGLE).is_file()
    if not index.is_file() and not single.is_file() and pickles:
        if not allow_bin:
            raise AdapterError(_bin_message(ref.spec, folder))
        index, single = folder / BIN_INDEX, folder / BIN_SINGLE
    if index.is_file():
        shards = sorted(set(_read_index(index).values()))
        missing = [s for s in shards if not (folder / s).is_file()]
        if missing:
            fetch = f"; fetch it with `{download_command(ref.id, ref.revision)}`" if ref.id else ""
            raise AdapterError(f"{ref.spec}: the weight index lists {len(shards)} shard(s) but {len(missing)} are "
                               f"missing from {folder} (first: {missing[0]}){fetch}")
        return _replace(ref, weights=index.name, weights_sha256=sha256_file(index), shards=len(shards))
    if single.is_file():
        return _replace(ref, weights=single.name, weights_sha256=sha256_file(single, progress), shards=1)
    fetch = f"; fetch them with `{download_command(ref.id, ref.revision)}`" if ref.id else ""
    raise AdapterError(f"{ref.spec}: no weights in {folder} (neither {SAFE_SINGLE} nor {SAFE_INDEX} with its "
                       f"shards){fetch}")


def _replace(ref: ModelRef, **changes: Any) -> ModelRef:
    return ModelRef(**{**asdict(ref), **changes})


def sha256_file(path: Path, progress: Callable[[int], None] | None = None, chunk: int = 1 << 24) -> str:
    """sha256 of a file, read in 16 MiB chunks; a bar for files over 1 GiB (a single-file checkpoint)."""
    digest = hashlib.sha256()
    size = path.stat().st_size
    bar = None
    if progress is None and size > 1 << 30:
        from huggingface_hub.utils import tqdm

        bar = tqdm(total=size, unit="B", unit_scale=True, desc=f"sha256 {path.name}")
        progress = bar.update
    try:
        with open(path, "rb") as f:
            while block := f.read(chunk):
                digest.update(block)
                if progress:
                    progress(len(block))
    finally:
        if bar is not None:
            bar.close()
    return digest.hexdigest()
