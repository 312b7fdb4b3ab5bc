"""The design goals checked in checkpoints/README.md (``cdviz.zoo.readme.design_goals``): each
verdict follows the numbers it states, on hand-made manifests where the answer is known."""

from __future__ import annotations

import copy

import pytest

from cdviz.zoo.readme import PERCEPTION, RECOGNITION, design_goals, render_readme
from cdviz.zoo.variations import _seed_aggregate  # the interval the manifest's seeds carry


def _metrics(recognition: float, perception: float, blind: float = 50.0) -> dict:
    cats = {c: {"pairwise": recognition} for c in RECOGNITION} | {c: {"pairwise": perception} for c in PERCEPTION}
    return {"protocol": "match", "by_category": cats,
            "by_skill": {"recognition": {"pairwise": recognition}, "perception": {"pairwise": perception}},
            "pairwise_mean_over_categories": perception, "strict_mean_over_categories": 10.0,
            "blind": {"perception_mean": blind}}


def _run(kd_perc, cd_perc, teacher_perc, vat=(0.18, 0.10), t2i=(0.45, 0.15), rec=(80.0, 80.0)):
    gap = teacher_perc - kd_perc
    return {"kd": {"recognition": rec[0], "perception": kd_perc},
            "compodistill": {"recognition": rec[1], "perception": cd_perc}, "target_layers": [1],
            "recovered": (cd_perc - kd_perc) / gap, "target_vat_kd": vat[0], "target_vat_cd": vat[1],
            "target_t2i_kd": t2i[0], "target_t2i_cd": t2i[1]}


def _manifest(shares=(0.5, 0.6, 0.55), lower=True) -> dict:
    teacher, kd = 95.0, 60.0
    runs = {}
    for seed, share in enumerate(shares):
        vat = (0.18, 0.10) if lower else (0.10, 0.18)
        runs[str(seed)] = _run(kd, kd + share * (teacher - kd), teacher, vat=vat)
    return {"spec": {"protocol": "match", "fix_t2i": 1.0, "teacher_layers": 6},
            "build_command": "cdviz zoo build --out checkpoints --seed 0",
            "heldout": {"command": "cdviz probes make shapes"},
            "models": {"teacher": {"config": {"layers": 6, "heads": 6, "hidden": 96}, "metrics": _metrics(96, teacher)},
                       "student-kd": {"config": {"layers": 3, "heads": 3, "hidden": 96}, "metrics": _metrics(92, kd)},
                       "student-compodistill": {"config": {"layers": 3, "heads": 3, "hidden": 96},
                                                "metrics": _metrics(92, kd + shares[0] * (teacher - kd))}},
            "misalignment_by_layer": {}, "compodistill_targets": {"student_layers": [1], "source": "report"},
            "seeds": _seed_aggregate(runs)}


def _goal(manifest: dict, start: str) -> str:
    return next(g for g in design_goals(manifest) if g.startswith(start))


def test_every_goal_holds_when_every_number_meets_it():
    goals = design_goals(_manifest())
    assert all(g.endswith("-> holds") for g in goals), goals


@pytest.mark.parametrize("shares, holds", [((0.5, 0.6, 0.55), True), ((0.2, 0.25, 0.3), False),
                                            ((0.9, -0.5, 0.7), False)])  # mean >= 1/3 but the interval spans 0
def test_recovery_needs_a_third_of_the_gap_with_an_interval_above_zero(shares, holds):
    goal = _goal(_manifest(shares), "student-compodistill recovers")
    assert goal.endswith("-> holds") == holds, goal


def test_recovery_needs_lower_misalignment_in_the_target_layers_in_every_seed():
    goal = _goal(_manifest(lower=False), "student-compodistill recovers")
    assert "i2i:vat_cosine no, t2i:js yes" in goal and goal.endswith("-> does NOT hold")
    one_seed = _manifest()
    one_seed["seeds"]["runs"]["2"]["target_t2i_cd"] = 0.9  # one seed's answer row moved away from the teacher
    assert _goal(one_seed, "student-compodistill recovers").endswith("t2i:js no) -> does NOT hold")


def test_recovery_needs_recognition_kept():
    manifest = _manifest()
    manifest["seeds"]["recognition_ok"] = False
    assert _goal(manifest, "student-compodistill recovers").endswith("-> does NOT hold")


def test_kd_gap_goal_needs_recognition_close_and_perception_ten_below():
    manifest = _manifest()
    assert _goal(manifest, "student-kd within").endswith("-> holds")
    far = copy.deepcopy(manifest)
    far["models"]["student-kd"]["metrics"] = _metrics(50, 60)  # recognition 46 points under the teacher's
    assert _goal(far, "student-kd within").endswith("-> does NOT hold")
    close = copy.deepcopy(manifest)
    close["models"]["student-kd"]["metrics"] = _metrics(92, 90)  # perception only 5 under
    assert _goal(close, "student-kd within").endswith("-> does NOT hold")


def test_readme_names_the_fix_and_both_target_layer_measures_per_seed():
    readme = render_readme(_manifest())
    assert "VAT (weight 1) and answer-row text-to-image alignment (weight 1.0" in readme
    assert "| 0 | 80.0 | 60.0 | 80.0 | 77.5 | 0.500 | 0.180 -> 0.100 | 0.450 -> 0.150 |" in readme
    paper = _manifest()
    paper["spec"]["fix_t2i"] = 0.0
    assert "aligns with VAT (weight 1) in its DFT stage" in render_readme(paper)


def _timed(minutes: float) -> dict:
    phases = {"student-kd": minutes * 20, "teacher: full mix": minutes * 40}  # sorted by name, as JSON keeps them
    return {"minutes": minutes, "phases": phases, "runs": 1, "uninterrupted": True,
            "machine": {"cpu_count": 2, "torch_threads": 2, "device": "cpu"}}


def test_budget_goals_use_the_models_own_build_time_else_a_clean_rebuilds():
    manifest = _manifest()
    manifest["checkpoint_megabytes"] = 9.0
    assert _goal(manifest, "build <= 60 minutes").endswith("-> not measured")
    assert _goal(manifest, "checkpoints <= 25 MB").endswith("(9.0 MB) -> holds")
    rebuild = copy.deepcopy(manifest)
    rebuild["build_time"] = _timed(48.0)
    rebuild["models"]["teacher"]["metrics"] = _metrics(90, 91, blind=49)
    goal = next(g for g in design_goals(manifest, rebuild) if g.startswith("build <= 60"))
    assert goal.endswith("timed on the clean rebuild -> holds") and "48.0 minutes" in goal
    readme = render_readme(manifest, rebuild=rebuild)
    assert "## A clean rebuild" in readme and "| teacher | 96.0 | 90.0 | 95.0 | 91.0 | 50.0 | 49.0 |" in readme
    assert "Wall time of each phase of the clean rebuild" in readme
    assert readme.index("| teacher: full mix | 32.0 |") < readme.index("| student-kd | 16.0 |")  # the order they ran
    assert "perception gap (teacher - student-kd): 35.0 points shipped, 31.0 rebuilt" in readme
    manifest["build_time"] = _timed(75.0)  # the shipped build's own time wins over the rebuild's
    goal = next(g for g in design_goals(manifest, rebuild) if g.startswith("build <= 60"))
    assert "75.0 minutes" in goal and goal.endswith("-> does NOT hold") and "clean rebuild" not in goal
