"""``cdviz zoo variations`` and ``cdviz zoo seeds``: the fix changed one ingredient at a time, and
student-kd / student-compodistill retrained from other seeds for an interval on the recovered gap.
Both need ``cdviz zoo build`` first (its teacher, held-out set and manifest).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from cdviz.io import write_json_atomic
from cdviz.zoo.build import share_vision_tower
from cdviz.zoo.measure import evaluate_main, evaluate_model, headline_view, layer_misalignment, record_and_report
from cdviz.zoo.readme import read_variations, write_readme
from cdviz.zoo.spec import VARIATIONS, ZooSpec, compodistill_config, heldout_probes, teacher_model, trainer_settings


def build_variations(out: str | Path = "checkpoints", spec: ZooSpec = ZooSpec(), names: tuple[str, ...] | None = None,
                     log: Callable[[str], None] = print) -> dict:
    """Train each variation of the CompoDistill recipe on the built zoo, evaluate and record it.

    Needs ``build_zoo`` first (it reuses its teacher, student initialisation and student-kd
    report). Writes OUT/variations.json and re-renders OUT/README.md with the comparison. The
    variants are not shipped: their weights stay in OUT/.build/variants.
    """
    from cdviz.train.finetune import finetune

    out = Path(out)
    work = out / ".build"
    manifest_path = out / "manifest.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{manifest_path}: build the zoo first (cdviz zoo build --out {out})")
    teacher = teacher_model(work, spec)
    student_init, run_kd, heldout = work / "init-student-shared", work / "run-kd", work / "heldout"
    for needed in (teacher, student_init, run_kd / "report" / "summary.json", heldout):
        if not needed.exists():
            raise FileNotFoundError(f"{needed}: missing from the zoo's build folder; rerun cdviz zoo build --out {out}")
    unknown = [n for n in names or () if n not in VARIATIONS]
    if unknown:
        raise KeyError(f"unknown variation {unknown[0]!r}; choose from {', '.join(VARIATIONS)}")
    results = read_variations(out) or {}
    for name in names or tuple(VARIATIONS):
        description, changes = VARIATIONS[name]
        log(f"variation {name}: {description}")
        model = finetune(compodistill_config(spec, work / "variants", name, student_init, teacher, run_kd, **changes))
        run = record_and_report(teacher, model, heldout, work / "variants" / f"run-{name}", spec)
        results[name] = {"description": description, "changes": changes,
                         "metrics": evaluate_model(model, heldout, spec),
                         "misalignment_by_layer": layer_misalignment(run)}
        write_json_atomic(out / "variations.json", results)
    # Re-read: the zoo may have been re-evaluated while the variations trained.
    write_readme(out, json.loads(manifest_path.read_text()))  # variations.json holds ``results`` now
    return results


def build_seeds(out: str | Path = "checkpoints", spec: ZooSpec = ZooSpec(), seeds: tuple[int, ...] = (1, 2),
                log: Callable[[str], None] = print) -> dict:
    """Retrain student-kd and student-compodistill from other initialisations and data orders.

    Needs ``build_zoo`` first (its teacher, held-out set and manifest). Each seed gets its own
    student-kd report, whose targets its student-compodistill aligns, as the shipped pair does.
    Writes manifest["seeds"] (per seed: recognition, perception mean, the recovered share of the
    KD gap, the target layers' i2i:vat_cosine and t2i:js before and after; across seeds, shipped seed
    included: the mean share with a 95% t-interval) and re-renders README.md. Resumable.
    """
    from cdviz.train.config import StageConfig, TrainConfig
    from cdviz.train.finetune import finetune
    from cdviz.train.recipe import MARKER

    out = Path(out)
    work = out / ".build"
    manifest_path = out / "manifest.json"
    teacher = teacher_model(work, spec)
    if not (teacher / MARKER).is_file():  # written last into a finished stage's model directory
        raise FileNotFoundError(f"{teacher}: no trained teacher; run cdviz zoo build --out {out} first")
    if spec.seed in seeds:
        raise ValueError(f"seed {spec.seed} is the shipped pair's; choose other student seeds")
    heldout = heldout_probes(work / "heldout", spec)
    for seed in seeds:  # needs only the teacher, so it may run beside the rest of cdviz zoo build
        home = work / f"seed-{seed}"
        if (home / "result.json").is_file():
            continue
        log(f"seed {seed}: student-kd (CE + KD), its report, student-compodistill")
        init = _seed_student(home, spec, seed, teacher)
        kd = finetune(TrainConfig(student=str(init), teacher=str(teacher), out=str(home / "student-kd"), taf=False,
                                  stages=[StageConfig("ce", steps=spec.student_steps, lr=spec.lr, kd=1.0,
                                                      trainable="llm+connector")], **trainer_settings(spec, seed)))
        run_kd = record_and_report(teacher, kd, heldout, home / "run-kd", spec)
        cd = finetune(compodistill_config(spec, home, "student-compodistill", init, teacher, run_kd, seed=seed))
        record_and_report(teacher, cd, heldout, home / "run-compodistill", spec)
        write_json_atomic(home / "result.json", {"kd": evaluate_main(kd, heldout, spec),
                                                 "compodistill": evaluate_main(cd, heldout, spec)})
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{manifest_path}: the seed students are trained; rerun this command once "
                                f"cdviz zoo build --out {out} has finished, to tabulate them beside the shipped pair")
    manifest = json.loads(manifest_path.read_text())
    teacher_metrics = manifest["models"]["teacher"]["metrics"]
    runs = {str(spec.seed): _seed_result(teacher_metrics, manifest["models"]["student-kd"]["metrics"],
                                         manifest["models"]["student-compodistill"]["metrics"],
                                         work / "run-kd", work / "run-compodistill")}
    for seed in seeds:
        home = work / f"seed-{seed}"
        result = json.loads((home / "result.json").read_text())
        runs[str(seed)] = _seed_result(teacher_metrics, result["kd"], result["compodistill"], home / "run-kd",
                                       home / "run-compodistill")
    manifest["seeds"] = _seed_aggregate(runs)
    write_json_atomic(manifest_path, manifest)
    write_readme(out, manifest)
    return manifest["seeds"]


def _seed_student(home: Path, spec: ZooSpec, seed: int, teacher: Path) -> Path:
    from cdviz.models.tiny import build_tiny

    raw = home / "init-student"
    if not (raw / "model.safetensors").is_file():
        build_tiny("llava", raw, n_layers=spec.student_layers, n_heads=spec.student_heads,
                   n_kv_heads=spec.student_heads, intermediate=spec.student_mlp, seed=seed + 1,
                   image_size=spec.image_size, patch_size=spec.patch_size, vision_hidden=spec.vision_hidden,
                   vision_layers=spec.vision_layers, hidden=spec.hidden)
    return share_vision_tower(teacher, raw, home / "init-student-shared")


def _seed_result(teacher: dict, kd: dict, cd: dict, run_kd: Path, run_cd: Path) -> dict:
    """One student seed: headline recognition and perception mean of kd and compodistill, the
    share of the teacher-kd perception gap compodistill recovers, and the mean i2i:vat_cosine
    and t2i:js over the kd report's target layers in both runs."""
    views = {name: headline_view(m) for name, m in (("t", teacher), ("kd", kd), ("cd", cd))}
    nan = float("nan")
    short = {name: {"recognition": v["by_skill"].get("recognition", nan), "perception": v["perception_mean"]}
             for name, v in views.items()}
    gap = short["t"]["perception"] - short["kd"]["perception"]
    targets = json.loads((run_kd / "report" / "summary.json").read_text()).get("recommended_targets") or {}
    layers = set(targets.get("student_layers") or [])

    rows = {"kd": layer_misalignment(run_kd), "cd": layer_misalignment(run_cd)}  # one analysis per run

    def target_mean(run: str, measure: str) -> float | None:
        kept = [r["mean"] for r in rows[run] if r["measure"] == measure and r["student_layer"] in layers]
        return sum(kept) / len(kept) if kept else None

    # No gap to recover (the KD student at or above its teacher): the share is undefined, null in
    # the manifest (JSON has no NaN), left out of the interval.
    return {"kd": short["kd"], "compodistill": short["cd"], "target_layers": sorted(layers),
            "recovered": (short["cd"]["perception"] - short["kd"]["perception"]) / gap if gap > 0 else None,
            **{f"target_{short_name}_{run}": target_mean(run, measure)
               for short_name, measure in (("vat", "i2i:vat_cosine"), ("t2i", "t2i:js")) for run in ("kd", "cd")}}


def _seed_aggregate(runs: dict) -> dict:
    """Per-seed results plus the mean recovered share with a 95% t-interval across seeds."""
    import numpy as np
    from scipy import stats

    shares = np.array([r["recovered"] for r in runs.values()], dtype=float)  # None -> nan
    shares = shares[np.isfinite(shares)]
    n = len(shares)
    agg = {"n": n, "mean": float(shares.mean()) if n else None, "ci_low": None, "ci_high": None}
    if n >= 2:
        half = float(stats.t.ppf(0.975, n - 1) * shares.std(ddof=1) / np.sqrt(n))
        agg.update(ci_low=agg["mean"] - half, ci_high=agg["mean"] + half)
    rec_change = [r["compodistill"]["recognition"] - r["kd"]["recognition"] for r in runs.values()]
    return {"runs": runs, "recovered": agg, "recognition_change": float(np.mean(rec_change)),
            "recognition_ok": bool(np.mean(rec_change) >= -2)}
