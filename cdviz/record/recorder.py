"""``cdviz record``: one forward per query per model gives answer logits and attention blocks.

    probe set ─> shards of ``shard_size`` items ─> for each shard not yet done:
        for teacher, student: forward every query (the item's first query with Capture)
        write shards/{model}/K.safetensors, parts/K.outcomes.parquet, then parts/K.parquet
    once every part exists: merge into index.parquet and outcomes.parquet

Every file is written atomically and shard K counts as done only when parts/K.parquet exists
and both models' shard files verify against it (size, readable header; cdviz.store.check_shard),
so a killed run (even kill -9) rerun with the same command redoes at most the unfinished
shards, re-records damaged or deleted ones, removes their stale temporary files and ends with
the same store. Each part file also holds the identity of the command that wrote it (models, probe
set, options; cdviz.store.run_identity), so a corrupt manifest.json is rebuilt by the same command
and refused, naming the part, by any other. Items whose image is missing (left out on load with
--skip-bad) get a "skipped" index row in the shards after every loaded item's. Under torchrun /
accelerate launch each process takes the shards k with k % WORLD_SIZE == RANK; whichever finishes
last merges.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import pandas as pd
import torch

from cdviz import __version__, schema
from cdviz.errors import OptionError
from cdviz.evaluate import Query, item_outcomes, load_image, plan_queries, score_queries
from cdviz.io import write_json_atomic
from cdviz.models.base import Adapter, AdapterError, Piece
from cdviz.models.generic import GenericAdapter
from cdviz.probes.probeset import ProbeSet, load_probeset
from cdviz.record.capture import Capture, CaptureError, CapturePlan, SamplePlan
from cdviz.store import (
    MODELS, StoreError, check_shard, clean_stale_tmp, finalize, loading_flags, part_run, run_identity,
    tensor_key, version_message, write_part, write_shard,
)
from cdviz.types import ProbeError, ProbeItem

QUERY_MODES = ("answer", "prompt")
# likelihood scores each option by its answer tokens: no single forward to capture, so not recorded.
RECORD_PROTOCOLS = ("letters", "match")
# Which match queries are captured: the true option's (the item's map, what every analysis reads),
# or every option's as well (RunStore.get(..., option=k)), to compare where a model looks when
# judging a true caption against its hard negative.
MATCH_RECORD = ("true", "all")


@dataclass(frozen=True)
class RecordOptions:
    layers: tuple[int, ...] | None = None  # None: every decoder layer
    queries: str = "answer"                # answer: the answer position; prompt: every text token
    store_block: bool = False              # also store the head-mean image->image block
    pieces: bool = False                   # also store the text rows over the image's other pieces (t2i_pieces)
    protocol: str = "letters"              # how choice items are asked and scored (cdviz.evaluate.PROTOCOLS)
    match_record: str = "true"             # match protocol: capture the true option's query, or "all" options
    shard_size: int = 32
    batch_size: int = 8
    dtype: str = "float32"


def record_run(
    teacher: Adapter,
    student: Adapter,
    probes: ProbeSet,
    out: str | Path,
    options: RecordOptions = RecordOptions(),
    *,
    skip_bad: bool = False,
    rank: int | None = None,
    world_size: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Record ``probes`` for both models into the store at ``out`` (resuming if it exists)."""
    check_options(options)
    check_probes(probes)
    rank = int(os.environ.get("RANK", 0)) if rank is None else rank
    world_size = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else world_size
    out = Path(out)
    adapters = {"teacher": teacher, "student": student}
    planned, preskipped = planned_items(probes, skip_bad)
    manifest = build_manifest(adapters, probes, options, n_items=len(planned))
    manifest = _claim_store(out, manifest)
    shards = [planned[i:i + options.shard_size] for i in range(0, len(planned), options.shard_size)]
    for k, items in enumerate(shards):
        if k % world_size != rank:
            continue
        if check_shard(out, k) is None:
            if progress:
                progress(len(items))
            continue
        clean_stale_tmp(out, k)
        _record_shard(k, items, adapters, probes, out, manifest, options, skip_bad, progress, preskipped)
    if world_size == 1:
        clean_stale_tmp(out)
    finalize(out, len(shards))
    return out


def check_options(options: RecordOptions) -> None:
    """Refuse options the recorder cannot honour, before any model loads or file is written."""
    if options.queries not in QUERY_MODES:
        raise OptionError(f"--queries {options.queries!r}: use one of {', '.join(QUERY_MODES)}")
    if options.protocol not in RECORD_PROTOCOLS:
        raise OptionError(f"--protocol {options.protocol!r}: record scores with one of {', '.join(RECORD_PROTOCOLS)}")
    if options.match_record not in MATCH_RECORD:
        raise OptionError(f"--match-record {options.match_record!r}: use one of {', '.join(MATCH_RECORD)}")
    if options.match_record == "all" and options.protocol != "match":
        raise OptionError("--match-record all records every option's match query; it needs --protocol match")
    for name in ("shard_size", "batch_size"):
        value = getattr(options, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise OptionError(f"--{name.replace('_', '-')} {value!r}: give a whole number of items, 1 or more")
    if options.layers is not None:
        layers = list(options.layers)
        if not layers:
            raise OptionError("--layers selects no layer; give layers like '0,2,4' or a range low-high like '2-5'")
        if any(isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in layers):
            raise OptionError(f"--layers {layers}: layer numbers are whole numbers from 0")
    from cdviz.models.loading import parse_dtype

    parse_dtype(options.dtype)


def check_probes(probes: ProbeSet) -> None:
    """An empty (or fully skipped) probe set is an error before anything is written."""
    if len(probes):
        return
    root = probes.root
    if probes.skipped:
        first = probes.skipped[0]
        raise ProbeError(f"{root}: all {len(probes.skipped)} probe item(s) were skipped, nothing to record (first: "
                         f"{first.reason}); fix the items or their images and run again")
    raise ProbeError(f"{root}: the probe set has no items; make one with `cdviz probes make shapes --out {root}` "
                     "or `cdviz probes import SOURCE PATH --out DIR`")


def planned_items(probes: ProbeSet, skip_bad: bool) -> tuple[list[ProbeItem], dict[str, str]]:
    """Items in shard order: every loaded one, then (with skip_bad) the ones whose image was missing
    on load, which are recorded as skips; and {uid: reason} of the latter."""
    seen = {i.uid for i in probes.items}
    extra = []
    for s in probes.skipped if skip_bad else ():
        if s.item is not None and s.item.uid not in seen:
            seen.add(s.item.uid)
            extra.append(s)
    return [*probes.items, *(s.item for s in extra)], {s.item.uid: s.reason for s in extra}


def build_manifest(adapters: dict[str, Adapter], probes: ProbeSet, options: RecordOptions,
                   n_items: int | None = None) -> dict:
    items_file = probes.root / "items.jsonl"
    models = {}
    for name, a in adapters.items():
        layers = list(options.layers) if options.layers is not None else list(range(a.n_layers))
        bad = [i for i in layers if not 0 <= i < a.n_layers]
        if bad:
            raise AdapterError(f"{name} has {a.n_layers} layers; cannot record layer(s) {bad}")
        models[name] = {
            "path": str(Path(getattr(a, "source", "")).resolve()) if getattr(a, "source", "") else "", "arch": a.model.__class__.__name__,
            "n_layers": a.n_layers, "n_heads": a.n_heads, "n_kv_heads": a.n_kv_heads,
            "layers": layers, "image_token_id": a.image_token_id, "dtype": str(a.model.dtype).removeprefix("torch."),
            **model_origin(a), **model_loading(a),
        }
    return schema.manifest(
        models,
        {"path": str(probes.root.resolve()), "name": probes.meta.get("name", ""),
         "n_items": len(probes) if n_items is None else n_items,
         "items_sha256": hashlib.sha256(items_file.read_bytes()).hexdigest() if items_file.is_file() else ""},
        {**asdict(options), "layers": list(options.layers) if options.layers is not None else None},
        cdviz_version=__version__,
        # Lines the probe set left out (on import or load, --skip-bad) have no item to index; they
        # are listed here as eval's summary lists them.
        skipped=[s.to_dict() for s in probes.skipped])


def model_origin(adapter: Adapter) -> dict:
    """What was loaded (cdviz.models.hub.ModelRef): hub id, revision asked for, resolved commit, the
    weight index (or single weights file) and its sha256; None / "" for what a local directory lacks."""
    origin = getattr(adapter, "origin", None)
    fields = ("id", "revision", "commit", "weights", "weights_sha256", "shards")
    return {k: getattr(origin, k, None) for k in fields}


def model_loading(adapter: Adapter) -> dict:
    """How ``adapter`` was loaded (cdviz.schema.LOADING), so whatever loads the model again from the run
    loads it the same way: adapter "generic" and its --grid [rows, cols] (or None) for the fallback
    adapter, else "auto"."""
    if isinstance(adapter, GenericAdapter):
        return {"adapter": "generic", "grid": list(adapter.grid) if adapter.grid is not None else None}
    return {"adapter": "auto", "grid": None}


def _claim_store(out: Path, manifest: dict) -> dict:
    """Write the manifest of a new run, or check that ``out`` holds this very run (a resume); returns
    the manifest the run goes on under (on a resume, the one on disk).

    A corrupt manifest.json is written again when every readable part file was recorded under this
    command (`run_identity` in its metadata); otherwise the shards cannot be matched and it is refused.
    A recording option, or a key of how the models were loaded (cdviz.schema.LOADING: --adapter,
    --grid), added after the run was started counts as its default there."""
    path = out / "manifest.json"
    if path.is_file():
        started = any((out / "parts").glob("*.parquet"))
        old, why = _read_manifest(path)
        if old is None:
            _check_parts_are_this_run(out, path, why, manifest)
            write_json_atomic(path, manifest)
            return manifest
        if old.get("version") != manifest["version"]:
            raise StoreError(version_message(out, old.get("version")))
        defaults = {k: v for k, v in asdict(RecordOptions()).items() if k not in (old.get("options") or {})}
        loading_defaults = {k: default for k, (default, _) in schema.LOADING.items()}
        then = {**old, "options": {**defaults, **(old.get("options") or {})},
                "models": {m: {**loading_defaults, **info} if isinstance(info, dict) else info
                           for m, info in (old.get("models") or {}).items()}}
        if started:
            _check_same_loading(out, old, manifest)
        differ = [k for k in ("models", "probes", "options") if then.get(k) != manifest[k]]
        if started and differ:
            raise StoreError(
                f"{out} holds a run with other {', '.join(differ)}; resume only with the same command, "
                f"or choose a new --out"
            )
        if started:
            return old  # its parts carry the identity of the manifest on disk
    write_json_atomic(path, manifest)
    return manifest


def _check_same_loading(out: Path, old: dict, manifest: dict) -> None:
    """Refuse a resume that loads a model otherwise than the run did (--adapter / --grid), naming both."""
    for m in MODELS:
        then, now = schema.model_loading(old, m), schema.model_loading(manifest, m)
        if then != now:
            then_flags, now_flags = (loading_flags(x) or "--adapter auto" for x in (then, now))
            raise StoreError(f"{out} was recorded with {then_flags} ({m}), this command gives {now_flags}; resume "
                             f"with {then_flags} (the same command), or choose a new --out")


def _read_manifest(path: Path) -> tuple[dict | None, str]:
    """(the manifest, "") or (None, why it cannot be read)."""
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        return None, f"{e.msg} at line {e.lineno}"
    except UnicodeDecodeError as e:
        return None, f"not UTF-8 text: {e.reason}"
    return (old, "") if isinstance(old, dict) else (None, f"a JSON {type(old).__name__}, not an object")


def _check_parts_are_this_run(out: Path, path: Path, why: str, manifest: dict) -> None:
    """Raise StoreError unless every readable index part in ``out`` was recorded under ``manifest``'s
    command; unreadable parts are damaged shards, which the run records again anyway."""
    want = run_identity(manifest)
    for part in sorted((out / "parts").glob("*.parquet")):
        if ".outcomes." in part.name:
            continue
        try:
            got = part_run(part)
        except StoreError:
            continue
        if got is None:
            raise StoreError(f"{path} is corrupt ({why}) and {part} does not say which command recorded it (an "
                             "older cdviz), so the shards cannot be matched to this command; restore manifest.json "
                             "or record into a new --out")
        if got != want:
            raise StoreError(f"{path} is corrupt ({why}) and {part} was recorded by another command (other models, "
                             "probe set or options); rerun the command that recorded it, or record into a new --out")


def _record_shard(k, items, adapters, probes, out, manifest, options, skip_bad, progress, preskipped=None) -> None:
    skipped: dict[str, str] = {}
    images: dict[str, list] = {}
    for item in items:
        if preskipped and item.uid in preskipped:
            skipped[item.uid] = preskipped[item.uid]
            continue
        try:
            images[item.uid] = [load_image(probes, item, i) for i in range(len(item.images))]
        except ProbeError as e:
            if not skip_bad:
                raise
            skipped[item.uid] = str(e)
    live = [i for i in items if i.uid not in skipped]
    per_model: dict[str, tuple[dict, dict, list]] = {}
    for name, adapter in adapters.items():
        tensors, facts, rows = _run_model(adapter, live, images, manifest["models"][name]["layers"], options,
                                          skip_bad, skipped, name)
        per_model[name] = (tensors, facts, rows)
    files = {}
    for name in MODELS:
        files[name] = write_shard(out, name, k, {key: t for key, t in per_model[name][0].items()
                                                 if key.rsplit("/", 1)[0] not in skipped})
    outcome_frames = []
    for name in MODELS:
        rows = [r for r in per_model[name][2] if r["uid"] not in skipped]
        frame = pd.DataFrame(rows)
        if len(frame):
            frame.insert(0, "model", name)
            meta = {i.uid: i for i in items}
            frame.insert(2, "category", [meta[u].category for u in frame.uid])
            frame.insert(3, "skill", [meta[u].skill for u in frame.uid])
        outcome_frames.append(frame)
    outcomes = pd.concat(outcome_frames, ignore_index=True)
    write_part(out, k, _index_rows(k, items, probes, per_model, outcomes, skipped), outcomes, shards=files,
               run=run_identity(manifest))
    if progress:
        progress(len(items))


def _run_model(adapter, items, images, layers, options, skip_bad, skipped, name="model"):
    """All queries of ``items`` for one model: tensors to store, per-item facts, outcome rows."""
    tensors: dict[str, torch.Tensor] = {}
    facts: dict[str, dict] = {}
    rows: list[dict] = []
    recorded: list[tuple[ProbeItem, Query]] = []
    plain: list[tuple[ProbeItem, Query]] = []
    every_option = options.match_record == "all"
    primary: dict[str, Query] = {}  # the item's recorded query; any other recorded one is an option's
    for item in items:
        qs = plan_queries(item, options.protocol)
        primary[item.uid] = qs[0]
        recorded.append((item, qs[0]))
        extra = [(item, q) for q in qs[1:]]
        (recorded if every_option and qs[0].kind == "match" else plain).extend(extra)
    def run(layer_list):
        return lambda chunk: _forward(adapter, chunk, images, layer_list, options, tensors, facts, rows, name, primary)

    for chunk in _chunks(recorded, options.batch_size):
        _guarded(run(layers), chunk, skip_bad, skipped)
    plain = [(i, q) for i, q in plain if i.uid not in skipped]
    for chunk in _chunks(plain, options.batch_size):
        _guarded(run(None), chunk, skip_bad, skipped)
    return tensors, facts, rows


def _guarded(fn, chunk, skip_bad: bool, skipped: dict[str, str]) -> None:
    """Run a batch; with skip_bad, retry its samples one by one and record the ones that fail."""
    try:
        fn(chunk)
    except (AdapterError, CaptureError) as e:
        if not skip_bad:
            raise
        if len(chunk) == 1:
            skipped[chunk[0][0].uid] = str(e)
            return
        for pair in chunk:
            if pair[0].uid in skipped:
                continue
            try:
                fn([pair])
            except (AdapterError, CaptureError) as e1:
                skipped[pair[0].uid] = str(e1)


def model_label(name: str, adapter: Adapter) -> str:
    """"student (checkpoints/student-kd)": which model, for messages."""
    source = getattr(adapter, "source", "")
    return f"{name} ({source})" if source else name


def _forward(adapter: Adapter, chunk, images, layers, options, tensors, facts, rows, name="model",
             primary: dict[str, Query] | None = None) -> None:
    uids = [item.uid for item, _ in chunk]
    batch = adapter.build_batch([images[i.uid][q.image] for i, q in chunk], [q.text for _, q in chunk], uids)
    max_len = getattr(adapter.text_config, "max_position_embeddings", None)
    seq_len = batch.inputs["input_ids"].shape[1]
    if max_len and seq_len > max_len:
        raise AdapterError(f"{uids}: {seq_len} tokens exceed the model's {max_len} positions; shorten the items")
    batch = batch.to(adapter.model.device, adapter.model.dtype)
    ids = batch.inputs["input_ids"].cpu()
    with torch.no_grad():
        if layers is None:
            logits = adapter.model(**batch.inputs, use_cache=False).logits
        else:
            plans, pieces = [], []
            for b in range(len(chunk)):
                span = batch.image_spans[b][0]
                keys, listed = other_pieces(batch.pieces[b][0]) if options.pieces else (None, [])
                plans.append(SamplePlan(span, _query_rows(adapter, ids[b], int(batch.answer_pos[b]), options.queries),
                                        piece_keys=keys))
                pieces.append(listed)
            with Capture(adapter, CapturePlan(list(layers), plans, store_block=options.store_block)) as cap:
                logits = adapter.model(**batch.inputs, use_cache=False).logits
            for b, (item, q) in enumerate(chunk):
                _check_finite_attention(cap, b, item.uid, model_label(name, adapter))
                if primary is not None and q != primary[item.uid]:  # another option's query (--match-record all)
                    _collect(cap, b, item.uid, tensors, option=q.caption)
                    continue
                _collect(cap, b, item.uid, tensors)
                span, grid = batch.image_spans[b][0], batch.grids[b][0]
                facts[item.uid] = {
                    "span_start": span[0], "n_image": span[1] - span[0], "grid_rows": grid[0], "grid_cols": grid[1],
                    "seq_len": int(batch.answer_pos[b]) + 1,
                    "query_tokens": json.dumps(adapter.tokenizer.convert_ids_to_tokens(ids[b, plans[b].query_rows].tolist())),
                    "pieces": json.dumps(pieces[b]),
                }
    pos = batch.answer_pos
    answer = logits[torch.arange(len(pos), device=pos.device), pos].float().cpu()
    bad = [u for u, ok in zip(uids, torch.isfinite(answer).all(-1).tolist()) if not ok]
    if bad:
        raise CaptureError(f"{model_label(name, adapter)}: item(s) {', '.join(map(repr, bad))}: the answer logits "
                           "have NaN or inf values (broken weights or inputs?); check the model with `cdviz eval`, "
                           "or pass --skip-bad to record such items as skips")
    rows.extend(score_queries(adapter, [q for _, q in chunk], answer))


def other_pieces(image: list[Piece]) -> tuple[list[int], list[dict]]:
    """The patch tokens of an image's non-primary pieces, and how they lie in ``t2i_pieces``.

    Returns:
        keys:   token positions of every non-primary piece's patches, pieces in token order, each
                row-major; row-end tokens (LLaVA-NeXT's newline) left out, as from the primary grid
        listed: per piece {role, grid [rows, cols], offset: its first column in M, place (tiles only)}
    """
    keys: list[int] = []
    listed: list[dict] = []
    for p in image:
        if p.primary:
            continue
        rows, cols = p.grid
        width = cols + p.row_end
        entry = {"role": p.role, "grid": [rows, cols], "offset": len(keys)}
        if p.place is not None:
            entry["place"] = list(p.place)
        listed.append(entry)
        keys += [p.span[0] + r * width + c for r in range(rows) for c in range(cols)]
    return keys, listed


def _query_rows(adapter: Adapter, ids: torch.Tensor, answer_pos: int, mode: str) -> list[int]:
    if mode == "answer":
        return [answer_pos]
    special = set(adapter.tokenizer.all_special_ids)
    return [i for i in range(answer_pos + 1) if int(ids[i]) not in special and int(ids[i]) != adapter.image_token_id]


def _check_finite_attention(cap: Capture, b: int, uid: str, label: str) -> None:
    for layer in cap.plan.layers:
        r = cap.results[layer]
        for f in ("t2i", "mass", "i2i"):
            if not torch.isfinite(getattr(r, f)[b]).all():
                raise CaptureError(f"{label}: item {uid!r}: layer {layer} attention ({f}) has NaN or inf values; "
                                   "check the model with `cdviz eval`, or pass --skip-bad to record the item as a skip")


def _collect(cap: Capture, b: int, uid: str, tensors: dict, option: int | None = None) -> None:
    """Stack the capture's per-layer tensors of sample ``b`` into [L, ...] tensors (fp16 once written)."""
    layers = cap.plan.layers
    wanted = {"store_block": cap.plan.store_block, "pieces": bool(cap.plan.samples[b].piece_keys)}
    fields = [f for f, spec in schema.FIELDS.items() if spec.option is None or wanted[spec.option]]
    for f in fields:
        stacked = torch.stack([getattr(cap.results[layer], f)[b] for layer in layers])
        tensors[tensor_key(uid, f, option)] = stacked


def _index_rows(k, items, probes, per_model_in, outcomes, skipped) -> pd.DataFrame:
    rows = []
    summaries = {}
    for name in MODELS:
        sub = outcomes[outcomes.model == name] if len(outcomes) else outcomes
        summaries[name] = item_outcomes(sub.drop(columns="model")).set_index("uid") if len(sub) else None
    right = {"choice": "consistent", "match": "pairwise", "match2x2": "group"}
    for item in items:
        columns = {
            "uid": item.uid, "source": item.source, "category": item.category, "subcategory": item.subcategory,
            "skill": item.skill, "kind": item.kind, "split": item.split, "shard": k,
            "image": _image_cell(probes, item), "options": json.dumps(list(item.options)),
            "correct_option": item.correct, "question": item.question,
            "boxes": json.dumps([b.to_dict() for b in item.boxes]),
            "status": "skipped" if item.uid in skipped else "ok", "skip_reason": skipped.get(item.uid, ""),
        }
        per_model = {}
        for name in MODELS:
            facts = per_model_in[name][1].get(item.uid, {})
            cols = {key: int(facts.get(key, -1)) for key in ("span_start", "n_image", "grid_rows", "grid_cols", "seq_len")}
            cols["query_tokens"] = facts.get("query_tokens", "[]")
            cols["pieces"] = facts.get("pieces", "[]")
            s = summaries[name]
            ok = s is not None and item.uid in s.index and item.uid not in skipped
            r = s.loc[item.uid] if ok else None
            cols["correct"] = bool(r[right[r.kind]]) if ok else None
            cols["strict"] = bool(r.strict) if ok and r.kind == "match" else None
            cols["accuracy"] = float(r.accuracy) if ok else float("nan")
            cols["margin"] = float(r.margin) if ok else float("nan")
            per_model[name] = cols
        rows.append(schema.index_row(columns, per_model))
    return pd.DataFrame(rows)


def _image_cell(probes: ProbeSet, item: ProbeItem) -> str:
    """The item's first image as an absolute path; as written when it cannot be one (an item skipped
    on load because its path leaves the probe set)."""
    try:
        return str(probes.image_path(item, 0).resolve())
    except ProbeError:
        return str(item.images[0])


def _chunks(seq: list, size: int):
    for i in range(0, len(seq), size):
        yield seq[i:i + size]


def record(teacher_dir, student_dir, probes_dir, out, options: RecordOptions = RecordOptions(), *, device="cpu",
           skip_bad=False, trust_remote_code=False, progress=None, adapter=None, grid=None) -> Path:
    """Load the pair and the probe set, then ``record_run`` (``adapter`` / ``grid``: as load_model)."""
    from cdviz.models import load_pair

    check_options(options)
    probes = load_probeset(probes_dir, skip_bad=skip_bad)
    check_probes(probes)
    teacher, student, _ = load_pair(teacher_dir, student_dir, dtype=options.dtype, device=device,
                                    trust_remote_code=trust_remote_code, adapter=adapter, grid=grid)
    return record_run(teacher, student, probes, out, options, skip_bad=skip_bad, progress=progress)
