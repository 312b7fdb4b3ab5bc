"""``cdviz zoo build`` and ``cdviz zoo evaluate``: train (or resume) the four demo models, measure
them, and write checkpoints/ (the models, manifest.json and README.md).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Callable

from cdviz.io import write_json_atomic
from cdviz.zoo.clock import TIMINGS, BuildClock, build_time
from cdviz.zoo.measure import (error_link_summary, evaluate_model, layer_misalignment, make_manifest,
                               record_and_report, text_only_control)
from cdviz.zoo.readme import write_readme
from cdviz.zoo.spec import MODELS, ZooSpec, build_command, built_spec, compodistill_config, heldout_probes, trainer_settings


def _init_models(work: Path, spec: ZooSpec) -> tuple[Path, Path]:
    from cdviz.models.tiny import build_tiny

    common = dict(image_size=spec.image_size, patch_size=spec.patch_size, vision_hidden=spec.vision_hidden,
                  vision_layers=spec.vision_layers, hidden=spec.hidden)
    teacher = work / "init-teacher"
    if not (teacher / "model.safetensors").is_file():
        raw = build_tiny("llava", work / "init-teacher-raw", n_layers=spec.teacher_layers, n_heads=spec.teacher_heads,
                         n_kv_heads=spec.teacher_heads, intermediate=spec.teacher_mlp, seed=spec.seed, **common)
        _pretrain_vision(raw, teacher, spec)
    student = work / "init-student"
    if not (student / "model.safetensors").is_file():
        build_tiny("llava", student, n_layers=spec.student_layers, n_heads=spec.student_heads,
                   n_kv_heads=spec.student_heads, intermediate=spec.student_mlp, seed=spec.seed + 1, **common)
    return teacher, student


def _pretrain_vision(src: Path, out: Path, spec: ZooSpec) -> None:
    """``src`` with its vision tower pretrained on patch attributes (cdviz/zoo/vision.py), saved to ``out``."""
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    from cdviz.zoo.vision import pretrain_vision_tower

    model = LlavaForConditionalGeneration.from_pretrained(src)
    processor = AutoProcessor.from_pretrained(src)
    acc = pretrain_vision_tower(model.model.vision_tower, processor.image_processor, image_size=spec.image_size,
                                patch_size=spec.patch_size, steps=spec.vision_steps, seed=spec.seed)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    write_json_atomic(out / "vision_pretraining.json", {"steps": spec.vision_steps, "heldout_patch_accuracy": acc})


def share_vision_tower(teacher_dir: Path, student_init: Path, out: Path) -> Path:
    """The student init with the trained teacher's vision tower (frozen later by ``trainable``)."""
    from safetensors.torch import load_file, save_file

    if (out / "model.safetensors").is_file():
        return out
    shutil.copytree(student_init, out, dirs_exist_ok=True)
    teacher = load_file(teacher_dir / "model.safetensors")
    student = load_file(student_init / "model.safetensors")
    tower = {k: v for k, v in teacher.items() if ".vision_tower." in k or k.startswith("vision_tower.")}
    missing = [k for k in tower if k not in student or student[k].shape != tower[k].shape]
    if missing:
        raise ValueError(f"teacher and student vision towers differ ({missing[0]}); they must share one")
    student.update(tower)
    save_file(student, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out


def build_zoo(out: str | Path = "checkpoints", spec: ZooSpec = ZooSpec(), log: Callable[[str], None] = print) -> dict:
    """Train (or resume) all four models, evaluate them, and write manifest.json and README.md."""
    from cdviz.train.config import StageConfig, TrainConfig
    from cdviz.train.finetune import finetune, train_model

    out = Path(out)
    work = out / ".build"
    work.mkdir(parents=True, exist_ok=True)
    common = trainer_settings(spec)
    clock = BuildClock(work / TIMINGS)
    with clock.phase("init models and pretrain the vision tower"):
        init_teacher, init_student = _init_models(work, spec)

    log(f"1/6 teacher: CE{' + grounding' if spec.teacher_ground else ''} on shapes-world instructions "
        "(vision tower pretrained and frozen)")
    grounding = dict(trainable="llm+connector", ground=spec.teacher_ground, route=spec.teacher_route,
                     ground_layers=list(spec.teacher_ground_layers) if spec.teacher_ground_layers else None)
    if spec.teacher_qa_steps:
        with clock.phase("teacher: short questions"):
            init_teacher = train_model(init_teacher, work / "teacher-qa", steps=spec.teacher_qa_steps, lr=spec.lr,
                                       **grounding, **{**common, "shapes_kinds": list(spec.teacher_qa_kinds)})
    if spec.teacher_bind_steps:
        with clock.phase("teacher: bind mix"):
            init_teacher = train_model(init_teacher, work / "teacher-bind", steps=spec.teacher_bind_steps, lr=spec.lr,
                                       **grounding, **{**common, "shapes_kinds": list(spec.teacher_bind_kinds)})
    with clock.phase("teacher: full mix"):
        teacher = train_model(init_teacher, work / "teacher", steps=spec.teacher_steps, lr=spec.lr, **grounding,
                              **common)
    if spec.teacher_more_steps:
        with clock.phase("teacher: more of the full mix"):
            teacher = train_model(teacher, work / "teacher-more", steps=spec.teacher_more_steps,
                                  lr=spec.teacher_more_lr, **grounding, **common)
    if spec.teacher_presence_steps:  # grounding as a share of the whole row: on the object, or off the image
        with clock.phase("teacher: presence"):
            teacher = train_model(teacher, work / "teacher-presence", steps=spec.teacher_presence_steps,
                                  lr=spec.teacher_presence_lr, presence=1.0, **grounding,
                                  **{**common, "shapes_kinds": list(spec.teacher_presence_kinds), "ground_share": "row"})
    student_init = share_vision_tower(teacher, init_student, work / "init-student-shared")

    log("2/6 student-sft: CE only, no teacher")
    with clock.phase("student-sft"):
        sft = finetune(TrainConfig(student=str(student_init), out=str(work / "student-sft"), taf=False,
                                   stages=[StageConfig("ce", steps=spec.student_steps, lr=spec.lr,
                                                       trainable="llm+connector")], **common))
    log("3/6 student-kd: CE + logit KD from the teacher")
    with clock.phase("student-kd"):
        kd = finetune(TrainConfig(student=str(student_init), teacher=str(teacher), out=str(work / "student-kd"),
                                  taf=False, stages=[StageConfig("ce", steps=spec.student_steps, lr=spec.lr, kd=1.0,
                                                                 trainable="llm+connector")], **common))

    log("4/6 misalignment report of student-kd against the teacher")
    with clock.phase("student-kd: record and report"):
        heldout = heldout_probes(work / "heldout", spec)
        run_kd = record_and_report(teacher, kd, heldout, work / "run-kd", spec)

    log(f"5/6 student-compodistill: DPT (TAF) -> DFT (KD + VAT{' + t2i' if spec.fix_t2i else ''} on the report's "
        "layers) -> SFT")
    with clock.phase("student-compodistill"):
        cd = finetune(compodistill_config(spec, work, "student-compodistill", student_init, teacher, run_kd))
    with clock.phase("student-compodistill: record and report"):
        run_cd = record_and_report(teacher, cd, heldout, work / "run-compodistill", spec)

    log("6/6 evaluate on the held-out set and write the manifest")
    with clock.phase("evaluate the four models and the controls"):
        built = {"teacher": teacher, "student-sft": sft, "student-kd": kd, "student-compodistill": cd}
        for name, src in built.items():
            _export(src, out / name)
        manifest = _measure_and_write(out, work, spec, heldout, run_kd, run_cd)
    # The manifest written inside the phase cannot hold the phase's own time: write it again with it.
    manifest["build_time"] = build_time(work / TIMINGS)
    write_json_atomic(out / "manifest.json", manifest)
    write_readme(out, manifest)
    return manifest


def _export(src: Path, dst: Path) -> None:
    """Copy a trained HF directory (model + processor files) into checkpoints/NAME, with the markers
    of every stage it came from (the build folder is not shipped, so a comparison can still say
    which layers were aligned: cdviz.lineage.finetune_record)."""
    from cdviz.lineage import LINEAGE, stage_chain

    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.is_file() and not f.name.startswith(".") and f.name != LINEAGE:
            shutil.copy2(f, dst / f.name)
    write_json_atomic(dst / LINEAGE, stage_chain(src))


def _measure_and_write(out: Path, work: Path, spec: ZooSpec, heldout: Path, run_kd: Path, run_cd: Path, *,
                       targets: dict | None = None, extra: dict | None = None) -> dict:
    """Evaluate the four models in ``out``, write manifest.json and README.md; returns the manifest."""
    metrics = {name: evaluate_model(out / name, heldout, spec) for name in MODELS}
    misalignment = {"student-kd": layer_misalignment(run_kd), "student-compodistill": layer_misalignment(run_cd)}
    manifest = make_manifest(out, spec, metrics, misalignment, run_kd)
    if targets is not None:  # the layers the shipped student-compodistill was trained on
        manifest["compodistill_targets"] = targets
    manifest["text_only"] = text_only_control(work, spec)
    manifest["error_link"] = error_link_summary(run_kd)
    manifest["checkpoint_megabytes"] = round(sum(f.stat().st_size for name in MODELS for f in (out / name).iterdir()
                                                 if f.is_file()) / 2 ** 20, 2)
    manifest.update(extra or {})
    if (out / "DESIGNS.md").is_file():
        manifest["designs"] = "DESIGNS.md"
    write_json_atomic(out / "manifest.json", manifest)
    write_readme(out, manifest)
    return manifest


def evaluate_zoo(out: str | Path = "checkpoints", protocol: str | None = None,
                 log: Callable[[str], None] = print) -> dict:
    """Re-measure the shipped models without retraining them: regenerate the held-out set with the
    current probe generator, record and report student-kd and student-compodistill against the
    teacher, evaluate all four, and rewrite manifest.json and README.md (weights untouched).

    For when the probe generator, the protocols or the analyses change. The spec is the one the
    models were built with (the manifest's); ``protocol`` defaults to the manifest's, "letters"
    for a manifest written before protocols existed.
    """
    from cdviz.errors import OptionError
    from cdviz.evaluate import PROTOCOLS

    out = Path(out)
    old = json.loads((out / "manifest.json").read_text())
    built = built_spec(out)  # as the models were built (their run-kd report scored with its protocol)
    spec = replace(built, protocol=protocol or built.protocol)
    if spec.protocol not in PROTOCOLS or spec.protocol == "likelihood":
        raise OptionError(f"--protocol {spec.protocol!r}: choose letters or match")
    work = out / ".build" / "evaluate"
    if work.exists():
        shutil.rmtree(work)  # runs of an older probe set or protocol must not be reused
    heldout = heldout_probes(work / "heldout", spec)
    log(f"1/3 record and report student-kd and student-compodistill ({spec.protocol} protocol)")
    run_kd = record_and_report(out / "teacher", out / "student-kd", heldout, work / "run-kd", spec)
    run_cd = record_and_report(out / "teacher", out / "student-compodistill", heldout, work / "run-compodistill", spec)
    log("2/3 evaluate the four models and the controls")
    manifest = _measure_and_write(out, work, spec, heldout, run_kd, run_cd, targets=old.get("compodistill_targets"),
                                  extra={"build_command": build_command(out, built),
                                         "evaluate_command": f"cdviz zoo evaluate --out {out} --protocol {spec.protocol}",
                                         # the weights are the built ones: so is their build time
                                         "build_time": build_time(out / ".build" / TIMINGS) or old.get("build_time")})
    log("3/3 manifest.json and README.md rewritten")
    return manifest
