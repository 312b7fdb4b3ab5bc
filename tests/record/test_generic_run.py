"""A run recorded through the generic fallback adapter (`cdviz record --adapter generic --grid RxC`)
says so in its manifest (cdviz.schema.LOADING), whatever loads its models again from the run loads
them so, a resume that loads them otherwise is refused naming both, and a run recorded before the
keys existed counts as --adapter auto."""

from __future__ import annotations

import json
import shutil
import warnings

import pytest
from typer.testing import CliRunner

import cdviz.models
from cdviz import schema
from cdviz.models import AdapterError, loading
from cdviz.models.generic import GenericAdapter
from cdviz.store import open_run, record_command, run_identity

LLAVA = "LlavaForConditionalGeneration"
GRID = "2x8"  # tiny LLaVA: 32 px images, 8 px patches -> 16 image tokens; the generic adapter alone makes them 2x8


def _cli(*args: str) -> tuple[int, str]:
    from cdviz.cli import app

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the generic adapter's one "what was assumed" warning
        result = CliRunner().invoke(app, [str(a) for a in args])
    said = result.output + (f" {result.exception!r}" if result.exception and result.exit_code != 1 else "")
    return result.exit_code, " ".join(said.split())


def _record(root, out, *extra) -> tuple[int, str]:
    return _cli("record", "--teacher", root / "teacher", "--student", root / "student", "--probes", root / "probes",
                "--out", out, "--shard-size", "3", "--batch-size", "3", *extra)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    from cdviz.models.tiny import build_tiny
    from cdviz.probes.shapes import make_shapes

    root = tmp_path_factory.mktemp("generic-run")
    build_tiny("llava", root / "teacher", n_layers=2, image_size=32, seed=0)
    build_tiny("llava", root / "student", n_layers=1, image_size=32, seed=1)
    make_shapes(root / "probes", n=6, seed=0, image_size=32)
    return root


@pytest.fixture
def no_llava_adapter(monkeypatch):
    """LLaVA as an architecture cdviz has no adapter for: only --adapter generic loads it."""
    monkeypatch.delitem(loading.ADAPTERS, LLAVA)


@pytest.fixture
def generic_run(root, no_llava_adapter):
    run = root / "generic"
    if not (run / "index.parquet").is_file():
        code, said = _record(root, run, "--adapter", "generic", "--grid", GRID)
        assert code == 0, said
    return run


def test_the_manifest_says_adapter_and_grid(generic_run):
    manifest = json.loads((generic_run / "manifest.json").read_text())
    for m in schema.MODELS:
        assert (manifest["models"][m]["adapter"], manifest["models"][m]["grid"]) == ("generic", [2, 8])
    store = open_run(generic_run)
    assert store.model_loading("student") == {"adapter": "generic", "grid": (2, 8)}
    assert (store.index.teacher_grid_rows == 2).all() and (store.index.student_grid_cols == 8).all()
    assert record_command(manifest, generic_run).endswith(f"--adapter generic --grid {GRID}")


def test_attribution_reloads_the_models_through_the_generic_adapter(generic_run, monkeypatch):
    from analyses.attribution import attribution

    store = open_run(generic_run)
    with pytest.raises(AdapterError, match="no cdviz adapter"):  # what a reload without the manifest's keys meets
        cdviz.models.load_model(store.model_info("teacher")["path"])
    loaded, load_model = [], cdviz.models.load_model

    def spy(*args, **kwargs):
        loaded.append(load_model(*args, **kwargs))
        return loaded[-1]

    monkeypatch.setattr(cdviz.models, "load_model", spy)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = attribution(store, n_items=1, n_steps=2, seed=0)
    assert [type(a) for a in loaded] == [GenericAdapter, GenericAdapter]
    assert [a.grid for a in loaded] == [(2, 8), (2, 8)]
    assert set(zip(result.items.grid_rows, result.items.grid_cols)) == {(2, 8)}
    assert len(result.frame) == 2 + 1  # one item, teacher 2 layers + student 1


def test_resume_with_another_grid_or_adapter_is_refused(generic_run):
    for part in sorted((generic_run / "parts").glob("00001.*")):  # a run stopped after its first shard
        part.unlink()
    code, said = _record(generic_run.parent, generic_run, "--adapter", "generic", "--grid", "8x2")
    assert code != 0
    assert "recorded with --adapter generic --grid 2x8" in said and "this command gives --adapter generic --grid 8x2" in said
    code, said = _record(generic_run.parent, generic_run, "--adapter", "generic")
    assert code != 0 and "--grid 2x8" in said and "this command gives --adapter generic;" in said
    code, said = _record(generic_run.parent, generic_run, "--adapter", "generic", "--grid", GRID)  # the same command
    assert code == 0, said
    assert open_run(generic_run).health().ok


def test_a_run_recorded_before_the_keys_existed_is_adapter_auto(root, tmp_path):
    run = tmp_path / "auto"
    code, said = _record(root, run)
    assert code == 0, said
    manifest = json.loads((run / "manifest.json").read_text())
    assert all((manifest["models"][m]["adapter"], manifest["models"][m]["grid"]) == ("auto", None)
               for m in schema.MODELS)
    for m in schema.MODELS:  # as an older cdviz wrote it
        del manifest["models"][m]["adapter"], manifest["models"][m]["grid"]
    (run / "manifest.json").write_text(json.dumps(manifest))
    assert open_run(run).model_loading("teacher") == {"adapter": "auto", "grid": None}
    assert schema.model_loading(manifest, "student") == {"adapter": "auto", "grid": None}
    assert run_identity(manifest) == run_identity(json.loads(json.dumps(
        {**manifest, "models": {m: {**i, "adapter": "auto", "grid": None} for m, i in manifest["models"].items()}})))
    for stale in [run / "index.parquet", run / "outcomes.parquet", *sorted((run / "parts").glob("00001.*"))]:
        stale.unlink()
    code, said = _record(root, run, "--adapter", "generic")
    assert code != 0 and "recorded with --adapter auto" in said and "this command gives --adapter generic" in said
    code, said = _record(root, run)  # the same command resumes; the manifest on disk stays
    assert code == 0, said
    assert json.loads((run / "manifest.json").read_text()) == manifest
    assert open_run(run).health().ok
    shutil.rmtree(run)
