"""Models by hub id from a Hugging Face cache built on disk (HF_HUB_OFFLINE=1, nothing downloaded):
ids and revisions resolve to snapshots, sharded safetensors load equal to the single file, every
bad input is one line naming the fix, and the manifest / recipe.json record what was loaded."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import httpx2
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from cdviz.models import AdapterError, format_choice_prompt, load_model, load_pair, resolve_model
from cdviz.models.hub import hub_cache_dir, parse_hub_id
from cdviz.models.tiny import build_tiny

TINY = dict(n_layers=2, n_heads=2, n_kv_heads=2, intermediate=64, seed=0, image_size=48, patch_size=8,
            vision_hidden=32, vision_layers=1, hidden=64)
MAIN = hashlib.sha1(b"sharded").hexdigest()   # refs/main: the sharded checkpoint
V1 = hashlib.sha1(b"single").hexdigest()      # refs/v1: the same weights in one file


pytestmark = pytest.mark.usefixtures("one_thread")


def add_snapshot(cache: Path, repo_id: str, commit: str, src: Path, refs: tuple[str, ...] = ()) -> Path:
    """Put ``src``'s files into ``cache`` as the hub does: blobs by sha256, snapshot symlinks, refs."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True, exist_ok=True)
    (repo / "blobs").mkdir(exist_ok=True)
    for f in sorted(src.iterdir()):
        data = f.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snap / f.name).symlink_to(os.path.relpath(blob, snap))
    (repo / "refs").mkdir(exist_ok=True)
    for ref in refs:
        (repo / "refs" / ref).write_text(commit)
    return snap


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tiny LLaVA saved whole and in 5 shards, both in a fake HF cache under org/tiny."""
    from transformers import LlavaForConditionalGeneration

    root = tmp_path_factory.mktemp("hub")
    single = build_tiny("llava", root / "single", **TINY)
    sharded = root / "sharded"
    shutil.copytree(single, sharded, ignore=shutil.ignore_patterns("model.safetensors"))
    LlavaForConditionalGeneration.from_pretrained(single).save_pretrained(sharded, max_shard_size="100KB")
    cache = root / "cache"
    add_snapshot(cache, "org/tiny", MAIN, sharded, refs=("main",))
    add_snapshot(cache, "org/tiny", V1, single, refs=("v1",))
    return {"single": single, "sharded": sharded, "cache": cache, "root": root}


@pytest.fixture
def offline(models, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(models["cache"]))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    return models


def snapshot(models, commit):
    return models["cache"] / "models--org--tiny" / "snapshots" / commit


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def logits(adapter):
    images = [Image.new("RGB", (48, 48), (200, 30, 30)), Image.new("RGB", (48, 48), (30, 30, 200))]
    texts = [format_choice_prompt("Which caption best describes the image?", ["a red circle", "a blue square"])] * 2
    batch = adapter.build_batch(images, texts).to(adapter.model.device, adapter.model.dtype)
    with torch.no_grad():
        return adapter.model(**batch.inputs).logits


def test_shards_were_written(models):
    index = json.loads((models["sharded"] / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    assert not (models["sharded"] / "model.safetensors").exists()


def test_parse_hub_id():
    assert parse_hub_id("org/name") == ("org/name", None)
    assert parse_hub_id("Qwen/Qwen2.5-VL-3B-Instruct@main") == ("Qwen/Qwen2.5-VL-3B-Instruct", "main")
    assert parse_hub_id("org/name@refs/pr/1") == ("org/name", "refs/pr/1")
    for bad in ("name", "a/b/c", "/abs/path", "./rel/dir", "org/name@", "../x", "org/..", "~/m"):
        assert parse_hub_id(bad) is None, bad


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert hub_cache_dir() == tmp_path / "home" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "elsewhere"))
    assert hub_cache_dir() == tmp_path / "elsewhere"


def test_load_by_id_takes_refs_main(offline):
    adapter = load_model("org/tiny")
    ref = adapter.origin
    assert (ref.id, ref.revision, ref.commit) == ("org/tiny", None, MAIN)
    assert Path(adapter.source) == snapshot(offline, MAIN)
    assert ref.weights == "model.safetensors.index.json" and ref.shards == 5
    assert ref.weights_sha256 == sha256(offline["sharded"] / "model.safetensors.index.json")


def test_load_by_branch_and_by_commit(offline):
    v1 = resolve_model("org/tiny@v1")
    assert (v1.commit, v1.revision, v1.weights, v1.shards) == (V1, "v1", "model.safetensors", 1)
    assert v1.weights_sha256 == sha256(offline["single"] / "model.safetensors")
    raw = load_model(f"org/tiny@{V1}").origin
    assert (raw.commit, raw.revision) == (V1, V1)
    assert resolve_model(f"org/tiny@{MAIN}").weights == "model.safetensors.index.json"


def test_sharded_loads_equal_to_single_file(offline):
    sharded, single = load_model("org/tiny"), load_model(offline["single"])
    a, b = sharded.model.state_dict(), single.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(logits(sharded), logits(single))
    # the plain local sharded directory loads too
    assert torch.equal(logits(load_model(offline["sharded"])), logits(single))


def test_device_map_auto_and_dtype_auto_on_cpu(offline, tmp_path):
    from transformers import LlavaForConditionalGeneration

    spread = load_model("org/tiny", device_map="auto", dtype="auto")
    assert spread.model.device.type == "cpu" and spread.model.dtype == torch.float32
    assert torch.equal(logits(spread), logits(load_model(offline["single"])))
    half = tmp_path / "bf16"
    shutil.copytree(offline["single"], half, ignore=shutil.ignore_patterns("model.safetensors"))
    LlavaForConditionalGeneration.from_pretrained(offline["single"], dtype=torch.bfloat16).save_pretrained(half)
    assert load_model(half, dtype="auto").model.dtype == torch.bfloat16
    assert load_model(half).model.dtype == torch.float32
    with pytest.raises(AdapterError, match="--dtype 'int3'"):
        load_model(half, dtype="int3")


def test_a_directory_inside_the_cache_knows_its_id_and_commit(offline):
    ref = resolve_model(snapshot(offline, V1))
    assert (ref.id, ref.commit) == ("org/tiny", V1)
    plain = resolve_model(offline["single"])
    assert (plain.id, plain.commit, plain.weights) == (None, None, "model.safetensors")


def test_offline_and_not_cached_is_one_line_with_the_fetch_command(offline):
    with pytest.raises(AdapterError) as e:
        load_model("org/missing")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("org/missing:")
    assert str(offline["cache"]) in msg and "`hf download org/missing`" in msg and "HF_HUB_OFFLINE" in msg
    with pytest.raises(AdapterError, match=r"hf download org/tiny --revision nope"):
        load_model("org/tiny@nope")


def test_bad_local_inputs_are_named(offline, tmp_path):
    (tmp_path / "weights.safetensors").write_bytes(b"x")
    with pytest.raises(AdapterError, match="a file, not a model directory"):
        resolve_model(tmp_path / "weights.safetensors")
    with pytest.raises(AdapterError, match=r"not a directory, and not a hub id"):
        resolve_model(str(tmp_path / "nope"))
    with pytest.raises(AdapterError, match=r"a/b/c: not a directory, and not a hub id"):
        resolve_model("a/b/c")
    pickles = tmp_path / "pickles"
    pickles.mkdir()
    (pickles / "config.json").write_text(json.dumps({"architectures": ["LlavaForConditionalGeneration"]}))
    (pickles / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(AdapterError, match=r"only PyTorch \.bin .*safetensors.*LlavaForConditionalGeneration"
                                           r".*save_pretrained.*CDVIZ_ALLOW_BIN=1"):
        resolve_model(pickles)
    assert resolve_model(pickles, allow_bin=True).weights == "pytorch_model.bin"
    broken = tmp_path / "broken"
    shutil.copytree(offline["sharded"], broken)
    (broken / "model-00003-of-00005.safetensors").unlink()
    with pytest.raises(AdapterError, match=r"lists 5 shard\(s\) but 1 are missing .*model-00003-of-00005"):
        resolve_model(broken)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(AdapterError, match="no config.json"):
        resolve_model(empty)


def _http_error(cls, status):
    request = httpx2.Request("GET", "https://huggingface.co/api/models/org/x")
    return cls("boom", response=httpx2.Response(status, request=request))


@pytest.mark.parametrize("error, expected", [
    ("RepositoryNotFoundError", r"org/x: no model org/x on the Hub, or it is private .*HF_TOKEN"),
    ("GatedRepoError", r"org/x: a gated model; accept its terms on https://huggingface.co/org/x .*HF_TOKEN"),
    ("RevisionNotFoundError", r"org/x: org/x has no revision 'main'; give a branch"),
])
def test_hub_errors_become_one_line(monkeypatch, tmp_path, error, expected):
    import huggingface_hub
    from huggingface_hub import errors

    def fail(*args, **kwargs):
        raise _http_error(getattr(errors, error), 404)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fail)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(AdapterError, match=expected) as e:
        resolve_model("org/x")
    assert "\n" not in str(e.value)


def test_snapshot_download_gets_only_what_a_model_needs(monkeypatch, offline):
    """The patterns asked for: metadata first, then exactly the shards the index lists; no .bin."""
    import huggingface_hub

    calls = []
    real = huggingface_hub.snapshot_download

    def spy(repo_id, **kwargs):
        calls.append(kwargs)
        return real(repo_id, **kwargs)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", spy)
    resolve_model("org/tiny")
    assert all(c["local_files_only"] for c in calls) and all(c["cache_dir"] == offline["cache"] for c in calls)
    meta, weights = calls
    assert "*.json" in meta["allow_patterns"] and not any("bin" in p or "safetensors" in p for p in meta["allow_patterns"])
    assert weights["revision"] == MAIN
    assert weights["allow_patterns"] == [f"model-0000{i}-of-00005.safetensors" for i in range(1, 6)]


def test_manifest_records_id_commit_and_weight_hash(offline, tmp_path):
    from cdviz.probes.shapes import make_shapes
    from cdviz.record import RecordOptions
    from cdviz.record.recorder import build_manifest

    probes = make_shapes(tmp_path / "probes", n=2, seed=0, image_size=48)
    t, s, _ = load_pair("org/tiny", f"org/tiny@{V1}")
    models = build_manifest({"teacher": t, "student": s}, probes, RecordOptions())["models"]
    assert models["teacher"]["id"] == "org/tiny" and models["teacher"]["commit"] == MAIN
    assert models["teacher"]["weights_sha256"] == sha256(offline["sharded"] / "model.safetensors.index.json")
    assert models["student"]["revision"] == V1 and models["student"]["shards"] == 1
    assert models["teacher"]["path"] == str(snapshot(offline, MAIN).resolve())
    assert models["teacher"]["dtype"] == "float32"
    local = load_model(offline["single"])
    entry = build_manifest({"teacher": local, "student": local}, probes, RecordOptions())["models"]["teacher"]
    assert entry["id"] is None and entry["weights_sha256"] == sha256(offline["single"] / "model.safetensors")


def test_cli_eval_record_finetune_by_hub_id(offline, tmp_path):
    from cdviz.cli import app

    runner = CliRunner()

    def invoke(*args):
        result = runner.invoke(app, [str(a) for a in args])
        assert result.exit_code == 0, result.output
        return result

    probes = tmp_path / "probes"
    invoke("probes", "make", "shapes", "--n", 4, "--image-size", 48, "--out", probes)
    invoke("eval", "--model", "org/tiny", "--probes", probes, "--out", tmp_path / "eval.parquet",
           "--device-map", "auto", "--dtype", "auto")
    summary = json.loads((tmp_path / "eval.summary.json").read_text())
    assert summary["model"] == "org/tiny" and summary["model_origin"]["commit"] == MAIN

    run = tmp_path / "run"
    invoke("record", "--teacher", "org/tiny", "--student", f"org/tiny@{V1}", "--probes", probes, "--out", run,
           "--device", "cpu", "--device-map", "auto", "--shard-size", 2, "--batch-size", 2)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["models"]["teacher"]["commit"] == MAIN and manifest["models"]["student"]["commit"] == V1

    out = tmp_path / "ft"
    recipe = tmp_path / "recipe.json"  # a recipe is a whole config; the flags below override its models
    recipe.write_text(json.dumps({"student": "x/y", "teacher": "x/z", "stages": ["dpt"], "out": str(out),
                                  "shapes_scenes": 8, "shapes_image_size": 48, "batch_size": 2, "progress": False,
                                  "device": "cpu"}))
    invoke("finetune", "--student", f"org/tiny@{V1}", "--teacher", "org/tiny", "--stages", "dpt", "--steps", 3,
           "--recipe", recipe, "--out", out)
    written = json.loads((out / "recipe.json").read_text())
    assert written["student"] == f"org/tiny@{V1}" and written["teacher"] == "org/tiny"
    assert written["models"]["student"]["commit"] == V1 and written["models"]["teacher"]["commit"] == MAIN
    assert written["models"]["teacher"]["weights"] == "model.safetensors.index.json"
    assert load_model(out / "model").n_layers == 2


def test_cli_offline_missing_model_exits_2_with_the_line(offline, tmp_path):
    from cdviz.cli import app

    assert CliRunner().invoke(app, ["probes", "make", "shapes", "--n", "2", "--image-size", "48",
                                    "--out", str(tmp_path / "p")]).exit_code == 0
    result = CliRunner().invoke(app, ["eval", "--model", "org/absent@v2", "--probes", str(tmp_path / "p"),
                                      "--out", str(tmp_path / "x.parquet")])
    assert result.exit_code == 2 and "hf download org/absent --revision v2" in result.output
