"""Bad recipes and broken training: every field is checked before any model loads, with
an error naming the file, the stage and the fix; a NaN loss stops training; a resumed stage logs
exactly one metrics row per step."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from cdviz.cli import app
from cdviz.layer_map import LayerMapError
from cdviz.train import ConfigError, StageConfig, TrainConfig, finetune
from cdviz.train.config import load_recipe
from cdviz.train.recipe import TrainingError
from cdviz.train.tracking import read_metrics

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")
SMALL = dict(shapes_scenes=20, shapes_image_size=32, batch_size=4, progress=False)
HEAD = 'student = "no/such/student"\nteacher = "no/such/teacher"\nout = "OUT"\nstages = ["dpt", "dft"]\n'


class Stop(Exception):
    pass


@pytest.mark.parametrize("body, message", [
    ("[stage.dft]\nsteps = 0\n", "stage dft: steps = 0; give a whole number >= 1"),
    ("[stage.dft]\nsteps = -3\n", "stage dft: steps = -3; give a whole number >= 1"),
    ("[stage.dpt]\nlr = -1\n", "stage dpt: lr = -1; give a number > 0"),
    ('[stage.dpt]\nlr = "fast"\n', "stage dpt: lr = 'fast'; give a number > 0"),
    ("[stage.dpt]\nbatch_size = 0\n", "stage dpt: batch_size = 0; give a whole number >= 1"),
    ("[stage.dft]\nvat = -1.0\n", "stage dft: vat = -1.0; give a number >= 0"),
    ("[stage.dft]\nwarmup_ratio = 2\n", "stage dft: warmup_ratio = 2; give a number >= 0 and <= 1"),
    ("batch_size = 0\n", "setting: batch_size = 0; give a whole number >= 1"),
    ("log_every = 0\n", "setting: log_every = 0"),
    ("[stage.dft]\nstep = 5\n", "stage dft: unknown setting(s) ['step']"),
    ("[stage.dft\nsteps = 5\n", "not valid TOML"),
])
def test_recipe_fields_are_checked_and_named(tmp_path, body, message):
    recipe = tmp_path / "r.toml"
    recipe.write_text(HEAD + body)
    with pytest.raises(ConfigError) as err:
        load_recipe(recipe)
    assert str(err.value).startswith(str(recipe)) and message in str(err.value), str(err.value)
    result = CliRunner().invoke(app, ["finetune", "--recipe", str(recipe)])
    assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output
    assert "Traceback" not in result.output and not (tmp_path / "OUT").exists()


def test_steps_flag_and_yaml_json_syntax(tmp_path):
    result = CliRunner().invoke(app, ["finetune", "--student", "s", "--teacher", "t", "--out", str(tmp_path / "o"),
                                      "--steps", "0"])
    assert result.exit_code == 2 and "--steps = 0; give a whole number >= 1" in result.output
    result = CliRunner().invoke(app, ["finetune", "--student", "s", "--teacher", "t", "--out", str(tmp_path / "o"),
                                      "--batch-size", "0"])
    assert result.exit_code == 2 and "batch_size = 0" in result.output
    (tmp_path / "r.json").write_text('{"student": "s",\n "out": }')
    with pytest.raises(ConfigError, match=r"r.json:2: not valid JSON"):
        load_recipe(tmp_path / "r.json")
    (tmp_path / "r.yaml").write_text("student: s\n  out: [o\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_recipe(tmp_path / "r.yaml")
    (tmp_path / "list.yaml").write_text("- s\n")
    with pytest.raises(ConfigError, match="a recipe is a mapping"):
        load_recipe(tmp_path / "list.yaml")
    assert StageConfig("dft", steps=None).steps is None  # None still means "one epoch"


def test_from_report_without_targets_fails_before_any_stage_trains(tmp_path):
    run = tmp_path / "run"
    (run / "report").mkdir(parents=True)
    (run / "report" / "summary.json").write_text(json.dumps(
        {"recommended_targets": {"student_layers": [], "teacher_groups": [], "source": "no layer passes"}}))
    cfg = TrainConfig(student="no/such/student", teacher="no/such/teacher", out=str(tmp_path / "out"),
                      from_report=str(run), stages=[StageConfig("dpt"), StageConfig("dft")])
    with pytest.raises(LayerMapError, match="recommends no target layers .*drop --from-report"):
        finetune(cfg)
    assert not (tmp_path / "out").exists()


def test_a_resumed_stage_without_checkpoint_logs_each_step_once(pair_dirs, tmp_path):
    _, student = pair_dirs

    def config(resume=False):
        return TrainConfig(student=str(student), out=str(tmp_path / "run"), resume=resume,
                           stages=[StageConfig("ce", steps=4, lr=1e-3)], checkpoint_every=0, **SMALL)

    def kill_after_2(row):
        if row["step"] == 2:
            raise Stop

    with pytest.raises(Stop):
        finetune(config(), on_step=kill_after_2)
    log = tmp_path / "run" / "ce" / "metrics.jsonl"
    assert [r["step"] for r in read_metrics(log)] == [1, 2]
    finetune(config(resume=True))  # no checkpoint yet: the stage starts over at step 0
    assert [r["step"] for r in read_metrics(log)] == [1, 2, 3, 4]


def test_a_nan_loss_stops_training_naming_stage_and_step(pair_dirs, tmp_path):
    from safetensors.torch import load_file, save_file

    _, student = pair_dirs
    broken = tmp_path / "nan-student"
    shutil.copytree(student, broken)
    tensors = load_file(str(broken / "model.safetensors"))
    key = next(k for k in tensors if k.endswith("model.norm.weight"))
    tensors[key][0] = float("nan")
    save_file(tensors, str(broken / "model.safetensors"), metadata={"format": "pt"})
    cfg = TrainConfig(student=str(broken), out=str(tmp_path / "run"), stages=[StageConfig("ce", steps=3)], **SMALL)
    with pytest.raises(TrainingError, match=r"stage ce, step 1 of 3: loss is not finite .*--resume"):
        finetune(cfg)
    assert not (tmp_path / "run" / "model").exists()
