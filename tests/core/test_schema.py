"""The run store's schema: writers build manifests and index rows through it, and it refuses a row
that drifts from it."""

from __future__ import annotations

import json

import pytest

from cdviz import schema
from cdviz.store import open_run
from cdviz.synthetic import make_synthetic_run


def _row(**drop) -> tuple[dict, dict]:
    item = {c: f"x-{c}" for c in schema.ITEM_COLUMNS}
    per_model = {m: {k: 1 for k in schema.MODEL_COLUMNS} for m in schema.MODELS}
    for c in drop:
        item.pop(c, None)
    return item, per_model


def test_index_row_has_every_column_in_order():
    item, per_model = _row()
    row = schema.index_row(item, per_model, planted=0.5)
    assert list(row) == [*schema.index_columns(), "planted"]
    assert row["teacher_grid_rows"] == 1 and row[schema.model_column("student", "margin")] == 1


def test_index_row_names_missing_and_unknown_columns():
    item, per_model = _row(uid=True)
    with pytest.raises(KeyError, match=r"missing columns \['uid'\]"):
        schema.index_row(item, per_model)
    item, per_model = _row()
    per_model["teacher"]["grid"] = 3
    with pytest.raises(KeyError, match=r"unknown columns \['teacher_grid'\]"):
        schema.index_row(item, per_model)
    del per_model["student"]
    with pytest.raises(KeyError, match="student_span_start"):
        schema.index_row(item, per_model)
    with pytest.raises(KeyError, match="unknown per-model index column 'grid'"):
        schema.model_column("teacher", "grid")


def test_manifest_needs_both_models_layers():
    models = {m: {"n_layers": 2, "n_heads": 2, "layers": [0, 1]} for m in schema.MODELS}
    m = schema.manifest(models, {"path": "p"}, {"shard_size": 4}, cdviz_version="t", skipped=[])
    assert (m["format"], m["version"], m["skipped"]) == (schema.FORMAT, schema.VERSION, [])
    del models["student"]["layers"]
    with pytest.raises(KeyError, match=r"models\['student'\] needs n_layers, n_heads, layers"):
        schema.manifest(models, {}, {}, cdviz_version="t")


def test_fields_know_their_shape_and_which_are_optional():
    assert schema.RECORDED == ("t2i", "mass", "entropy", "i2i", "i2i_filt", "i2i_paper")
    assert [f for f, spec in schema.FIELDS.items() if spec.optional] == ["i2i_block", "t2i_pieces"]
    assert schema.FIELDS["i2i_block"].option == "store_block" and schema.FIELDS["t2i_pieces"].option == "pieces"
    assert not schema.FIELDS["i2i_paper"].per_head and schema.FIELDS["t2i"].per_head


def test_synthetic_store_follows_the_schema(tmp_path):
    run = make_synthetic_run(tmp_path / "run", n_items=6, seed=0, shard_size=3)
    store = open_run(run)
    assert list(store.index.columns) == [*schema.index_columns(), "planted_misalignment"]
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["format"] == schema.FORMAT and manifest["synthetic"]["seed"] == 0
    uid = store.index.uid[0]
    for name, spec in schema.FIELDS.items():
        if spec.optional:
            continue
        assert store.get(uid, "teacher", name).ndim == len(spec.dims), name
