"""The `cdviz` command end to end: real files in, clear messages and exit code 2 on bad input."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from cdviz.cli import app
from cdviz.cli.common import parse_layers
from cdviz.types import ProbeError

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_help_lists_commands():
    result = invoke("--help")
    assert result.exit_code == 0
    for cmd in ("probes", "eval", "record", "report", "compare", "finetune", "zoo", "bench"):
        assert cmd in result.output


def test_probes_make_and_show(tmp_path):
    result = invoke("probes", "make", "shapes", "--n", 200, "--seed", 0, "--image-size", 32, "--out", tmp_path / "p")
    assert result.exit_code == 0, result.output
    shown = invoke("probes", "show", tmp_path / "p")
    assert shown.exit_code == 0, shown.output
    assert "200 items" in shown.output
    for cat in ("swap_att", "replace_rel", "counting", "existence"):
        assert cat in shown.output
    assert "perception=160" in shown.output and "recognition=40" in shown.output


def test_unknown_world_and_split_are_named(tmp_path):
    result = invoke("probes", "make", "cubes", "--out", tmp_path / "p")
    assert result.exit_code == 2 and "unknown world 'cubes'" in result.output
    result = invoke("probes", "make", "shapes", "--split", "dev", "--out", tmp_path / "p")
    assert result.exit_code == 2 and "unknown split 'dev'" in result.output


def test_import_jsonl_with_skip_bad(tmp_path):
    from PIL import Image

    Image.new("RGB", (8, 8), (255, 0, 0)).save(tmp_path / "a.png")
    lines = [
        {"image": "a.png", "options": ["a red square .", "a blue square ."], "correct": 0},
        {"image": "a.png", "options": ["only one"], "correct": 0},
        {"image": "missing.png", "options": ["x", "y"], "correct": 1},
    ]
    (tmp_path / "items.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    strict = invoke("probes", "import", "jsonl", tmp_path / "items.jsonl", "--out", tmp_path / "out")
    assert strict.exit_code == 2 and "items.jsonl:2" in strict.output
    ok = invoke("probes", "import", "jsonl", tmp_path / "items.jsonl", "--out", tmp_path / "out", "--skip-bad")
    assert ok.exit_code == 0, ok.output
    meta = json.loads((tmp_path / "out" / "probeset.json").read_text())
    assert meta["n_items"] == 1
    assert [s["where"] for s in meta["skipped"]] == [f"{tmp_path / 'items.jsonl'}:2", f"{tmp_path / 'items.jsonl'}:3"]
    wrong_option = invoke("probes", "import", "jsonl", tmp_path / "items.jsonl", "--out", tmp_path / "o2",
                          "--coco-annotations", tmp_path / "x.json")
    assert wrong_option.exit_code == 2 and "does not apply" in wrong_option.output


def test_unknown_source_lists_available(tmp_path):
    result = invoke("probes", "import", "flickr", tmp_path, "--out", tmp_path / "o")
    assert result.exit_code == 2 and "sugarcrepe" in result.output and "winoground" in result.output


def test_eval_record_report_end_to_end(tiny_model_dir, tmp_path):
    probes = tmp_path / "p"
    assert invoke("probes", "make", "shapes", "--n", 30, "--image-size", 32, "--out", probes).exit_code == 0
    model = tiny_model_dir("llava")
    result = invoke("eval", "--model", model, "--probes", probes, "--out", tmp_path / "eval" / "t.parquet")
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(tmp_path / "eval" / "t.parquet")
    assert len(frame) == 60  # 30 two-option items, both orders
    summary = json.loads((tmp_path / "eval" / "t.summary.json").read_text())
    assert summary["n_items"] == 30 and set(summary["by_skill"]) == {"perception", "recognition"}
    run = tmp_path / "run"
    result = invoke("record", "--teacher", model, "--student", model, "--probes", probes, "--out", run,
                    "--layers", "0-1", "--device", "cpu")
    assert result.exit_code == 0, result.output
    result = invoke("report", run, "--n-boot", 50, "--n-perm", 50)
    assert result.exit_code == 0, result.output
    assert (run / "report" / "index.html").is_file()
    summary = json.loads((run / "report" / "summary.json").read_text())
    assert summary["n_items"] == 30


def test_eval_missing_inputs_are_named(tmp_path):
    (tmp_path / "empty").mkdir()
    result = invoke("eval", "--model", tmp_path / "nope", "--probes", tmp_path / "empty", "--out", tmp_path / "x.parquet")
    assert result.exit_code == 2 and "no items.jsonl" in result.output
    assert invoke("probes", "make", "shapes", "--n", 10, "--image-size", 32, "--out", tmp_path / "p").exit_code == 0
    result = invoke("eval", "--model", tmp_path / "nope", "--probes", tmp_path / "p", "--out", tmp_path / "x.parquet")
    assert result.exit_code == 2 and "not a directory" in result.output
    assert not (tmp_path / "x.parquet").exists()


def test_parse_layers():
    assert parse_layers("0,2-4,2") == (0, 2, 3, 4)
    assert parse_layers(None) is None
    with pytest.raises(ProbeError, match="not a layer number"):
        parse_layers("a-b")


def test_bench_record_prints_ratios_and_memory():
    result = invoke("bench", "record", "--seq-len", 80, "--image-tokens", 16, "--n-layers", 2, "--hidden", 64,
                    "--heads", 4, "--kv-heads", 2, "--intermediate", 128, "--repeats", 1)
    assert result.exit_code == 0, result.output
    for line in ("ratio cdviz / sdpa  (b/a):", "ratio eager / cdviz (c/b):", "stored per sample (fp16):"):
        assert line in result.output
    bad = invoke("bench", "record", "--image-tokens", 15)
    assert bad.exit_code == 2 and "must be a square" in bad.output


def test_bench_train_prints_three_steps_and_ratios():
    result = invoke("bench", "train", "--seq-len", 64, "--image-tokens", 16, "--answer-tokens", 8, "--layers", 3,
                    "--hidden", 64, "--heads", 4, "--teacher-layers", 5, "--teacher-hidden", 96, "--teacher-heads", 4,
                    "--repeats", 1, "--threads", 1)
    assert result.exit_code == 0, result.output
    for row in ("(a) CE+KD, SDPA", "(b) CE+KD+VAT, cdviz capture", "(c) CE+KD+VAT, eager output_attentions"):
        assert row in result.output
    for line in ("ratio (b)/(a) step time", "ratio (c)/(b) step time", "ratio (c)/(b) peak memory", "peak memory: CPU"):
        assert line in result.output
    bad = invoke("bench", "train", "--seq-len", 100, "--image-tokens", 64, "--answer-tokens", 64)
    assert bad.exit_code == 2 and "--seq-len 100 must exceed" in bad.output


def test_finetune_help_documents_the_stages_and_options():
    result = invoke("finetune", "--help")
    assert result.exit_code == 0, result.output
    stage_lines = {line.split()[0]: line for line in result.output.splitlines()
                   if line.split() and line.split()[0] in ("dpt", "dft", "sft", "ce")}
    assert "TAF linear only" in stage_lines["dpt"] and "CE + KD" in stage_lines["dpt"]
    assert "LoRA + TAF" in stage_lines["dft"] and "CE + KD + VAT" in stage_lines["dft"]
    assert "fresh LoRA on the merged model" in stage_lines["sft"] and "CE only" in stage_lines["sft"]
    assert "every weight" in stage_lines["ce"] and "CE only" in stage_lines["ce"]
    for option in ("--teacher", "--student", "--out", "--recipe", "--data", "--stages", "--from-report", "--steps",
                   "--batch-size", "--resume", "accelerate launch"):
        assert option in result.output


@pytest.mark.parametrize("flags, message", [
    (["--teacher-qa-kinds", "qa:colour,questions"], "--teacher-qa-kinds"),
    (["--teacher-ground", "-1"], "must be >= 0"),
    (["--teacher-steps", "0"], "--teacher-steps >= 1"),
])
def test_zoo_build_refuses_bad_teacher_options_before_training(tmp_path, flags, message):
    result = invoke("zoo", "build", "--out", tmp_path / "zoo", *flags)
    assert result.exit_code != 0 and message in result.output
    assert not (tmp_path / "zoo").exists()  # nothing was built


def test_bench_gpu_without_a_gpu_says_so_and_claims_nothing(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = runner.invoke(app, ["bench", "gpu", "--out", str(tmp_path / "gpu")])
    assert result.exit_code == 0 and "no CUDA GPU is visible" in result.output
    assert not (tmp_path / "gpu" / "results.json").exists()
