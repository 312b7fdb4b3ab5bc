"""The one-shot GPU check: its quick CPU mode runs the same path at tiny sizes, and without a GPU
the real mode says so, measures nothing and exits 0."""

from __future__ import annotations

import json

import torch

from cdviz.bench import gpu_check


def test_no_gpu_says_so_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(["--out", str(tmp_path / "out")]) == 0
    said = capsys.readouterr().out
    assert "no CUDA GPU is visible" in said and "nothing was measured" in said
    assert not (tmp_path / "out").exists()


def test_quick_cpu_mode_records_and_trains(tmp_path, capsys):
    out = tmp_path / "out"
    assert gpu_check.main(["--quick", "--device", "cpu", "--out", str(out), "--only", "record,train",
                           "--steps", "1", "--repeats", "1"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["quick"] and results["dtype"] == "bfloat16"
    assert [r["preset"] for r in results["record"]] == ["qwen2.5-vl-7b", "qwen3-vl-8b"]
    for r in results["record"]:
        assert r["image_tokens"] == 16 and r["grid"] == [4, 4]
        assert all(r[k]["median_s"] > 0 for k in ("sdpa", "cdviz", "eager"))
        assert r["max_abs_diff_t2i_last_layer"] < 2e-3  # bf16 eager maps vs cdviz's float32 softmax
    train = results["train"]
    for variant in ("ce+kd", "ce+kd+vat (cdviz)", "ce+kd+vat (eager maps)"):
        assert train[variant]["steps"] == 2  # warm-up + 1 timed
        assert all(torch.isfinite(torch.tensor(v)) for v in train[variant]["last"].values())
    assert "vat" in train["ce+kd+vat (cdviz)"]["last"]
    md = (out / "results.md").read_text()
    assert "(a) record: qwen2.5-vl-7b" in md and "(b) train" in md


def test_presets_are_the_published_shapes():
    p7, p3 = gpu_check.PRESETS["qwen2.5-vl-7b"]["text"], gpu_check.PRESETS["qwen2.5-vl-3b"]["text"]
    assert (p7["hidden_size"], p7["num_hidden_layers"], p7["num_attention_heads"], p7["num_key_value_heads"]) == \
        (3584, 28, 28, 4)
    assert (p3["hidden_size"], p3["num_hidden_layers"], p3["num_attention_heads"], p3["num_key_value_heads"]) == \
        (2048, 36, 16, 2)
    assert p3["vocab_size"] <= p7["vocab_size"]  # KD: the student's vocabulary is a prefix of the teacher's
    for preset in gpu_check.PRESETS.values():
        text = preset["text"]
        head_dim = text.get("head_dim") or text["hidden_size"] // text["num_attention_heads"]
        assert sum(text["rope_parameters"]["mrope_section"]) == head_dim // 2
