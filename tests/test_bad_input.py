"""Bad input and damaged runs: each case ends in a clear one-line error naming the item and
the fix (exit code 2, no traceback) or in a recorded skip, and nothing written before is lost.

Training cases (recipes, NaN loss, metrics rows on resume) are in tests/train/test_bad_recipes.py.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

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


def test_build_report_from_python_refuses_a_half_written_run(straight, tmp_path):
    from cdviz.workflow import build_report

    run = tmp_path / "run"
    shutil.copytree(straight, run)
    for p in [*(run / "parts").glob("00001*"), run / "index.parquet", run / "outcomes.parquet"]:
        p.unlink()
    with pytest.raises(StoreError, match=r"4 of 6 items recorded \(1 of 3 shards missing: 00001\).*cdviz record"):
        build_report(run, n_boot=20, n_perm=20)
    assert not (run / "report").exists()


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


def test_an_absolute_image_path_outside_the_declared_folders_is_refused(probes, tmp_path):
    outside = tmp_path / "elsewhere" / "secret.png"
    outside.parent.mkdir()
    shutil.copy(next((probes / "images").glob("*.png")), outside)
    name = next((probes / "images").glob("*.png")).name
    inside = {**first_item(probes), "uid": "inside", "images": [str(tmp_path / "p2" / "images" / name)]}
    lines = (probes / "items.jsonl").read_text().splitlines()[:2]
    bad = copy_probes(probes, tmp_path / "p", [*lines, {**first_item(probes), "uid": "out", "images": [str(outside)]}])
    with pytest.raises(ProbeError, match=rf"items.jsonl:3: probe item 'out': image '{outside}' lies outside the probe "
                                         "set folder .* --images-dir DIR"):
        load_probeset(bad)
    assert [s.item.uid for s in load_probeset(bad, skip_bad=True).skipped] == ["out"]
    # an absolute path inside the probe set folder is fine
    assert load_probeset(copy_probes(probes, tmp_path / "p2", [inside])).items[0].uid == "inside"
    # save_probeset (and so `cdviz probes import`) lists the folders of the images it was given
    item = load_probeset(bad, skip_bad=True).skipped[0].item
    from cdviz.probes import save_probeset

    saved = save_probeset([item], tmp_path / "saved", name="abs")
    assert json.loads((saved / "probeset.json").read_text())["image_roots"] == [str(outside.parent)]
    assert load_probeset(saved).items == [item]


def test_an_image_outside_is_a_recorded_skip_with_skip_bad(model, probes, tmp_path):
    outside = tmp_path / "secret.png"
    shutil.copy(next((probes / "images").glob("*.png")), outside)
    lines = (probes / "items.jsonl").read_text().splitlines()[:2]
    bad = copy_probes(probes, tmp_path / "p", [*lines, {**first_item(probes), "uid": "abs", "images": [str(outside)]},
                                               {**first_item(probes), "uid": "up", "images": ["../secret.png"]}])
    result = invoke(*record_args(model, bad, tmp_path / "run", "--shard-size", 2))
    assert_clean_error(result, "probe item 'abs'", "lies outside the probe set folder", "--skip-bad")
    assert not (tmp_path / "run").exists()
    result = invoke(*record_args(model, bad, tmp_path / "run", "--shard-size", 2, "--skip-bad"))
    assert result.exit_code == 0, result.output
    index = open_run(tmp_path / "run").index.set_index("uid")
    assert list(index.status) == ["ok", "ok", "skipped", "skipped"]
    assert "lies outside" in index.loc["abs", "skip_reason"] and "leaves the probe set" in index.loc["up", "skip_reason"]


# ---- tracebacks turned into errors -----------------------------------------------------------------

@pytest.mark.parametrize("line", ['"just a string"', "[1, 2]", "3"])
def test_a_probe_line_that_is_not_an_object_is_named(probes, tmp_path, line):
    bad = copy_probes(probes, tmp_path / "p", [first_item(probes), line])
    with pytest.raises(ProbeError, match=r"items.jsonl:2: a .* not an item"):
        load_probeset(bad)
    assert len(load_probeset(bad, skip_bad=True)) == 1


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


def test_a_wrong_layer_range_leaves_no_manifest_behind(model, probes, tmp_path):
    with pytest.raises(Exception, match="cannot record layer"):
        record(model, model, probes, tmp_path / "run", RecordOptions(layers=(5,), shard_size=2))
    assert not (tmp_path / "run" / "manifest.json").exists()
    record(model, model, probes, tmp_path / "run", RecordOptions(layers=(1,), shard_size=2))
    assert open_run(tmp_path / "run").layers("teacher") == [1]


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


# ---- the bad-input table ---------------------------------------------------------------------------
# One row per bad input tried for #15 (and its neighbours): a setup that builds the input in the row's
# own folder and returns the command line, and what must come back: one line naming every fragment
# (exit 2, no traceback), or with `skip` a finished run whose index records that item as a skip for
# that reason. Either way every file in the folder before the command is still there, byte for byte,
# and an error leaves nothing new, unless the row says recording had begun (`started`): then only the
# run's own files (its manifest and the shards done before the error, which a rerun keeps).

@dataclass(frozen=True)
class Ctx:
    model: Path
    probes: Path
    straight: Path
    nan_student: Path
    tmp: Path

    def record(self, *extra, probes: Path | None = None, teacher: Path | None = None,
               student: Path | None = None) -> tuple:
        return ("record", "--teacher", teacher or self.model, "--student", student or self.model,
                "--probes", probes or self.probes, "--out", self.tmp / "run", "--device", "cpu", *extra)

    def eval(self, *extra, model: Path | None = None, probes: Path | None = None) -> tuple:
        return ("eval", "--model", model or self.model, "--probes", probes or self.probes,
                "--out", self.tmp / "e.parquet", *extra)

    def lines(self, *extra: dict | str, keep: int = 2) -> Path:
        """A copy of the probe set holding its first ``keep`` lines and then ``extra``."""
        head = (self.probes / "items.jsonl").read_text().splitlines()[:keep]
        return copy_probes(self.probes, self.tmp / "p", [*head, *extra])

    def item(self, **fields) -> dict:
        return {**first_item(self.probes), **fields}

    def run(self) -> Path:
        """A copy of the uninterrupted 3-shard run, at the --out of `record`."""
        return Path(shutil.copytree(self.straight, self.tmp / "run"))

    def outside_image(self) -> Path:
        path = self.tmp / "elsewhere" / "secret.png"
        path.parent.mkdir(exist_ok=True)
        shutil.copy(next((self.probes / "images").glob("*.png")), path)
        return path

    def recipe(self, body: str) -> tuple:
        path = self.tmp / "r.toml"
        path.write_text(f'student = "{self.model}"\nteacher = "{self.model}"\nout = "{self.tmp / "ft"}"\n'
                        f'stages = ["dpt", "dft"]\n{body}')
        return ("finetune", "--recipe", path)


def half_run(ctx: Ctx) -> Path:
    run = ctx.run()
    for p in [*(run / "parts").glob("00001*"), run / "index.parquet", run / "outcomes.parquet"]:
        p.unlink()
    return run


def truncated_run(ctx: Ctx) -> Path:
    run = ctx.run()
    shard = run / "shards" / "student" / "00001.safetensors"
    shard.write_bytes(shard.read_bytes()[:-100])
    return run


def corrupt_png(ctx: Ctx, *extra) -> tuple:
    probes = ctx.lines(ctx.item(uid="broken", images=["images/broken.png"]))
    (probes / "images" / "broken.png").write_bytes(b"not a png")
    return ctx.record("--shard-size", 2, *extra, probes=probes)


def future_manifest(ctx: Ctx) -> tuple:
    run = ctx.run()
    manifest = json.loads((run / "manifest.json").read_text())
    (run / "manifest.json").write_text(json.dumps({**manifest, "version": 99}))
    return ctx.record("--shard-size", 2)


def corrupt_manifest(ctx: Ctx) -> Path:
    run = ctx.run()
    (run / "manifest.json").write_text("{half")
    return run


def future_probeset(ctx: Ctx) -> tuple:
    probes = ctx.lines()
    meta = json.loads((probes / "probeset.json").read_text())
    (probes / "probeset.json").write_text(json.dumps({**meta, "version": 99}))
    return ctx.record(probes=probes)


def pickle_model(ctx: Ctx) -> tuple:
    import torch

    pickled = Path(shutil.copytree(ctx.model, ctx.tmp / "pickled"))
    (pickled / "model.safetensors").unlink()
    torch.save({"x": torch.zeros(1)}, pickled / "pytorch_model.bin")
    return ctx.eval(model=pickled)


@dataclass(frozen=True)
class Case:
    id: str
    setup: Callable[[Ctx], tuple]
    needles: tuple[str, ...]
    skip: str | None = None   # the uid recorded as a skip; None: an error
    started: bool = False     # the error comes once recording has begun (files under run/ may be new)


GONE = {"uid": "gone", "images": ["images/gone.png"]}
CASES = [
    # record options, checked before any model loads
    Case("record-shard-size-0", lambda c: c.record("--shard-size", 0), ("--shard-size 0: give a whole number",)),
    Case("record-batch-size-0", lambda c: c.record("--batch-size", 0), ("--batch-size 0: give a whole number",)),
    Case("record-layers-backwards", lambda c: c.record("--layers", "3-1"), ("the range '3-1' runs backwards; write 1-3",)),
    Case("record-layers-not-a-number", lambda c: c.record("--layers", ","), ("is not a layer number",)),
    Case("record-layer-out-of-range", lambda c: c.record("--layers", "5"), ("2 layers; cannot record layer(s) [5]",)),
    Case("record-dtype-int8", lambda c: c.record("--dtype", "int8"), ("--dtype 'int8': use auto",)),
    Case("record-queries", lambda c: c.record("--queries", "all"), ("--queries 'all': use one of answer, prompt",)),
    Case("record-protocol", lambda c: c.record("--protocol", "likelihood"), ("--protocol 'likelihood'",)),
    Case("record-match-record", lambda c: c.record("--match-record", "all"), ("it needs --protocol match",)),
    Case("record-no-teacher", lambda c: c.record(teacher=c.tmp / "nowhere"), ("nowhere",)),
    # probe sets
    Case("probes-missing", lambda c: c.record(probes=c.tmp / "none"), ("no items.jsonl", "cdviz probes make")),
    Case("probes-empty", lambda c: c.record(probes=c.lines(keep=0)), ("the probe set has no items",)),
    Case("probes-all-skipped", lambda c: c.record("--skip-bad", probes=c.lines(c.item(**GONE), keep=0)),
         ("all 1 probe item(s) were skipped", "gone.png")),
    Case("probes-line-is-a-string", lambda c: c.record(probes=c.lines('"just a string"')),
         ("items.jsonl:3: a str", "not an item")),
    Case("probes-malformed-json", lambda c: c.record(probes=c.lines('{"uid": ')), ("items.jsonl:3: malformed JSON",)),
    Case("probes-duplicate-uid", lambda c: c.record(probes=c.lines(c.item())), ("items.jsonl:3: duplicate uid",)),
    Case("probes-image-missing", lambda c: c.record(probes=c.lines(c.item(**GONE))),
         ("items.jsonl:3: probe item 'gone'", "gone.png not found", "--skip-bad")),
    Case("probes-image-missing-skip-bad", lambda c: c.record("--skip-bad", "--shard-size", 2, probes=c.lines(
        c.item(**GONE))), ("gone.png not found",), skip="gone"),
    Case("probes-dotdot-image", lambda c: c.record(probes=c.lines(c.item(uid="up", images=["../x.png"]))),
         ("'../x.png' leaves the probe set folder",)),
    Case("probes-dotdot-image-skip-bad", lambda c: c.record("--skip-bad", probes=c.lines(
        c.item(uid="up", images=["images/../../x.png"]))), ("leaves the probe set folder",), skip="up"),
    Case("probes-absolute-image-outside", lambda c: c.record(probes=c.lines(
        c.item(uid="abs", images=[str(c.outside_image())]))), ("probe item 'abs'", "lies outside the probe set folder")),
    Case("probes-absolute-image-outside-skip-bad", lambda c: c.record("--skip-bad", probes=c.lines(
        c.item(uid="abs", images=[str(c.outside_image())]))), ("lies outside the probe set folder",), skip="abs"),
    Case("probes-future-version", future_probeset, ("v99 is not a probe set this", "upgrade cdviz")),
    Case("probes-corrupt-image", corrupt_png, ("probe item 'broken'", "unreadable", "--skip-bad"), started=True),
    Case("probes-corrupt-image-skip-bad", lambda c: corrupt_png(c, "--skip-bad"), ("unreadable",), skip="broken"),
    Case("probes-show-dotdot", lambda c: ("probes", "show", c.lines(c.item(uid="up", images=["../x.png"]))),
         ("leaves the probe set folder",)),
    # models
    Case("record-nan-student", lambda c: c.record(student=c.nan_student),
         ("student (", "NaN or inf", "--skip-bad"), started=True),
    Case("eval-nan-weights", lambda c: c.eval(model=c.nan_student), ("NaN or inf", "--skip-bad")),
    Case("eval-pickle-checkpoint", pickle_model, ("only PyTorch .bin (pickle) weights",)),
    Case("eval-batch-size-0", lambda c: c.eval("--batch-size", 0), ("--batch-size 0: give 1 or more",)),
    Case("eval-dtype-int8", lambda c: c.eval("--dtype", "int8"), ("--dtype 'int8': use auto",)),
    Case("eval-protocol", lambda c: c.eval("--protocol", "vibes"), ("--protocol 'vibes': choose one of",)),
    Case("eval-empty-probes", lambda c: c.eval(probes=c.lines(keep=0)), ("the probe set has no items",)),
    # damaged or foreign runs
    Case("record-resume-other-options", lambda c: (c.run(), c.record("--shard-size", 2, "--layers", "1"))[1],
         ("holds a run with other models, options", "same command")),
    Case("record-future-manifest", future_manifest, ("version 99 was written by a newer cdviz", "upgrade cdviz")),
    Case("record-corrupt-manifest-other-command", lambda c: (corrupt_manifest(c), c.record("--shard-size", 3))[1],
         ("manifest.json is corrupt", "recorded by another command", "new --out")),
    Case("report-half-written", lambda c: ("report", half_run(c)), ("4 of 6 items recorded", "cdviz record --teacher")),
    Case("report-truncated-shard", lambda c: ("report", truncated_run(c)),
         ("shard 00001 damaged", "shards/student/00001.safetensors")),
    Case("report-corrupt-manifest", lambda c: ("report", corrupt_manifest(c)),
         ("corrupt manifest", "re-run `cdviz record` with the same command")),
    Case("report-not-a-run", lambda c: ("report", c.lines()), ("no manifest.json", "not a cdviz run")),
    Case("report-n-boot-0", lambda c: ("report", c.run(), "--n-boot", 0), ("--n-boot and --n-perm must be 1 or more",)),
    Case("verify-not-a-run", lambda c: ("verify", c.tmp), ("no manifest.json",)),
    Case("compare-half-written", lambda c: ("compare", c.straight, half_run(c)), ("4 of 6 items recorded", "00001")),
    # fine-tuning recipes, checked before any model loads
    Case("recipe-toml-syntax", lambda c: c.recipe("[stage.dft\nsteps = 5\n"), ("r.toml", "not valid TOML")),
    Case("recipe-lr-negative", lambda c: c.recipe("[stage.dpt]\nlr = -1\n"), ("stage dpt: lr = -1; give a number > 0",)),
    Case("recipe-lr-string", lambda c: c.recipe('[stage.dpt]\nlr = "fast"\n'), ("stage dpt: lr = 'fast'",)),
    Case("recipe-steps-0", lambda c: c.recipe("[stage.dft]\nsteps = 0\n"), ("stage dft: steps = 0; give a whole",)),
    Case("recipe-steps-negative", lambda c: c.recipe("[stage.dft]\nsteps = -3\n"), ("stage dft: steps = -3",)),
    Case("recipe-batch-size-0", lambda c: c.recipe("[stage.dpt]\nbatch_size = 0\n"), ("stage dpt: batch_size = 0",)),
    Case("recipe-unknown-key", lambda c: c.recipe("[stage.dft]\nstep = 5\n"),
         ("r.toml", "stage dft: unknown setting(s) ['step']")),
]


@pytest.fixture(scope="module")
def ctx_parts(model, probes, straight, tmp_path_factory):
    return model, probes, straight, nan_model(model, tmp_path_factory.mktemp("nan") / "m")


def files(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_the_table_covers_the_issue():
    assert len(CASES) >= 30 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input(case, ctx_parts, tmp_path):
    ctx = Ctx(*ctx_parts, tmp=tmp_path)
    args = case.setup(ctx)
    before = files(tmp_path)
    result = invoke(*args)
    assert "Traceback" not in result.output
    after = files(tmp_path)
    assert {p: after.get(p) for p in before} == before  # nothing written before is lost or changed
    if case.skip is not None:
        assert result.exit_code == 0, result.output
        row = open_run(tmp_path / "run").index.set_index("uid").loc[case.skip]
        assert row.status == "skipped" and all(n in row.skip_reason for n in case.needles), row.skip_reason
        return
    assert_clean_error(result, *case.needles)
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and all(n in errors[0] for n in case.needles), result.output  # one line says it all
    new = sorted(str(p.relative_to(tmp_path)) for p in set(after) - set(before))
    assert all(p.startswith("run/") for p in new) if case.started else not new, new
