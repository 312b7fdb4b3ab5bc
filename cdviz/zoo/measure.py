"""Measuring the demo models: record and report a pair, evaluate a model with its controls, and
the manifest (weights' sha256, configs, metrics, misalignment, error link) that checkpoints/ ships.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from cdviz.zoo.spec import MODEL_FILES, MODELS, ZooSpec, build_command


def record_and_report(teacher: Path, student: Path, probes: Path, run: Path, spec: ZooSpec) -> Path:
    from cdviz.probes.probeset import load_probeset
    from cdviz.record import RecordOptions, record_run
    from cdviz.models import load_pair
    from cdviz.workflow import build_report

    if not (run / "report" / "summary.json").is_file():
        ps = load_probeset(probes)
        ps.items = ps.items[:spec.record_items]
        t, s, _ = load_pair(teacher, student)
        record_run(t, s, ps, run, RecordOptions(shard_size=50, batch_size=16, protocol=spec.protocol))
        build_report(run)
    return run


def evaluate_model(model_dir: Path, probes: Path, spec: ZooSpec) -> dict:
    """Held-out summary under ``spec.protocol``, the judged-right rate of its queries on the first
    ``spec.check_items`` items (the test's subset), and the controls: the same protocol on flat
    images (``blind``) and, for reference, the other of letters / match."""
    from cdviz.evaluate import evaluate, summarize
    from cdviz.models import load_model
    from cdviz.probes.probeset import load_probeset

    ps = load_probeset(probes)
    model = load_model(model_dir)
    frame, _ = evaluate(model, ps, batch_size=32, protocol=spec.protocol)
    summary = summarize(frame)
    subset = {i.uid for i in ps.items[:spec.check_items]}
    summary["check"] = {"n_items": spec.check_items, "protocol": spec.protocol,
                        "accuracy": 100 * float(frame[frame.uid.isin(subset)].correct.mean())}
    blind, _ = evaluate(model, ps, batch_size=32, protocol=spec.protocol, blind=True)
    summary["blind"] = headline_view(summarize(blind))
    other = "match" if spec.protocol == "letters" else "letters"
    frame, _ = evaluate(model, ps, batch_size=32, protocol=other)
    summary[other] = headline_view(summarize(frame))
    return summary


def evaluate_main(model_dir: Path, probes: Path, spec: ZooSpec) -> dict:
    from cdviz.evaluate import evaluate, summarize
    from cdviz.models import load_model
    from cdviz.probes.probeset import load_probeset

    frame, _ = evaluate(load_model(model_dir), load_probeset(probes), batch_size=32, protocol=spec.protocol)
    return summarize(frame)


def headline_view(summary: dict) -> dict:
    """The headline accuracy per category and per skill, and its perception mean: pairwise under
    the match protocol, consistent (right in every order) otherwise."""
    key = "pairwise" if summary.get("protocol") == "match" else "consistent"
    return {"measure": key,
            "by_category": {c: v[key] for c, v in summary.get("by_category", {}).items()},
            "by_skill": {c: v[key] for c, v in summary.get("by_skill", {}).items()},
            "perception_mean": summary.get(f"{key}_mean_over_categories"),
            "strict_mean": summary.get("strict_mean_over_categories")}


def text_only_control(work: Path, spec: ZooSpec) -> dict:
    """Pairwise accuracy per category of a bag-of-words model of the option texts alone, fitted on
    ``spec.text_only_items`` training-split items and scored on half as many test-split items of
    the same world (cdviz.probes.text_baseline). It needs no model, so it is scored on more items
    than the held-out set's 60 per category, where chance alone spreads results by +/- 13 points."""
    from cdviz.probes.probeset import load_probeset
    from cdviz.probes.shapes import make_shapes
    from cdviz.probes.text_baseline import text_only_pairwise

    sets = {}
    for split, n in (("train", spec.text_only_items), ("test", spec.text_only_items // 2)):
        folder = work / f"text-only-{split}"
        if not (folder / "items.jsonl").is_file():
            make_shapes(folder, n=n, seed=spec.seed, image_size=spec.image_size, splits=(split,))
        sets[split] = load_probeset(folder).items
    return {"train_items": len(sets["train"]), "test_items": len(sets["test"]),
            "by_category": text_only_pairwise(sets["train"], sets["test"])}


def layer_misalignment(run: Path) -> list[dict]:
    from analyses.misalignment import misalignment
    from cdviz.store import open_run

    frame = misalignment(open_run(run)).by_layer()
    keep = ["measure", "student_layer", "teacher_layers", "mean", "ci_low", "ci_high", "n"]
    return json.loads(frame[[c for c in keep if c in frame.columns]].to_json(orient="records"))


def error_link_summary(run: Path) -> dict:
    """The student-kd report's error link: per measure and student layer, the AUROC of misalignment
    for the student's errors on teacher-right items, with its 95% interval, and the target layers."""
    summary = json.loads((run / "report" / "summary.json").read_text())
    targets = summary.get("recommended_targets") or {}
    rows = summary.get("error_link", {}).get("auroc", [])
    return {"target_layers": targets.get("student_layers"), "source": targets.get("source"),
            "outcome_groups": summary.get("outcome_groups"),
            "auroc": [{k: r.get(k) for k in ("measure", "student_layer", "teacher_layers", "auroc", "ci_low",
                                             "ci_high", "q_value", "n_pos", "n_neg")} for r in rows]}


def sha256(path: Path) -> str:
    """A file's sha256, as the manifest records the weights."""
    from cdviz.store import file_sha256

    return file_sha256(path)


def make_manifest(out: Path, spec: ZooSpec, metrics: dict, misalignment: dict, run_kd: Path) -> dict:
    from cdviz import __version__

    models = {}
    for name in MODELS:
        cfg = json.loads((out / name / "config.json").read_text())
        text = cfg["text_config"]
        models[name] = {
            "config": {"layers": text["num_hidden_layers"], "hidden": text["hidden_size"],
                       "heads": text["num_attention_heads"], "mlp": text["intermediate_size"],
                       "vision_hidden": cfg["vision_config"]["hidden_size"], "image_size": spec.image_size,
                       "patch_size": spec.patch_size},
            "sha256": {f: sha256(out / name / f) for f in MODEL_FILES},
            "metrics": metrics[name],
        }
    targets = json.loads((run_kd / "report" / "summary.json").read_text()).get("recommended_targets")
    return {
        "cdviz_version": __version__, "build_command": build_command(out, spec),
        "spec": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(spec).items()},  # as JSON reads back
        "models": models, "misalignment_by_layer": misalignment,
        "compodistill_targets": targets,
        "heldout": {"command": f"cdviz probes make shapes --n {spec.heldout_items} --seed {spec.seed} "
                               f"--split test --image-size {spec.image_size} --out DIR"},
    }
