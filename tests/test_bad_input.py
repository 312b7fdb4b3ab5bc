"""Bad input and damaged runs (issue #15): each case ends in a clear one-line error naming the item and
the fix (exit code 2, no traceback) or in a recorded skip, and nothing written before is lost.

Training cases (recipes, NaN loss, metrics rows on resume) are in tests/train/test_bad_recipes.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from safetensors.numpy import load_file
from typer.testing import CliRunner

from cdviz.cli import app
from cdviz.probes import load_probeset
from cdviz.probes.shapes import make_shapes
from cdviz.record import RecordOptions, record
from cdviz.store import StoreError, open_run, verify_run
from cdviz.types import ProbeError

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def assert_clean_error(result, *needles: str) -> None:
    """Exit code 2, one message naming every needle, and no traceback."""
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    text = " ".join(result.output.split())
    for needle in needles:
        assert needle in text, (needle, text)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from cdviz.models.tiny import build_tiny

    return build_tiny("llava", tmp_path_factory.mktemp("tiny") / "m", n_layers=2, image_size=32)


@pytest.fixture(scope="module")
def probes(tmp_path_factory):
    return make_shapes(tmp_path_factory.mktemp("probes") / "p", n=6, seed=4, image_size=32).root


@pytest.fixture(scope="module")
def straight(model, probes, tmp_path_factory):
    """An uninterrupted run of 6 items in 3 shards, to compare repaired runs with."""
    return record(model, model, probes, tmp_path_factory.mktemp("straight") / "run", RecordOptions(shard_size=2))


def copy_probes(probes: Path, out: Path, lines: list) -> Path:
    shutil.copytree(probes, out)
    (out / "items.jsonl").write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return out


def first_item(probes: Path) -> dict:
    return json.loads((probes / "items.jsonl").read_text().splitlines()[0])


def assert_same_run(a: Path, b: Path) -> None:
    pd.testing.assert_frame_equal(pd.read_parquet(a / "index.parquet"), pd.read_parquet(b / "index.parquet"))
    pd.testing.assert_frame_equal(pd.read_parquet(a / "outcomes.parquet"), pd.read_parquet(b / "outcomes.parquet"))
    shards = sorted(p.relative_to(a) for p in a.glob("shards/*/*.safetensors"))
    assert shards == sorted(p.relative_to(b) for p in b.glob("shards/*/*.safetensors"))
    for rel in shards:
        ta, tb = load_file(a / rel), load_file(b / rel)
        assert ta.keys() == tb.keys()
        for key in ta:
            np.testing.assert_array_equal(ta[key], tb[key])


def record_args(model, probes, out, *extra):
    return ("record", "--teacher", model, "--student", model, "--probes", probes, "--out", out, "--device", "cpu",
            *extra)


# ---- silent wrong or lost results -----------------------------------------------------------------

def nan_model(model: Path, out: Path) -> Path:
    from safetensors.torch import load_file as load_torch, save_file

    shutil.copytree(model, out)
    tensors = load_torch(str(out / "model.safetensors"))
    key = next(k for k in tensors if k.endswith("language_model.norm.weight") or k.endswith("model.norm.weight"))
    tensors[key][0] = float("nan")
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out


def test_eval_on_nan_weights_names_the_model_and_item(model, probes, tmp_path):
    broken = nan_model(model, tmp_path / "nan-model")
    uid = first_item(probes)["uid"]
    result = invoke("eval", "--model", broken, "--probes", probes, "--out", tmp_path / "e.parquet")
    assert_clean_error(result, f"model {broken}", repr(uid), "NaN or inf", "--skip-bad")
    assert not (tmp_path / "e.parquet").exists()
    # --skip-bad: every item is skipped, so there is nothing to report (not a 50% accuracy)
    result = invoke("eval", "--model", broken, "--probes", probes, "--out", tmp_path / "e.parquet", "--skip-bad")
    assert_clean_error(result, "no item of", "6 skipped", "NaN or inf")
    assert not (tmp_path / "e.parquet").exists()


def test_record_on_nan_weights_names_the_model_and_item(model, probes, tmp_path):
    broken = nan_model(model, tmp_path / "nan-model")
    result = invoke("record", "--teacher", model, "--student", broken, "--probes", probes, "--out", tmp_path / "r",
                    "--device", "cpu")
    assert_clean_error(result, f"student ({broken})", repr(first_item(probes)["uid"]), "NaN or inf")


def test_report_on_a_half_written_run_says_what_is_missing(model, probes, tmp_path):
    run = record(model, model, probes, tmp_path / "run", RecordOptions(shard_size=2))
    for p in (run / "parts").glob("00002*"):
        p.unlink()
    (run / "index.parquet").unlink()
    (run / "outcomes.parquet").unlink()
    result = invoke("report", run, "--n-boot", 20, "--n-perm", 20)
    assert_clean_error(result, "4 of 6 items recorded", "1 of 3 shards missing: 00002", "cdviz record --teacher")
    assert not (run / "report").exists()
    verify = invoke("verify", run)
    assert verify.exit_code == 1 and "4 of 6 items recorded" in " ".join(verify.output.split())
    # the dashboard flags it on every page (a warning, the recorded items still shown)
    from app import state

    damaged, message = state.run_health(state.open_named(run.parent, run.name))
    assert not damaged and "4 of 6 items recorded" in message


def test_items_skipped_on_load_are_in_the_index(model, probes, tmp_path):
    lost = {**first_item(probes), "uid": "lost", "images": ["images/gone.png"]}
    lines = (probes / "items.jsonl").read_text().splitlines()[:3]
    bad = copy_probes(probes, tmp_path / "p", [*lines, lost])
    run = record(model, model, bad, tmp_path / "run", RecordOptions(shard_size=2), skip_bad=True)
    index = open_run(run).index.set_index("uid")
    assert index.loc["lost", "status"] == "skipped" and "gone.png not found" in index.loc["lost", "skip_reason"]
    assert (index.drop("lost").status == "ok").all()
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["probes"]["n_items"] == 4 and "gone.png" in manifest["skipped"][0]["reason"]
    assert verify_run(run).ok


def test_a_dotdot_image_path_is_refused(probes, tmp_path):
    outside = tmp_path / "secret.png"
    shutil.copy(next((probes / "images").glob("*.png")), outside)
    item = {**first_item(probes), "images": ["../secret.png"]}
    bad = copy_probes(probes, tmp_path / "p", [item])
    with pytest.raises(ProbeError, match=r"items.jsonl:1: .*'\.\./secret\.png' leaves the probe set folder"):
        load_probeset(bad)
    result = invoke("probes", "show", bad)
    assert_clean_error(result, "leaves the probe set folder")
    item = {**item, "images": ["images/../../secret.png"]}
    copy_probes(probes, tmp_path / "p2", [item])
    with pytest.raises(ProbeError, match="leaves the probe set folder"):
        load_probeset(tmp_path / "p2")


# ---- tracebacks turned into errors -----------------------------------------------------------------

@pytest.mark.parametrize("line", ['"just a string"', "[1, 2]", "3"])
def test_a_probe_line_that_is_not_an_object_is_named(probes, tmp_path, line):
    bad = copy_probes(probes, tmp_path / "p", [first_item(probes), line])
    with pytest.raises(ProbeError, match=r"items.jsonl:2: a .* not an item"):
        load_probeset(bad)
    assert len(load_probeset(bad, skip_bad=True)) == 1


def test_an_empty_probe_set_is_refused_before_anything_is_written(model, probes, tmp_path):
    empty = copy_probes(probes, tmp_path / "empty", [])
    result = invoke(*record_args(model, empty, tmp_path / "run"))
    assert_clean_error(result, "has no items")
    assert not (tmp_path / "run").exists()
    result = invoke("eval", "--model", model, "--probes", empty, "--out", tmp_path / "e.parquet")
    assert_clean_error(result, "has no items")
    gone = {**first_item(probes), "images": ["images/gone.png"]}
    all_bad = copy_probes(probes, tmp_path / "all-bad", [gone])
    result = invoke(*record_args(model, all_bad, tmp_path / "run", "--skip-bad"))
    assert_clean_error(result, "all 1 probe item(s) were skipped", "gone.png")
    assert not (tmp_path / "run").exists()


def test_a_truncated_shard_is_named_and_record_repairs_it(model, probes, straight, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(straight, run)
    shard = run / "shards" / "student" / "00001.safetensors"
    shard.write_bytes(shard.read_bytes()[:-100])
    uid = open_run(run).index.query("shard == 1").uid.iloc[0]
    with pytest.raises(StoreError, match="00001.safetensors: damaged shard"):
        open_run(run).get(uid, "student", "t2i")
    result = invoke("report", run, "--n-boot", 20, "--n-perm", 20)
    assert_clean_error(result, "shard 00001 damaged", "shards/student/00001.safetensors", "cdviz record")
    from app import state

    damaged, message = state.run_health(state.open_named(run.parent, run.name))
    assert damaged and "00001" in message
    # the same command repairs it: the damaged shard is recorded again, the store equals an uninterrupted one
    stale = run / "shards" / "teacher" / ".00002.safetensors.abc.tmp"
    stale.write_bytes(b"half")
    record(model, model, probes, run, RecordOptions(shard_size=2))
    assert verify_run(run).ok and not stale.exists()
    assert_same_run(straight, run)


def test_deleted_shard_and_part_are_recorded_again(model, probes, straight, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(straight, run)
    (run / "shards" / "teacher" / "00000.safetensors").unlink()
    (run / "parts" / "00002.outcomes.parquet").unlink()
    health = verify_run(run)
    assert set(health.damaged) == {0, 2} and "00000.safetensors missing" in health.damaged[0]
    record(model, model, probes, run, RecordOptions(shard_size=2))
    assert_same_run(straight, run)


def test_a_replaced_shard_fails_its_checksum(straight, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(straight, run)
    a, b = run / "shards" / "student" / "00000.safetensors", run / "shards" / "student" / "00001.safetensors"
    data = bytearray(a.read_bytes())
    data[-1] ^= 1  # same size, still a readable file: only the checksum tells
    a.write_bytes(bytes(data))
    assert verify_run(run).ok and 0 in verify_run(run, checksums=True).damaged
    assert "checksum differs" in verify_run(run, checksums=True).damaged[0]
    result = invoke("verify", run, "--checksums")
    assert result.exit_code == 1 and "00000" in result.output
    assert b.is_file()


def test_fault_truncate_delete_and_corrupt_manifest_then_record_repairs(model, probes, straight, tmp_path):
    """The fault test of #15: a truncated shard, a deleted shard and a corrupt manifest at once; the same
    command repairs all three and the store equals an uninterrupted one, tensor for tensor."""
    run = tmp_path / "run"
    shutil.copytree(straight, run)
    truncated = run / "shards" / "student" / "00001.safetensors"
    truncated.write_bytes(truncated.read_bytes()[:-100])
    (run / "shards" / "teacher" / "00002.safetensors").unlink()
    (run / "manifest.json").write_text('{"format": "cdviz-run", "vers')
    kept = (run / "shards" / "teacher" / "00000.safetensors").stat().st_mtime_ns
    result = invoke(*record_args(model, probes, run, "--shard-size", 2))
    assert result.exit_code == 0, result.output
    assert json.loads((run / "manifest.json").read_text()) == json.loads((straight / "manifest.json").read_text())
    assert verify_run(run, checksums=True).ok
    assert_same_run(straight, run)
    assert (run / "shards" / "teacher" / "00000.safetensors").stat().st_mtime_ns == kept  # intact shard kept


def strip_run_identity(part: Path) -> None:
    """Rewrite a part file as an older cdviz wrote it: no record of the command in its metadata."""
    import pyarrow.parquet as pq

    from cdviz.store import RUN_META

    table = pq.read_table(part)
    meta = {k: v for k, v in table.schema.metadata.items() if k != RUN_META}
    pq.write_table(table.replace_schema_metadata(meta), part)


def test_corrupt_manifest_is_refused_when_the_parts_cannot_be_matched(model, probes, straight, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(straight, run)
    (run / "manifest.json").write_text("{half")
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    # another command (other layers) cannot claim the parts
    with pytest.raises(StoreError, match=r"manifest.json is corrupt .*00000.parquet was recorded by another command"):
        record(model, model, probes, run, RecordOptions(shard_size=2, layers=(1,)))
    # a part from before parts named their command cannot be matched either
    strip_run_identity(run / "parts" / "00001.parquet")
    before[run / "parts" / "00001.parquet"] = (run / "parts" / "00001.parquet").read_bytes()
    result = invoke(*record_args(model, probes, run, "--shard-size", 2))
    assert_clean_error(result, "manifest.json is corrupt", "00001.parquet does not say which command recorded it",
                       "restore manifest.json or record into a new --out")
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before  # nothing recorded is lost


def test_future_manifest_on_resume_and_a_corrupt_one_before_any_shard(model, probes, straight, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(straight, run)
    future = {**json.loads((straight / "manifest.json").read_text()), "version": 99}
    (run / "manifest.json").write_text(json.dumps(future))
    with pytest.raises(StoreError, match="version 99 was written by a newer cdviz"):
        record(model, model, probes, run, RecordOptions(shard_size=2))
    with pytest.raises(StoreError, match="newer cdviz"):
        open_run(run)
    # a corrupt manifest with nothing recorded yet is simply written again
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "manifest.json").write_text("{half")
    record(model, model, probes, fresh, RecordOptions(shard_size=2))
    assert verify_run(fresh).ok


@pytest.mark.parametrize("flags, message", [
    (("--shard-size", "0"), "--shard-size 0: give a whole number of items, 1 or more"),
    (("--batch-size", "0"), "--batch-size 0: give a whole number of items, 1 or more"),
    (("--layers", "3-1"), "the range '3-1' runs backwards; write 1-3"),
    (("--layers", ","), "is not a layer number"),
    (("--dtype", "int8"), "--dtype 'int8': use auto"),
    (("--queries", "all"), "--queries 'all': use one of answer, prompt"),
    (("--protocol", "likelihood"), "--protocol 'likelihood'"),
])
def test_record_options_are_checked_before_any_work(model, probes, tmp_path, flags, message):
    result = invoke(*record_args(model, probes, tmp_path / "run", *flags))
    assert_clean_error(result, message)
    assert not (tmp_path / "run").exists()  # no manifest that would refuse the corrected rerun


def test_a_wrong_layer_range_leaves_no_manifest_behind(model, probes, tmp_path):
    with pytest.raises(Exception, match="cannot record layer"):
        record(model, model, probes, tmp_path / "run", RecordOptions(layers=(5,), shard_size=2))
    assert not (tmp_path / "run" / "manifest.json").exists()
    record(model, model, probes, tmp_path / "run", RecordOptions(layers=(1,), shard_size=2))
    assert open_run(tmp_path / "run").layers("teacher") == [1]


@pytest.mark.parametrize("flags, message", [
    (("--batch-size", "0"), "--batch-size 0: give 1 or more"),
    (("--dtype", "int8"), "--dtype 'int8': use auto"),
    (("--protocol", "vibes"), "--protocol 'vibes': choose one of"),
])
def test_eval_options_are_checked_before_any_work(model, probes, tmp_path, flags, message):
    result = invoke("eval", "--model", model, "--probes", probes, "--out", tmp_path / "e.parquet", *flags)
    assert_clean_error(result, message)


def test_a_pickle_that_holds_code_is_refused_with_a_message(model, probes, tmp_path, monkeypatch):
    import os

    import torch

    class Payload:
        def __reduce__(self):
            return (os.system, ("true",))

    pickled = tmp_path / "pickled"
    shutil.copytree(model, pickled)
    (pickled / "model.safetensors").unlink()
    torch.save({"x": Payload()}, pickled / "pytorch_model.bin")
    result = invoke("eval", "--model", pickled, "--probes", probes, "--out", tmp_path / "e.parquet")
    assert_clean_error(result, "only PyTorch .bin (pickle) weights")
    monkeypatch.setenv("CDVIZ_ALLOW_BIN", "1")
    result = invoke("eval", "--model", pickled, "--probes", probes, "--out", tmp_path / "e.parquet")
    assert_clean_error(result, "pytorch_model.bin is a pickle that holds more than tensors", "nothing in it was run")


# ---- paths stay inside -----------------------------------------------------------------------------

def test_dashboard_does_not_trust_a_run_that_names_a_broad_probe_folder(tmp_path):
    from app import state

    root = tmp_path / "runs"
    (root / "r").mkdir(parents=True)
    probes = tmp_path / "probes"
    probes.mkdir()
    assert not state._trusted_probe_dir(Path("/"), root.resolve())
    assert not state._trusted_probe_dir(tmp_path, root.resolve())  # holds the runs root
    assert not state._trusted_probe_dir(probes, root.resolve())  # no items.jsonl: not a probe set
    (probes / "items.jsonl").write_text("")
    assert state._trusted_probe_dir(probes, root.resolve())
    assert state._trusted_probe_dir(root / "r", root.resolve())


def test_make_demo_serves_on_localhost_only():
    makefile = (Path(__file__).resolve().parents[1] / "Makefile").read_text()
    assert "--server.address $(ADDRESS)" in makefile and "ADDRESS ?= localhost" in makefile


def test_compare_refuses_a_partial_run(model, probes, straight, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(straight, run)
    (run / "parts" / "00001.parquet").unlink()
    result = invoke("compare", straight, run)
    assert_clean_error(result, "4 of 6 items recorded", "00001")
