"""The run store's schema: what a run holds, by name, with its meaning. The recorder and the
synthetic-store builder write through it, the store reads through it; no other module spells a
manifest key, an index column or a tensor field's shape.

    manifest(models, probes, options, **extra) -> dict      manifest.json
    index_row(item_columns, per_model) -> dict              one row of index.parquet (every column)
    model_column(model, key) -> "teacher_grid_rows" ...     a per-model index column
    row_pieces(row, model) -> [{role, grid, offset, ...}]   a row's "pieces" column, read
    model_loading(manifest, model) -> {adapter, grid}        how to load a run's model again (load_model's)
    FIELDS {name: Field}                                    tensor fields per item and model
    RECORDED                                                fields every recorded item has (in order)
    ITEM_COLUMNS / MODEL_COLUMNS {name: meaning}            index columns

Bump VERSION when a reader of the old layout would misread the new one; `cdviz.store` refuses
other versions with a message saying which cdviz wrote the run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping

FORMAT = "cdviz-run"
VERSION = 1
MODELS = ("teacher", "student")


@dataclass(frozen=True)
class Field:
    """One tensor per item and model, stored fp16 as "{uid}/{name}" (L recorded layers, H heads,
    Q text query rows, N image tokens of the item's primary image piece, M patch tokens of the
    image's other pieces, in token order, as the per-model "pieces" column lays them out)."""

    name: str
    dims: tuple[str, ...]
    meaning: str
    option: str | None = None  # the RecordOptions flag that stores it (`cdviz record --store-block`); None: always

    @property
    def optional(self) -> bool:
        return self.option is not None

    @property
    def per_head(self) -> bool:
        return "H" in self.dims


FIELDS: dict[str, Field] = {f.name: f for f in (
    Field("t2i", ("L", "H", "Q", "N"), "attention of each text query row on the image tokens (not renormalised)"),
    Field("mass", ("L", "H", "Q"), "share of each query row's attention that lands on the image"),
    Field("entropy", ("L", "H", "Q"), "entropy (nats) of each query row's attention over all keys"),
    Field("i2i", ("L", "H", "N"), "image-to-image attention each image token receives (mean over image queries)"),
    Field("i2i_filt", ("L", "H", "N"), "received vector of each head's image block after the paper's mean+std "
                                        "filter (what VAT aligns per head)"),
    Field("i2i_paper", ("L", "N"), "the paper's form: head-mean block, mean+std filter, received vector"),
    Field("i2i_block", ("L", "N", "N"), "the whole head-averaged image-to-image block", option="store_block"),
    Field("t2i_pieces", ("L", "H", "Q", "M"), "attention of each text query row on the patch tokens of the image's "
                                              "other pieces (crops, tiles; not renormalised); only for an image of "
                                              "several pieces", option="pieces"),
)}
RECORDED = tuple(name for name, f in FIELDS.items() if not f.optional)

ITEM_COLUMNS: dict[str, str] = {
    "uid": "item id, unique in the probe set",
    "source": "benchmark or generator the item came from",
    "category": "probe category (e.g. swap_att)",
    "subcategory": "finer category where the benchmark has one",
    "skill": "recognition or perception (the paper's split)",
    "kind": "choice, match or match2x2 (how outcomes are scored)",
    "split": "train or test",
    "shard": "shard number holding the item's tensors",
    "image": "the item's first image, absolute path",
    "options": "the caption options, JSON list",
    "correct_option": "index of the true option",
    "question": "the question asked",
    "boxes": "object boxes, JSON list of {phrase, x, y, w, h, image}",
    "status": "ok or skipped",
    "skip_reason": "why the item was skipped ('' when ok)",
}
MODEL_COLUMNS: dict[str, str] = {
    "span_start": "position of the first image token",
    "n_image": "image tokens of the primary piece",
    "grid_rows": "patch rows of the primary piece",
    "grid_cols": "patch columns of the primary piece",
    "seq_len": "tokens in the recorded forward",
    "query_tokens": "the text query rows' tokens, JSON list",
    "pieces": "the image's other pieces whose maps t2i_pieces holds, JSON list of {role, grid [rows, cols], offset "
              "into M, place [row, col, n_rows, n_cols] for a tile}; [] for an image of one piece or a run recorded "
              "without --pieces (a run without the column: none)",
    "correct": "right by the item's outcome rule (consistent / pairwise / group); null when skipped",
    "strict": "match protocol: the true option judged yes and every false one no; null otherwise",
    "accuracy": "mean over query orders (match2x2: NaN, the group score is in correct)",
    "margin": "score margin of the true option over the best false one",
}

#: How each model was loaded (manifest ``models[m][key]``: default, meaning), what loading it again
#: from the run must repeat (`model_loading`). A run recorded before a key existed was loaded with
#: its default; a resume must load the models the same way.
LOADING: dict[str, tuple[Any, str]] = {
    "adapter": ("auto", "auto: the architecture's own cdviz adapter; generic: the fallback adapter "
                        "(`--adapter generic`, cdviz.models.generic)"),
    "grid": (None, "generic adapter: every image's patch grid [rows, cols] (`--grid RxC`); null: inferred per image"),
}


def model_column(model: str, key: str) -> str:
    """The index column of ``model``'s ``key`` (a MODEL_COLUMNS name)."""
    if key not in MODEL_COLUMNS:
        raise KeyError(f"unknown per-model index column {key!r}; columns: {', '.join(MODEL_COLUMNS)}")
    return f"{model}_{key}"


def row_pieces(row: Mapping[str, Any], model: str) -> list[dict[str, Any]]:
    """``model``'s other image pieces listed in an index row (its "pieces" column, see MODEL_COLUMNS);
    [] when there are none or the run was recorded before the column existed."""
    raw = row.get(model_column(model, "pieces"))
    return json.loads(raw) if isinstance(raw, str) and raw else []


def model_loading(manifest: Mapping[str, Any], model: str) -> dict[str, Any]:
    """``model``'s LOADING keys as the run recorded them, as load_model takes them (adapter, grid as a
    (rows, cols) tuple or None); the defaults for a run recorded before a key existed."""
    info = (manifest.get("models") or {}).get(model) or {}
    found = {key: info.get(key, default) for key, (default, _) in LOADING.items()}
    found["adapter"] = found["adapter"] or LOADING["adapter"][0]
    if found["grid"] is not None:
        found["grid"] = tuple(int(x) for x in found["grid"])
    return found


def index_columns() -> list[str]:
    """Every column an index row has, in order."""
    return [*ITEM_COLUMNS, *(model_column(m, k) for m in MODELS for k in MODEL_COLUMNS)]


def index_row(item: dict[str, Any], per_model: dict[str, dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """One index row: ``item`` holds ITEM_COLUMNS, ``per_model[model]`` holds MODEL_COLUMNS for
    each of MODELS; ``extra`` columns (e.g. a synthetic store's planted truth) go last.

    Raises KeyError naming a missing or unknown column, so a writer cannot drift from the schema.
    """
    missing = [c for c in ITEM_COLUMNS if c not in item] + [
        model_column(m, k) for m in MODELS for k in MODEL_COLUMNS if k not in per_model.get(m, {})]
    unknown = [c for c in item if c not in ITEM_COLUMNS] + [
        f"{m}_{k}" for m, cols in per_model.items() for k in cols if k not in MODEL_COLUMNS or m not in MODELS]
    if missing or unknown:
        raise KeyError(f"index row {item.get('uid')!r}: missing columns {missing}, unknown columns {unknown} "
                       "(cdviz/schema.py lists them)")
    row = {c: item[c] for c in ITEM_COLUMNS}
    for m in MODELS:
        row.update({model_column(m, k): per_model[m][k] for k in MODEL_COLUMNS})
    row.update(extra)
    return row


def manifest(models: dict[str, dict[str, Any]], probes: dict[str, Any], options: dict[str, Any], *,
             cdviz_version: str, **extra: Any) -> dict[str, Any]:
    """manifest.json of a run.

    Args:
        models: per model {path, arch, n_layers, n_heads, n_kv_heads, layers, image_token_id, ...} and
            how it was loaded (LOADING: adapter, grid; the defaults where not given).
        probes: {path, name, n_items, items_sha256}.
        options: the recording options (layers, queries, store_block, shard_size, batch_size, dtype, ...).
        extra: further top-level keys (``skipped`` lines of the probe set, ``synthetic`` truth).
    """
    needed = ("n_layers", "n_heads", "layers")
    for name in MODELS:
        if name not in models or any(k not in models[name] for k in needed):
            raise KeyError(f"manifest: models[{name!r}] needs {', '.join(needed)}")
    models = {name: {**{k: default for k, (default, _) in LOADING.items()}, **info} for name, info in models.items()}
    return {"format": FORMAT, "version": VERSION, "cdviz_version": cdviz_version, "models": models,
            "probes": probes, "options": options, **extra}


__all__ = ["FIELDS", "FORMAT", "ITEM_COLUMNS", "LOADING", "MODELS", "MODEL_COLUMNS", "RECORDED", "VERSION", "Field",
           "index_columns", "index_row", "manifest", "model_column", "model_loading", "row_pieces"]
