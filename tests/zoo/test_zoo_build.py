"""``cdviz zoo build`` and ``cdviz zoo variations`` end to end at toy scale (minutes of CPU at full scale)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from cdviz.train.tracking import read_metrics
from cdviz.zoo.clock import BUILD_PHASES, build_time
from cdviz.zoo import MODELS, VARIATIONS, ZooSpec, build_seeds, build_variations, build_zoo, evaluate_zoo, sha256

TOY = replace(ZooSpec(), image_size=32, vision_hidden=32, hidden=32, teacher_layers=4, teacher_heads=2,
              student_layers=2, student_heads=2, teacher_mlp=64, student_mlp=64, vision_steps=2, teacher_steps=3,
              teacher_ground=1.0, teacher_qa_steps=2, teacher_bind_steps=2, teacher_more_steps=2,
              teacher_presence_steps=2, student_steps=6, dpt_steps=2, sft_steps=2, batch_size=2,
              shapes_scenes=12, heldout_items=40, record_items=16, check_items=10, text_only_items=200)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    out = tmp_path_factory.mktemp("zoo")
    return out, build_zoo(out, TOY, log=lambda m: None)


def test_build_writes_four_models_and_a_manifest_that_matches_them(zoo):
    out, manifest = zoo
    assert json.loads((out / "manifest.json").read_text()) == manifest
    for name in MODELS:
        entry = manifest["models"][name]
        assert entry["sha256"]["model.safetensors"] == sha256(out / name / "model.safetensors")
        assert entry["config"]["layers"] == (TOY.teacher_layers if name == "teacher" else TOY.student_layers)
        assert 0 <= entry["metrics"]["check"]["accuracy"] <= 100
        assert entry["metrics"]["protocol"] == "match" and entry["metrics"]["check"]["protocol"] == "match"
        for control in ("blind", "letters"):
            assert set(entry["metrics"][control]["by_category"]) == set(entry["metrics"]["by_category"])
        assert entry["metrics"]["blind"]["measure"] == "pairwise"
        assert entry["metrics"]["letters"]["measure"] == "consistent"
    assert {"student-kd", "student-compodistill"} == set(manifest["misalignment_by_layer"])
    assert set(manifest["text_only"]["by_category"]) <= set(manifest["models"]["teacher"]["metrics"]["by_category"])
    assert all(0 <= v <= 100 for v in manifest["text_only"]["by_category"].values())
    assert manifest["error_link"]["target_layers"] == manifest["compodistill_targets"]["student_layers"]
    readme = (out / "README.md").read_text()
    assert readme.count("| teacher |") == 2  # the main table and the strict / letters table
    assert "| text only (bag of words) |" in readme and "## Design goals, checked" in readme
    phases = manifest["build_time"]["phases"]
    assert manifest["build_time"]["uninterrupted"] and manifest["build_time"]["runs"] == 1
    assert {"teacher: full mix", "teacher: presence", "student-kd", "student-compodistill",
            "evaluate the four models and the controls"} <= set(phases) and all(v >= 0 for v in phases.values())
    assert set(phases) <= set(BUILD_PHASES)  # the README lists them in BUILD_PHASES' order
    assert manifest["build_time"]["minutes"] == round(sum(phases.values()) / 60, 1)
    on_disk = sum(f.stat().st_size for n in MODELS for f in (out / n).iterdir() if f.is_file()) / 2 ** 20
    assert manifest["checkpoint_megabytes"] == pytest.approx(on_disk, abs=0.01)
    assert "## Build time" in readme and "| teacher: full mix |" in readme
    assert f"({manifest['checkpoint_megabytes']:.1f} MB) -> holds" in readme
    assert "build <= 60 minutes on 2 CPU cores (" in readme  # timed: one process, this machine's 2 cores
    # The teacher: grounded QA first, then the mix without match queries, then the full mix, all
    # with grounding; the students without it.
    qa = read_metrics(out / ".build" / "teacher-qa" / "ce" / "metrics.jsonl")
    bind = read_metrics(out / ".build" / "teacher-bind" / "ce" / "metrics.jsonl")
    full = read_metrics(out / ".build" / "teacher" / "ce" / "metrics.jsonl")
    assert (len(qa), len(bind), len(full)) == (TOY.teacher_qa_steps, TOY.teacher_bind_steps, TOY.teacher_steps)
    assert all("loss/ground" in r for r in qa + bind + full)
    kinds = {phase: json.loads((out / ".build" / phase / "recipe.json").read_text())["shapes_kinds"]
             for phase in ("teacher-qa", "teacher-bind", "teacher")}
    assert kinds == {"teacher-qa": list(TOY.teacher_qa_kinds), "teacher-bind": list(TOY.teacher_bind_kinds),
                     "teacher": None}
    assert all("loss/ground" not in r for r in read_metrics(out / ".build" / "student-kd" / "ce" / "metrics.jsonl"))
    assert "grounding loss" in readme and "first 2 steps on the short questions alone (qa:colour)" in readme
    assert "then 2 steps on caption, choice, qa" in readme and "a route loss (weight 1.0, teacher layers 0)" in readme
    assert all("loss/route" in r for r in qa + full)
    more = read_metrics(out / ".build" / "teacher-more" / "ce" / "metrics.jsonl")
    assert len(more) == TOY.teacher_more_steps and max(r["lr"] for r in more) <= TOY.teacher_more_lr
    assert "then 2 more on the full mix from a peak learning rate of 0.0005" in readme
    # Last, existence questions with the presence loss; the students distil that teacher.
    presence = read_metrics(out / ".build" / "teacher-presence" / "ce" / "metrics.jsonl")
    assert len(presence) == TOY.teacher_presence_steps and all("loss/presence" in r for r in presence)
    recipe = json.loads((out / ".build" / "teacher-presence" / "recipe.json").read_text())
    assert (recipe["shapes_kinds"], recipe["ground_share"]) == (["presence"], "row")
    kd = json.loads((out / ".build" / "student-kd" / "recipe.json").read_text())
    assert kd["teacher"] == str(out / ".build" / "teacher-presence" / "model")
    assert "2 steps on existence questions with hard negatives and the presence loss" in readme
    assert "--teacher-presence-steps 2" in manifest["build_command"]
    # The fix: KD + VAT + answer-row text-to-image alignment in DFT, at the zoo's t2i weight.
    cd = json.loads((out / ".build" / "student-compodistill" / "recipe.json").read_text())
    assert [(s["name"], s["vat"], s["t2i"]) for s in cd["stages"]] == [("dpt", 0.0, 0.0), ("dft", 1.0, TOY.fix_t2i),
                                                                          ("sft", 0.0, 0.0)]
    dft = read_metrics(out / ".build" / "student-compodistill" / "dft" / "metrics.jsonl")
    assert all("loss/vat" in r and "loss/t2i" in r for r in dft)
    assert f"answer-row text-to-image alignment (weight {TOY.fix_t2i}" in readme


def test_rebuild_resumes_without_retraining(zoo):
    out, manifest = zoo
    before = {n: sha256(out / n / "model.safetensors") for n in MODELS}
    again = build_zoo(out, TOY, log=lambda m: None)
    assert {n: again["models"][n]["sha256"]["model.safetensors"] for n in MODELS} == before
    # a second process worked on this build: its time is no longer a measurement of the budget
    assert again["build_time"]["runs"] == 2 and not again["build_time"]["uninterrupted"]
    assert "resumed over 2 processes" in (out / "README.md").read_text()


def test_variations_change_one_thing_each_and_are_reported(zoo):
    out, _ = zoo
    results = build_variations(out, TOY, names=("all-layers", "vat-only", "t2i-only"), log=lambda m: None)
    assert set(results) == {"all-layers", "vat-only", "t2i-only"}
    recipe = json.loads((out / ".build" / "variants" / "all-layers" / "recipe.json").read_text())
    assert recipe["student_layers"] == list(range(TOY.student_layers))

    def dft(name):
        stages = json.loads((out / ".build" / "variants" / name / "recipe.json").read_text())["stages"]
        return next((s["vat"], s["t2i"]) for s in stages if s["name"] == "dft")

    # Each drops or changes one ingredient of the shipped DFT (VAT 1 + t2i at the zoo's weight).
    assert (dft("all-layers"), dft("vat-only"), dft("t2i-only")) == ((1.0, TOY.fix_t2i), (1.0, 0.0), (0.0, 1.0))
    readme = (out / "README.md").read_text()
    for name in results:
        assert f"| {name} | {VARIATIONS[name][0]} |" in readme
    assert "i2i:vat_cosine / t2i:js by student layer" in readme
    rows = [readme.index(f"| {name} | ") for name in ("vat-only", "t2i-only", "all-layers")]
    assert rows == sorted(rows)  # the defined order, not the order they were run in
    assert json.loads((out / "variations.json").read_text()).keys() == results.keys()


def test_seeds_add_student_runs_and_an_interval_over_seeds(zoo):
    out, _ = zoo
    seeds = build_seeds(out, TOY, seeds=(1,), log=lambda m: None)
    assert set(seeds["runs"]) == {"0", "1"}
    shipped = json.loads((out / "manifest.json").read_text())["compodistill_targets"]["student_layers"]
    assert seeds["runs"]["0"]["target_layers"] == sorted(shipped)
    for run in seeds["runs"].values():
        assert {"recognition", "perception"} <= set(run["kd"]) and "recovered" in run
        assert {"target_vat_kd", "target_vat_cd", "target_t2i_kd", "target_t2i_cd"} <= set(run)
    assert json.loads((out / "manifest.json").read_text())["seeds"] == seeds
    assert "## Student seeds" in (out / "README.md").read_text()
    kd1 = out / ".build" / "seed-1" / "student-kd" / "recipe.json"
    assert json.loads(kd1.read_text())["seed"] == 1 and json.loads(kd1.read_text())["shapes_seed"] == TOY.seed
    with pytest.raises(ValueError, match="shipped pair"):
        build_seeds(out, TOY, seeds=(TOY.seed,), log=lambda m: None)


def test_evaluate_remeasures_without_touching_the_weights(zoo):
    out, manifest = zoo
    again = evaluate_zoo(out, protocol="letters", log=lambda m: None)
    assert again["spec"]["protocol"] == "letters" and again["evaluate_command"].endswith("--protocol letters")
    assert again["build_command"] == manifest["build_command"]  # how the models were built, not re-measured
    for name in MODELS:
        assert again["models"][name]["sha256"] == manifest["models"][name]["sha256"]
        metrics = again["models"][name]["metrics"]
        assert metrics["check"]["protocol"] == "letters" and "match" in metrics and "consistent_mean_over_categories" in metrics
    assert again["compodistill_targets"] == manifest["compodistill_targets"]
    assert again["build_time"] == build_time(out / ".build" / "timings.json")  # the weights' build, unchanged
    assert "Re-measured without retraining" in (out / "README.md").read_text()
    with pytest.raises(Exception, match="choose letters or match"):
        evaluate_zoo(out, protocol="likelihood", log=lambda m: None)
    evaluate_zoo(out, protocol="match", log=lambda m: None)  # leave the zoo as the other tests expect


def test_seeds_need_a_trained_teacher(tmp_path):
    with pytest.raises(FileNotFoundError, match="no trained teacher"):
        build_seeds(tmp_path, TOY, seeds=(1,), log=lambda m: None)


def test_variations_need_a_built_zoo(tmp_path):
    with pytest.raises(FileNotFoundError, match="build the zoo first"):
        build_variations(tmp_path, TOY)


def test_unknown_variation_is_named_before_any_training(zoo):
    out, _ = zoo
    with pytest.raises(KeyError, match="unknown variation 'vat-x9'"):
        build_variations(out, TOY, names=("vat-weight-4", "vat-x9"), log=lambda m: None)
    assert not (out / ".build" / "variants" / "vat-weight-4").exists()
