"""The recorder end to end: store contents, evaluation agreement, kill -9 + resume, 2 processes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from safetensors import safe_open
from safetensors.numpy import load_file

from cdviz import schema
from cdviz.evaluate import evaluate
from cdviz.models import load_model
from cdviz.models.tiny import build_tiny
from cdviz.probes.shapes import make_shapes
from cdviz.record import RecordOptions, record
from cdviz.store import StoreError, open_run

CDVIZ = [sys.executable, "-m", "cdviz.cli"]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("pair")
    teacher = build_tiny("llava", root / "teacher", n_layers=4, n_heads=4, seed=1)
    student = build_tiny("llava", root / "student", n_layers=2, n_heads=2, n_kv_heads=1, seed=2)
    probes = make_shapes(root / "probes", n=40, seed=5, image_size=32).root
    return teacher, student, probes


def assert_same_store(a: Path, b: Path) -> None:
    ma, mb = json.loads((a / "manifest.json").read_text()), json.loads((b / "manifest.json").read_text())
    assert ma == mb
    pd.testing.assert_frame_equal(pd.read_parquet(a / "index.parquet"), pd.read_parquet(b / "index.parquet"))
    pd.testing.assert_frame_equal(pd.read_parquet(a / "outcomes.parquet"), pd.read_parquet(b / "outcomes.parquet"))
    shards_a = sorted(p.relative_to(a) for p in a.glob("shards/*/*.safetensors"))
    assert shards_a == sorted(p.relative_to(b) for p in b.glob("shards/*/*.safetensors"))
    for rel in shards_a:
        ta, tb = load_file(a / rel), load_file(b / rel)
        assert ta.keys() == tb.keys()
        for k in ta:
            np.testing.assert_array_equal(ta[k], tb[k])


def test_store_contents_and_eval_agreement(pair, tmp_path):
    teacher, student, probes = pair
    run = record(teacher, student, probes, tmp_path / "run", RecordOptions(shard_size=16, batch_size=5))
    store = open_run(run)
    assert store.complete and len(store.index) == 40
    assert list(store.index.columns) == schema.index_columns()  # the schema's columns, in its order
    assert store.manifest["format"] == schema.FORMAT and store.manifest["version"] == schema.VERSION
    with safe_open(str(next((run / "shards" / "teacher").glob("*.safetensors"))), "pt") as f:
        assert {k.split("/", 1)[1] for k in f.keys()} == set(schema.RECORDED)  # every field, none other
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in store.index.image)  # readable from any cwd
    assert store.layers("teacher") == [0, 1, 2, 3] and store.layers("student") == [0, 1]
    uid = store.index.uid[0]
    n = int(store.index.teacher_n_image[0])
    assert store.get(uid, "teacher", "t2i").shape == (4, 4, 1, n)
    assert store.get(uid, "student", "i2i", layer=1, head=1).shape == (n,)
    assert store.get(uid, "student", "i2i_paper", layer=0).shape == (n,)
    mass = store.get(uid, "teacher", "mass")
    t2i = store.get(uid, "teacher", "t2i")
    np.testing.assert_allclose(mass, t2i.sum(-1), atol=2e-3)  # fp16 storage
    with pytest.raises(StoreError, match="not recorded"):
        store.get(uid, "student", "t2i", layer=3)
    # record's outcomes are exactly what `cdviz eval` computes
    frame, _ = evaluate(load_model(teacher), __import__("cdviz.probes", fromlist=["x"]).load_probeset(probes))
    rec = store.outcomes[store.outcomes.model == "teacher"].drop(columns="model").reset_index(drop=True)
    rec = rec.sort_values(["uid", "order", "caption", "image"]).reset_index(drop=True)
    frame = frame.sort_values(["uid", "order", "caption", "image"]).reset_index(drop=True)
    pd.testing.assert_series_equal(rec.correct, frame.correct)
    np.testing.assert_allclose(rec.margin, frame.margin, atol=1e-4)


def test_prompt_queries_and_layer_subset(pair, tmp_path):
    teacher, student, probes = pair
    run = record(teacher, student, probes, tmp_path / "run",
                 RecordOptions(layers=(1,), queries="prompt", store_block=True, shard_size=64))
    store = open_run(run)
    row = store.index.iloc[0]
    tokens = json.loads(row.student_query_tokens)
    assert len(tokens) > 5 and "<image>" not in tokens
    assert store.get(row.uid, "student", "t2i").shape[:3] == (1, 2, len(tokens))
    n = int(row.student_n_image)
    assert store.get(row.uid, "student", "i2i_block", layer=1).shape == (n, n)


def test_resume_refuses_other_options(pair, tmp_path):
    teacher, student, probes = pair
    record(teacher, student, probes, tmp_path / "run", RecordOptions(shard_size=64))
    with pytest.raises(StoreError, match="same command"):
        record(teacher, student, probes, tmp_path / "run", RecordOptions(shard_size=64, queries="prompt"))


def test_resume_of_a_run_started_before_an_option_existed(pair, tmp_path):
    """A run whose manifest lacks a recording option added since (here ``pieces``) resumes under
    the same command: the missing option counts as its default, and the manifest on disk stays."""
    teacher, student, probes = pair
    run = record(teacher, student, probes, tmp_path / "run", RecordOptions(shard_size=16))
    manifest = json.loads((run / "manifest.json").read_text())
    del manifest["options"]["pieces"]
    (run / "manifest.json").write_text(json.dumps(manifest))
    for stale in [run / "index.parquet", run / "outcomes.parquet", *sorted((run / "parts").glob("00001.*"))]:
        stale.unlink()
    record(teacher, student, probes, run, RecordOptions(shard_size=16))
    assert json.loads((run / "manifest.json").read_text()) == manifest
    store = open_run(run)
    assert store.health().ok and len(store.index) == 40
    with pytest.raises(StoreError, match="same command"):  # a real difference is still refused
        record(teacher, student, probes, run, RecordOptions(shard_size=16, pieces=True))


def _record_cmd(pair, out, *extra):
    teacher, student, probes = pair
    return [*CDVIZ, "record", "--teacher", str(teacher), "--student", str(student), "--probes", str(probes),
            "--out", str(out), "--shard-size", "1", "--batch-size", "2", "--device", "cpu", *extra]


def test_kill_9_then_resume_matches_uninterrupted(pair, tmp_path):
    straight = tmp_path / "straight"
    subprocess.run(_record_cmd(pair, straight), check=True, capture_output=True)
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_record_cmd(pair, killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(killed.glob("parts/*[0-9].parquet"))) < 3:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_at_kill = len(list(killed.glob("parts/*[0-9].parquet")))
    assert 3 <= done_at_kill < 40, "the run must be killed mid-way for this test to mean anything"
    assert not (killed / "index.parquet").exists()
    subprocess.run(_record_cmd(pair, killed), check=True, capture_output=True)
    assert_same_store(straight, killed)


def test_two_processes_match_one(pair, tmp_path):
    one = tmp_path / "one"
    subprocess.run(_record_cmd(pair, one), check=True, capture_output=True)
    two = tmp_path / "two"
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    cmd = [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "cdviz.cli", *_record_cmd(pair, two)[3:]]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert_same_store(one, two)


def _with_bad_items(probes: Path, out: Path) -> Path:
    """A copy of ``probes`` plus one item with a corrupt image and one too long for the model."""
    from cdviz.probes import load_probeset, save_probeset
    from cdviz.types import ProbeItem

    ps = load_probeset(probes)
    good = ps.items[:6]
    shutil.copytree(probes / "images", out / "images")
    (out / "images" / "broken.png").write_bytes(b"not a png")
    broken = ProbeItem(uid="broken-image", source="t", category="swap_att", images=("images/broken.png",),
                       options=("a red circle .", "a blue circle ."))
    long = ProbeItem(uid="too-long", source="t", category="swap_att", images=good[0].images,
                     options=(" ".join(["red"] * 1100), "a blue circle ."))
    save_probeset([*good[:3], broken, long, *good[3:]], out, name="with bad items")
    return out


def test_bad_items_are_named_or_skipped(pair, tmp_path):
    teacher, student, probes = pair
    bad = _with_bad_items(probes, tmp_path / "bad")
    with pytest.raises(Exception, match="broken-image"):
        record(teacher, student, bad, tmp_path / "strict", RecordOptions(shard_size=4))
    run = record(teacher, student, bad, tmp_path / "lenient", RecordOptions(shard_size=4, batch_size=4), skip_bad=True)
    store = open_run(run)
    status = store.index.set_index("uid")
    assert status.loc["broken-image", "status"] == "skipped" and "unreadable" in status.loc["broken-image", "skip_reason"]
    assert status.loc["too-long", "status"] == "skipped" and "exceed" in status.loc["too-long", "skip_reason"]
    assert (status.drop(["broken-image", "too-long"]).status == "ok").all()
    assert set(store.outcomes.uid) == set(status.index) - {"broken-image", "too-long"}
    with pytest.raises(StoreError, match="skipped"):
        store.get("too-long", "teacher", "t2i")
    ok_uid = status.index[0]
    assert store.get(ok_uid, "teacher", "i2i").shape[0] == 4
