"""Configuration: stage defaults, recipe files (the shipped examples parse), the CLI mapping."""

from __future__ import annotations

from pathlib import Path

import pytest

import cdviz.train
from cdviz.train.config import ConfigError, StageConfig, TrainConfig, finetune_cli_args_to_config, load_recipe

RECIPES = sorted((Path(cdviz.train.__file__).parent / "recipes").glob("*"))


def test_stage_defaults_follow_the_paper():
    dpt, dft, sft, ce = (StageConfig(n) for n in ("dpt", "dft", "sft", "ce"))
    assert (dpt.parts, dpt.kd, dpt.vat) == ({"taf"}, 1.0, 0.0)
    assert (dft.parts, dft.kd, dft.vat) == ({"lora", "taf"}, 1.0, 1.0)
    assert (sft.parts, sft.kd, sft.needs_teacher) == ({"lora", "taf"}, 0.0, False)
    assert (ce.parts, ce.needs_teacher) == ({"all"}, False)
    assert dft.lr == 2e-4 and dft.warmup_ratio == 0.03 and dft.weight_decay == 0.0 and dft.lora_dropout == 0.05


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_shipped_recipes_parse_and_say_how_to_launch(path):
    assert "Launch" in path.read_text().splitlines()[2] or "Launch" in path.read_text()[:600]
    cfg = load_recipe(path)
    assert cfg.stages and cfg.out


def test_recipe_formats_and_unknown_keys(tmp_path):
    (tmp_path / "r.json").write_text('{"student": "s", "out": "o", "stages": ["ce"], "stage": {"ce": {"steps": 3}}}')
    assert load_recipe(tmp_path / "r.json").stages[0].steps == 3
    (tmp_path / "r.yaml").write_text("student: s\nout: o\nstages: [ce]\nbatch_size: 2\n")
    assert load_recipe(tmp_path / "r.yaml").batch_size == 2
    (tmp_path / "bad.toml").write_text('student = "s"\nout = "o"\nstages = ["ce"]\nlearning_rate = 1\n')
    with pytest.raises(ConfigError, match="unknown setting.*learning_rate"):
        load_recipe(tmp_path / "bad.toml")


def test_cli_args_map_onto_a_config(tmp_path):
    cfg = finetune_cli_args_to_config(teacher="t", student="s", data="d.jsonl", stages="dpt,dft",
                                      from_report="runs/x", out="o", resume=True, steps=5, batch_size=2)
    assert [s.name for s in cfg.stages] == ["dpt", "dft"] and all(s.steps == 5 for s in cfg.stages)
    assert (cfg.teacher, cfg.from_report, cfg.resume, cfg.batch_size) == ("t", "runs/x", True, 2)
    recipe = tmp_path / "r.toml"
    recipe.write_text('teacher = "t"\nstudent = "s"\nout = "o"\n[stage.dft]\nsteps = 9\n')
    cfg = finetune_cli_args_to_config(recipe=recipe, stages="dft", out="o2")
    assert cfg.out == "o2" and cfg.stages[0].steps == 9


def test_config_errors_name_the_fix():
    with pytest.raises(ConfigError, match="--teacher"):
        TrainConfig(student="s", out="o")
    with pytest.raises(ConfigError, match="unknown stage"):
        StageConfig("kd")
    with pytest.raises(ConfigError, match="trainable"):
        StageConfig("ce", trainable="everything")
    with pytest.raises(ConfigError, match="--out"):
        finetune_cli_args_to_config(student="s")
