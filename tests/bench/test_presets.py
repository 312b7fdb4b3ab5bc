"""Real-scale presets (cdviz.bench.presets): the typed-in published configs construct as transformers
config objects, their parameter counts (computed from the config, nothing allocated) are the
published sizes, and the memory table is the hand computation."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from cdviz.bench import gpu_check
from cdviz.bench.presets import PRESETS, build, memory_row, memory_table, param_count, preset_config
from cdviz.cli import app
from cdviz.errors import OptionError

REQUIRED = ("llava-1.5-7b", "llava-onevision-qwen2-0.5b", "llava-onevision-qwen2-7b", "qwen2.5-vl-3b",
            "qwen2.5-vl-7b", "qwen3-vl-2b", "qwen3-vl-8b", "internvl3-1b", "internvl3-8b", "gemma-3-4b")
#: (hidden, layers, heads, kv heads) of each published config.
SHAPES = {"llava-1.5-7b": (4096, 32, 32, 32), "llava-onevision-qwen2-0.5b": (896, 24, 14, 2),
          "llava-onevision-qwen2-7b": (3584, 28, 28, 4), "qwen2.5-vl-3b": (2048, 36, 16, 2),
          "qwen2.5-vl-7b": (3584, 28, 28, 4), "qwen3-vl-2b": (2048, 28, 16, 8), "qwen3-vl-8b": (4096, 36, 32, 8),
          "internvl3-1b": (896, 24, 14, 2), "internvl3-8b": (3584, 28, 28, 4), "gemma-3-4b": (2560, 34, 8, 4)}
#: Nominal sizes from the model names (LLaVA-OneVision 0.5B and InternVL3-1B: their whole checkpoint).
NOMINAL = {"llava-1.5-7b": 7e9, "llava-onevision-qwen2-0.5b": 0.9e9, "llava-onevision-qwen2-7b": 8e9,
           "qwen2.5-vl-3b": 3.75e9, "qwen2.5-vl-7b": 8.3e9, "qwen3-vl-2b": 2.1e9, "qwen3-vl-8b": 8.8e9,
           "internvl3-1b": 0.94e9, "internvl3-8b": 8e9, "gemma-3-4b": 4.3e9}


def test_every_required_preset_is_there():
    assert set(REQUIRED) <= set(PRESETS)


@pytest.mark.parametrize("name", REQUIRED)
def test_config_constructs_with_the_typed_numbers(name):
    cfg = preset_config(name)
    text = cfg.get_text_config()
    assert (text.hidden_size, text.num_hidden_layers, text.num_attention_heads, text.num_key_value_heads) == SHAPES[name]
    assert text.vocab_size == PRESETS[name]["text"]["vocab_size"]
    assert text.intermediate_size == PRESETS[name]["text"]["intermediate_size"]
    assert cfg.architectures == [PRESETS[name]["arch"]]
    assert preset_config(name, layers=1).get_text_config().num_hidden_layers == 1


@pytest.mark.parametrize("name", REQUIRED)
def test_parameter_count_is_the_published_size(name):
    count = param_count(name)
    for size in (PRESETS[name]["published_params"], NOMINAL[name]):
        assert abs(count - size) / size < 0.15, (name, count, size)


@pytest.mark.parametrize("name", ["qwen2.5-vl-3b", "gemma-3-4b", "internvl3-1b", "llava-onevision-qwen2-0.5b"])
def test_parameter_count_equals_the_model_built_on_meta(name):
    adapter = build(name, layers=1, device="meta")  # shapes only: nothing is allocated
    assert sum(p.numel() for p in adapter.model.parameters()) == param_count(name, layers=1)
    assert adapter.n_layers == 1 and len(adapter.attention_modules()) == 1


def test_memory_row_by_hand():
    # 2 layers, 4 heads, T = 8, N = 3 image tokens, Q = 1 row, bf16 eager
    row = memory_row(layers=2, heads=4, seq_len=8, image_tokens=3, query_rows=1, dtype_bytes=2)
    assert row["eager_bytes"] == 2 * 4 * 8 * 8 * 2
    assert row["cdviz_transient_bytes"] == (2 * 5 * 3 * 3 + 4 * 1 * 8) * 4
    assert row["cdviz_kept_bytes"] == 2 * (4 * 3 + 2 * 4 + 2 * 4 * 3 + 3) * 4
    assert row["cdviz_bytes"] == row["cdviz_transient_bytes"] + row["cdviz_kept_bytes"]


def test_memory_table_of_qwen25_vl_7b():
    rows = memory_table("qwen2.5-vl-7b")
    assert [r["T"] for r in rows] == [1024, 2048, 4096, 8192]
    r = rows[1]  # T = 2048, N = 1024
    assert r["eager_bytes"] == 28 * 28 * 2048 * 2048 * 2  # 6.1 GiB
    assert r["cdviz_bytes"] == (2 * 29 * 1024 ** 2 + 28 * 2048) * 4 + 28 * (28 * 1024 + 56 + 56 * 1024 + 1024) * 4
    assert all(r["eager_bytes"] > 20 * r["cdviz_bytes"] for r in rows)
    assert memory_table("qwen2.5-vl-7b", layers=1)[0]["eager_bytes"] == rows[0]["eager_bytes"] // 28


def test_cli_memory_table_builds_nothing():
    result = CliRunner().invoke(app, ["bench", "record", "--preset", "qwen2.5-vl-3b", "--layers", "1",
                                      "--memory-table"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "qwen2.5-vl-3b" in result.output and "8,192" in result.output and "eager / cdviz" in result.output


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(OptionError, match="qwen2.5-vl-7b.*gemma-3-4b"):
        memory_table("qwen9-vl-1t")
    result = CliRunner().invoke(app, ["bench", "record", "--preset", "qwen9-vl-1t", "--memory-table"])
    assert result.exit_code == 2 and "llava-1.5-7b" in result.output
    result = CliRunner().invoke(app, ["bench", "train", "--preset", "qwen9-vl-1t"])
    assert result.exit_code == 2 and "internvl3-8b" in result.output


def test_gpu_check_reads_the_presets():
    assert gpu_check.PRESETS["qwen2.5-vl-7b"]["text"] is PRESETS["qwen2.5-vl-7b"]["text"]


def test_train_bench_takes_the_preset_shapes():
    from cdviz.bench.train import TrainBenchConfig, with_presets

    cfg = with_presets(TrainBenchConfig(), student="qwen3-vl-2b", teacher="qwen3-vl-8b", layers=2, teacher_layers=3)
    assert (cfg.layers, cfg.hidden, cfg.heads, cfg.kv_heads, cfg.head_dim, cfg.intermediate) == (2, 2048, 16, 8, 128,
                                                                                                  6144)
    assert (cfg.teacher_layers, cfg.teacher_hidden, cfg.teacher_heads, cfg.teacher_kv_heads) == (3, 4096, 32, 8)
    assert cfg.vocab == 151936 and cfg.preset == "qwen3-vl-2b" and cfg.teacher_preset == "qwen3-vl-8b"
    cfg.check()
