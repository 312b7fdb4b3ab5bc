"""``cdviz zoo build``: train the bundled demo models on the shapes world with cdviz's own trainer.

    teacher               larger LLaVA (vision tower, connector, decoder): CE plus grounding and route
                          losses, first on colour and existence questions alone, then on the full mix
    student-sft           smaller decoder, CE only, no teacher (baseline)
    student-kd            smaller decoder, CE + logit KD from the teacher ("existing KD")
    student-compodistill  smaller decoder, DPT -> DFT -> SFT with TAF, KD and VAT on the layers a
                          misalignment report of student-kd flags

The full mix (``ZooSpec.shapes_kinds``; default every kind) is scene descriptions, every probe
category's two-choice items in both orders and as yes/no match queries with both answers (the true
option and its hard negative, worded as the match protocol asks them: cdviz.prompts.match_texts),
and short questions. The held-out set is scored
and recorded with the match protocol (``ZooSpec.protocol``): a from-scratch 6-layer model did not
learn the two-choice letter format (a grounded teacher: 7.5% consistent, checkpoints/experiments/grounded-teacher), while image-text matching
is how compositional benchmarks usually score generative models.

The vision tower is pretrained first (cdviz/zoo_vision.py: naming each patch's colour, shape and
size) and then frozen; teacher and students share it, as the paper's share a pretrained SigLIP.
The grounding loss (cdviz/train/config.py ``ground``: at the answer position, -log of the share
of the image attention on the patches of the objects the answer is about) and the route loss
(``route``: -log of the answer position's attention on the question's words that name those
objects, in the layers below) stand in for the far larger data a real teacher learns binding
from: trained with CE alone, the teacher read colours off the image without binding them to
objects (``cdviz zoo binding``: 52% right, all answers a colour in view), and with grounding
alone it looked at every object in view equally (50%; checkpoints/DESIGNS.md). The students get
neither loss.

The students start from one initialisation. student-kd and student-compodistill get the same
number of optimizer steps, so the comparison isolates the CompoDistill ingredients;
``cdviz zoo seeds`` retrains both from other seeds for an interval on the recovered gap, and
``cdviz zoo variations`` changes one ingredient at a time. Every stage resumes: rerunning a
command skips finished models and continues unfinished ones from their last checkpoint.

    cdviz zoo build --out checkpoints      (see checkpoints/README.md for the measured time)
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Callable

from cdviz.io import write_json_atomic, write_text_atomic

MODEL_FILES = ("config.json", "model.safetensors")
MODELS = ("teacher", "student-sft", "student-kd", "student-compodistill")


@dataclass(frozen=True)
class ZooSpec:
    seed: int = 0
    image_size: int = 48
    patch_size: int = 8
    vision_hidden: int = 64
    vision_layers: int = 2
    teacher_layers: int = 6
    teacher_heads: int = 6
    student_layers: int = 3
    student_heads: int = 3
    hidden: int = 96              # equal widths let TAF fold into a standard LLaVA projector
    teacher_mlp: int = 384
    student_mlp: int = 192
    vision_steps: int = 800        # patch-attribute pretraining of the shared vision tower
    teacher_steps: int = 2000      # last teacher phase: the full mix (shapes_kinds)
    teacher_ground: float = 1.0    # grounding-loss weight for the teacher (cdviz/train/config.py); 0: off
    teacher_ground_layers: tuple[int, ...] | None = None  # None: the teacher's middle band (cdviz.layer_map)
    # Route-loss weight (cdviz/train/config.py): the answer row reads the words naming the asked-about
    # objects in the layers below the grounding band. With grounding alone the teacher looked at every
    # object in view equally and never bound (checkpoints/DESIGNS.md, designs 6 and 8). 0: off.
    teacher_route: float = 1.0
    teacher_qa_steps: int = 400    # steps on the short questions alone before the full mix (0: none)
    teacher_qa_kinds: tuple[str, ...] = ("qa:colour",)  # which questions those steps train
    # Between the warm-up and the full mix: steps without the yes/no match queries. Only a teacher
    # trained on this mix (captions, two-choice items, short questions) ever bound (checkpoints/DESIGNS.md,
    # design 2); with the match queries from the start it did not (designs 3 and 6). 0: no such phase.
    teacher_bind_steps: int = 0
    teacher_bind_kinds: tuple[str, ...] = ("caption", "choice", "qa")
    # The full mix every model trains on (cdviz.probes.shapes.SAMPLE_KINDS); None: every kind (captions,
    # two-choice items in both orders, yes/no match queries of every category with both answers, short
    # questions). Without the two-choice items the grounded teacher never learned to bind (see checkpoints/README.md).
    shapes_kinds: tuple[str, ...] | None = None
    protocol: str = "match"        # how the held-out set is scored and recorded (cdviz.evaluate.PROTOCOLS)
    student_steps: int = 1000
    dpt_steps: int = 100
    sft_steps: int = 100
    batch_size: int = 32
    lr: float = 1e-3
    shapes_scenes: int = 6000
    heldout_items: int = 600       # held-out probe set (test-split scenes, never trained on)
    record_items: int = 300        # items recorded for the misalignment report
    check_items: int = 120         # the first items of the held-out set, re-evaluated by the tests
    text_only_items: int = 8000    # training-split items the text-only control is fitted on


def heldout_probes(out: Path, spec: ZooSpec) -> Path:
    """The held-out probe set: test-split scenes of the training seed, regenerated deterministically."""
    from cdviz.probes.shapes import make_shapes

    if not (out / "items.jsonl").is_file():
        make_shapes(out, n=spec.heldout_items, seed=spec.seed, image_size=spec.image_size, splits=("test",))
    return out


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
    """``src`` with its vision tower pretrained on patch attributes (cdviz/zoo_vision.py), saved to ``out``."""
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    from cdviz.zoo_vision import pretrain_vision_tower

    model = LlavaForConditionalGeneration.from_pretrained(src)
    processor = AutoProcessor.from_pretrained(src)
    acc = pretrain_vision_tower(model.model.vision_tower, processor.image_processor, image_size=spec.image_size,
                                patch_size=spec.patch_size, steps=spec.vision_steps, seed=spec.seed)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    write_json_atomic(out / "vision_pretraining.json", {"steps": spec.vision_steps, "heldout_patch_accuracy": acc})


def _share_vision_tower(teacher_dir: Path, student_init: Path, out: Path) -> Path:
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
    common = _common(spec)
    init_teacher, init_student = _init_models(work, spec)

    log(f"1/6 teacher: CE{' + grounding' if spec.teacher_ground else ''} on shapes-world instructions "
        "(vision tower pretrained and frozen)")
    grounding = dict(trainable="llm+connector", ground=spec.teacher_ground, route=spec.teacher_route,
                     ground_layers=list(spec.teacher_ground_layers) if spec.teacher_ground_layers else None)
    if spec.teacher_qa_steps:
        init_teacher = train_model(init_teacher, work / "teacher-qa", steps=spec.teacher_qa_steps, lr=spec.lr,
                                   **grounding, **{**common, "shapes_kinds": list(spec.teacher_qa_kinds)})
    if spec.teacher_bind_steps:
        init_teacher = train_model(init_teacher, work / "teacher-bind", steps=spec.teacher_bind_steps, lr=spec.lr,
                                   **grounding, **{**common, "shapes_kinds": list(spec.teacher_bind_kinds)})
    teacher = train_model(init_teacher, work / "teacher", steps=spec.teacher_steps, lr=spec.lr, **grounding, **common)
    student_init = _share_vision_tower(teacher, init_student, work / "init-student-shared")

    log("2/6 student-sft: CE only, no teacher")
    sft = finetune(TrainConfig(student=str(student_init), out=str(work / "student-sft"), taf=False,
                               stages=[StageConfig("ce", steps=spec.student_steps, lr=spec.lr, trainable="llm+connector")],
                               **common))
    log("3/6 student-kd: CE + logit KD from the teacher")
    kd = finetune(TrainConfig(student=str(student_init), teacher=str(teacher), out=str(work / "student-kd"), taf=False,
                              stages=[StageConfig("ce", steps=spec.student_steps, lr=spec.lr, kd=1.0,
                                                  trainable="llm+connector")], **common))

    heldout = heldout_probes(work / "heldout", spec)
    log("4/6 misalignment report of student-kd against the teacher")
    run_kd = _record_and_report(teacher, kd, heldout, work / "run-kd", spec)

    log("5/6 student-compodistill: DPT (TAF) -> DFT (KD + VAT on the report's layers) -> SFT")
    cd = finetune(compodistill_config(spec, work, "student-compodistill", student_init, teacher, run_kd))
    run_cd = _record_and_report(teacher, cd, heldout, work / "run-compodistill", spec)

    log("6/6 evaluate on the held-out set and write the manifest")
    built = {"teacher": teacher, "student-sft": sft, "student-kd": kd, "student-compodistill": cd}
    for name, src in built.items():
        _export(src, out / name)
    return _measure_and_write(out, work, spec, heldout, run_kd, run_cd)


def _measure_and_write(out: Path, work: Path, spec: ZooSpec, heldout: Path, run_kd: Path, run_cd: Path, *,
                       targets: dict | None = None, extra: dict | None = None) -> dict:
    """Evaluate the four models in ``out``, write manifest.json and README.md; returns the manifest."""
    metrics = {name: _evaluate(out / name, heldout, spec) for name in MODELS}
    misalignment = {"student-kd": _layer_misalignment(run_kd), "student-compodistill": _layer_misalignment(run_cd)}
    manifest = _manifest(out, spec, metrics, misalignment, run_kd)
    if targets is not None:  # the layers the shipped student-compodistill was trained on
        manifest["compodistill_targets"] = targets
    manifest["text_only"] = text_only_control(work, spec)
    manifest["error_link"] = error_link_summary(run_kd)
    manifest.update(extra or {})
    if (out / "DESIGNS.md").is_file():
        manifest["designs"] = "DESIGNS.md"
    write_json_atomic(out / "manifest.json", manifest)
    write_text_atomic(out / "README.md", render_readme(manifest, _read_variations(out)))
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
    known = {f.name for f in fields(ZooSpec)}
    settings = {k: tuple(v) if isinstance(v, list) else v for k, v in old["spec"].items() if k in known}
    # Fields added after a manifest was written did not exist for its build: its defaults then.
    settings.setdefault("protocol", "letters")
    settings.setdefault("shapes_kinds", None)
    settings.setdefault("teacher_ground", 0.0)
    settings.setdefault("teacher_qa_steps", 0)
    settings.setdefault("teacher_bind_steps", 0)
    settings.setdefault("teacher_route", 0.0)
    built = ZooSpec(**settings)  # as the models were built (their run-kd report scored with its protocol)
    spec = replace(built, protocol=protocol or built.protocol)
    if spec.protocol not in PROTOCOLS or spec.protocol == "likelihood":
        raise OptionError(f"--protocol {spec.protocol!r}: choose letters or match")
    work = out / ".build" / "evaluate"
    if work.exists():
        shutil.rmtree(work)  # runs of an older probe set or protocol must not be reused
    heldout = heldout_probes(work / "heldout", spec)
    log(f"1/3 record and report student-kd and student-compodistill ({spec.protocol} protocol)")
    run_kd = _record_and_report(out / "teacher", out / "student-kd", heldout, work / "run-kd", spec)
    run_cd = _record_and_report(out / "teacher", out / "student-compodistill", heldout, work / "run-compodistill", spec)
    log("2/3 evaluate the four models and the controls")
    manifest = _measure_and_write(out, work, spec, heldout, run_kd, run_cd, targets=old.get("compodistill_targets"),
                                  extra={"build_command": build_command(out, built), "evaluate_command": f"cdviz zoo evaluate --out {out} --protocol {spec.protocol}"})
    log("3/3 manifest.json and README.md rewritten")
    return manifest


def _common(spec: ZooSpec, seed: int | None = None) -> dict:
    """Trainer settings every model shares; ``seed`` (default: the zoo's) sets the data order only,
    the shapes world stays the zoo's."""
    return dict(batch_size=spec.batch_size, shapes_scenes=spec.shapes_scenes, shapes_seed=spec.seed,
                shapes_image_size=spec.image_size, seed=spec.seed if seed is None else seed, checkpoint_every=50, resume=True, progress=True,
                shapes_kinds=list(spec.shapes_kinds) if spec.shapes_kinds else None)


def compodistill_config(spec: ZooSpec, work: Path, name: str, student_init: Path, teacher: Path, run_kd: Path, *,
                        vat: float = 1.0, t2i: float = 0.0, all_layers: bool = False, seed: int | None = None):
    """DPT -> DFT -> SFT with the student-kd report's layers; the shipped model and its variations.

    The three stages together take ``spec.student_steps`` optimizer steps, as student-kd does.
    ``all_layers`` aligns every student layer (teacher groups at proportional depth) instead.
    """
    from cdviz.layer_map import proportional_groups
    from cdviz.train.config import StageConfig, TrainConfig

    layers = {}
    if all_layers:
        student_layers = list(range(spec.student_layers))
        groups = proportional_groups(student_layers, spec.student_layers, spec.teacher_layers)
        layers = dict(student_layers=student_layers, teacher_groups=[list(g) for g in groups])
    dft_steps = spec.student_steps - spec.dpt_steps - spec.sft_steps
    return TrainConfig(
        student=str(student_init), teacher=str(teacher), out=str(work / name), taf=True,
        from_report=None if all_layers else str(run_kd), **layers,
        stages=[StageConfig("dpt", steps=spec.dpt_steps, lr=spec.lr),
                StageConfig("dft", steps=dft_steps, lr=spec.lr, trainable="llm+taf", vat=vat, t2i=t2i),
                StageConfig("sft", steps=spec.sft_steps, lr=spec.lr)],
        **_common(spec, seed))


# Principled variations of the fix, each changing one thing against the shipped student-compodistill.
VARIATIONS: dict[str, tuple[str, dict]] = {
    "vat-all-layers": ("VAT on every student layer, teacher groups at proportional depth", {"all_layers": True}),
    "vat-weight-4": ("VAT loss weight 4 instead of 1 (report's layers)", {"vat": 4.0}),
    "vat+t2i": ("plus text-to-image alignment at the answer row, weight 1 (report's layers)", {"t2i": 1.0}),
    "t2i-only": ("text-to-image alignment at the answer row instead of VAT, weight 1 (report's layers)",
                 {"vat": 0.0, "t2i": 1.0}),
}


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
    teacher = work / "teacher" / "model"
    student_init, run_kd, heldout = work / "init-student-shared", work / "run-kd", work / "heldout"
    for needed in (teacher, student_init, run_kd / "report" / "summary.json", heldout):
        if not needed.exists():
            raise FileNotFoundError(f"{needed}: missing from the zoo's build folder; rerun cdviz zoo build --out {out}")
    unknown = [n for n in names or () if n not in VARIATIONS]
    if unknown:
        raise KeyError(f"unknown variation {unknown[0]!r}; choose from {', '.join(VARIATIONS)}")
    results = _read_variations(out) or {}
    for name in names or tuple(VARIATIONS):
        description, changes = VARIATIONS[name]
        log(f"variation {name}: {description}")
        model = finetune(compodistill_config(spec, work / "variants", name, student_init, teacher, run_kd, **changes))
        run = _record_and_report(teacher, model, heldout, work / "variants" / f"run-{name}", spec)
        results[name] = {"description": description, "changes": changes,
                         "metrics": _evaluate(model, heldout, spec),
                         "misalignment_by_layer": _layer_misalignment(run)}
        write_json_atomic(out / "variations.json", results)
    # Re-read: the zoo may have been re-evaluated while the variations trained.
    write_text_atomic(out / "README.md", render_readme(json.loads(manifest_path.read_text()), results))
    return results


def build_seeds(out: str | Path = "checkpoints", spec: ZooSpec = ZooSpec(), seeds: tuple[int, ...] = (1, 2),
                log: Callable[[str], None] = print) -> dict:
    """Retrain student-kd and student-compodistill from other initialisations and data orders.

    Needs ``build_zoo`` first (its teacher, held-out set and manifest). Each seed gets its own
    student-kd report, whose targets its student-compodistill aligns, as the shipped pair does.
    Writes manifest["seeds"] (per seed: recognition, perception mean, the recovered share of the
    KD gap, the target layers' i2i:vat_cosine before and after; across seeds, shipped seed
    included: the mean share with a 95% t-interval) and re-renders README.md. Resumable.
    """
    from cdviz.train.config import StageConfig, TrainConfig
    from cdviz.train.finetune import finetune
    from cdviz.train.recipe import MARKER

    out = Path(out)
    work = out / ".build"
    manifest_path = out / "manifest.json"
    teacher = work / "teacher" / "model"
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
                                                      trainable="llm+connector")], **_common(spec, seed)))
        run_kd = _record_and_report(teacher, kd, heldout, home / "run-kd", spec)
        cd = finetune(compodistill_config(spec, home, "student-compodistill", init, teacher, run_kd, seed=seed))
        _record_and_report(teacher, cd, heldout, home / "run-compodistill", spec)
        write_json_atomic(home / "result.json", {"kd": _evaluate_main(kd, heldout, spec),
                                                 "compodistill": _evaluate_main(cd, heldout, spec)})
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
    write_text_atomic(out / "README.md", render_readme(manifest, _read_variations(out)))
    return manifest["seeds"]


def _read_variations(out: Path) -> dict | None:
    path = out / "variations.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _seed_student(home: Path, spec: ZooSpec, seed: int, teacher: Path) -> Path:
    from cdviz.models.tiny import build_tiny

    raw = home / "init-student"
    if not (raw / "model.safetensors").is_file():
        build_tiny("llava", raw, n_layers=spec.student_layers, n_heads=spec.student_heads,
                   n_kv_heads=spec.student_heads, intermediate=spec.student_mlp, seed=seed + 1,
                   image_size=spec.image_size, patch_size=spec.patch_size, vision_hidden=spec.vision_hidden,
                   vision_layers=spec.vision_layers, hidden=spec.hidden)
    return _share_vision_tower(teacher, raw, home / "init-student-shared")


def _evaluate_main(model_dir: Path, probes: Path, spec: ZooSpec) -> dict:
    from cdviz.evaluate import evaluate, summarize
    from cdviz.models import load_model
    from cdviz.probes.probeset import load_probeset

    frame, _ = evaluate(load_model(model_dir), load_probeset(probes), batch_size=32, protocol=spec.protocol)
    return summarize(frame)


def _seed_result(teacher: dict, kd: dict, cd: dict, run_kd: Path, run_cd: Path) -> dict:
    """One student seed: headline recognition and perception mean of kd and compodistill, the
    share of the teacher-kd perception gap compodistill recovers, and the mean i2i:vat_cosine
    over the kd report's target layers in both runs."""
    views = {name: headline_view(m) for name, m in (("t", teacher), ("kd", kd), ("cd", cd))}
    nan = float("nan")
    short = {name: {"recognition": v["by_skill"].get("recognition", nan), "perception": v["perception_mean"]}
             for name, v in views.items()}
    gap = short["t"]["perception"] - short["kd"]["perception"]
    targets = json.loads((run_kd / "report" / "summary.json").read_text()).get("recommended_targets") or {}
    layers = set(targets.get("student_layers") or [])

    def target_vat(run: Path) -> float:
        rows = [r for r in _layer_misalignment(run) if r["measure"] == "i2i:vat_cosine" and r["student_layer"] in layers]
        return sum(r["mean"] for r in rows) / len(rows) if rows else nan

    return {"kd": short["kd"], "compodistill": short["cd"], "target_layers": sorted(layers),
            "recovered": (short["cd"]["perception"] - short["kd"]["perception"]) / gap if gap > 0 else nan,
            "target_vat_kd": target_vat(run_kd), "target_vat_cd": target_vat(run_cd)}


def _seed_aggregate(runs: dict) -> dict:
    """Per-seed results plus the mean recovered share with a 95% t-interval across seeds."""
    import numpy as np
    from scipy import stats

    shares = np.array([r["recovered"] for r in runs.values()], dtype=float)
    shares = shares[np.isfinite(shares)]
    n = len(shares)
    agg = {"n": n, "mean": float(shares.mean()) if n else None, "ci_low": None, "ci_high": None}
    if n >= 2:
        half = float(stats.t.ppf(0.975, n - 1) * shares.std(ddof=1) / np.sqrt(n))
        agg.update(ci_low=agg["mean"] - half, ci_high=agg["mean"] + half)
    rec_change = [r["compodistill"]["recognition"] - r["kd"]["recognition"] for r in runs.values()]
    return {"runs": runs, "recovered": agg, "recognition_change": float(np.mean(rec_change)),
            "recognition_ok": bool(np.mean(rec_change) >= -2)}


def _record_and_report(teacher: Path, student: Path, probes: Path, run: Path, spec: ZooSpec) -> Path:
    from cdviz.probes.probeset import load_probeset
    from cdviz.record import RecordOptions, record_run
    from cdviz.models import load_pair
    from cdviz.report import build_report

    if not (run / "report" / "summary.json").is_file():
        ps = load_probeset(probes)
        ps.items = ps.items[:spec.record_items]
        t, s, _ = load_pair(teacher, student)
        record_run(t, s, ps, run, RecordOptions(shard_size=50, batch_size=16, protocol=spec.protocol))
        build_report(run)
    return run


def _export(src: Path, dst: Path) -> None:
    """Copy a trained HF directory (model + processor files) into checkpoints/NAME, with the markers
    of every stage it came from (the build folder is not shipped, so a comparison can still say
    which layers were aligned: cdviz.report.compare.finetune_record)."""
    from cdviz.report.compare import LINEAGE, stage_chain

    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.is_file() and not f.name.startswith(".") and f.name != LINEAGE:
            shutil.copy2(f, dst / f.name)
    write_json_atomic(dst / LINEAGE, stage_chain(src))


def _evaluate(model_dir: Path, probes: Path, spec: ZooSpec) -> dict:
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


def _layer_misalignment(run: Path) -> list[dict]:
    from analyses.misalignment import misalignment
    from cdviz.store import open_run

    frame = misalignment(open_run(run)).by_layer()
    keep = ["measure", "student_layer", "teacher_layers", "mean", "ci_low", "ci_high", "n"]
    return json.loads(frame[[c for c in keep if c in frame.columns]].to_json(orient="records"))


def sha256(path: Path) -> str:
    """A file's sha256, as the manifest records the weights."""
    from cdviz.store import file_sha256

    return file_sha256(path)


def _manifest(out: Path, spec: ZooSpec, metrics: dict, misalignment: dict, run_kd: Path) -> dict:
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


RECOGNITION = ["existence", "colour"]
PERCEPTION = ["replace_att", "replace_obj", "replace_rel", "swap_att", "swap_obj", "add_att", "add_obj", "counting"]


def build_command(out: Path, spec: ZooSpec) -> str:
    """The ``cdviz zoo build`` command that rebuilds ``spec``: every option that differs from the current defaults."""
    default = ZooSpec()
    flags = [f"--out {out}", f"--seed {spec.seed}"]
    for name in ("teacher_steps", "teacher_ground", "teacher_route", "teacher_qa_steps", "teacher_bind_steps",
                 "protocol"):
        if getattr(spec, name) != getattr(default, name):
            flags.append(f"--{name.replace('_', '-')} {getattr(spec, name)}")
    if spec.teacher_qa_steps and tuple(spec.teacher_qa_kinds) != tuple(default.teacher_qa_kinds):
        flags.append(f"--teacher-qa-kinds {','.join(spec.teacher_qa_kinds)}")
    if spec.teacher_bind_steps and tuple(spec.teacher_bind_kinds) != tuple(default.teacher_bind_kinds):
        flags.append(f"--teacher-bind-kinds {','.join(spec.teacher_bind_kinds)}")
    unset = [name for name in ("shapes_kinds", "student_steps", "shapes_scenes", "vision_steps")
             if getattr(spec, name) != getattr(default, name)]
    note = f"  # and {', '.join(unset)} as in the manifest's spec" if unset else ""
    return "cdviz zoo build " + " ".join(flags) + note


def render_readme(manifest: dict, variations: dict | None = None) -> str:
    """checkpoints/README.md: what the models are, the measured tables, the controls, the student
    seeds (if run), the design goals checked and the variations of the fix (if run)."""
    cats = RECOGNITION + PERCEPTION
    protocol = manifest["spec"].get("protocol", "letters")
    lines = ["# Bundled demo models", "",
             "Four LLaVA-architecture models trained by `cdviz zoo build` on the synthetic shapes world "
             "(see `cdviz/zoo.py`). Standard HF directories: `LlavaForConditionalGeneration.from_pretrained` and "
             "`AutoProcessor.from_pretrained` work on each.", "",
             f"Build: `{manifest['build_command']}`; held-out set: `{manifest['heldout']['command']}`."
             + (f" Re-measured without retraining: `{manifest['evaluate_command']}`." if manifest.get("evaluate_command")
                else ""), "",
             *_teacher_training_lines(manifest["spec"]),
             *_protocol_lines(protocol),
             "| model | layers | heads | hidden | recognition | " + " | ".join(cats) + " | perception mean | blind |",
             "|---" * (len(cats) + 7) + "|"]
    for name, m in manifest["models"].items():
        c = m["config"]
        blind = m["metrics"].get("blind", {}).get("perception_mean")
        lines.append(f"| {name} | {c['layers']} | {c['heads']} | {c['hidden']} | "
                     + " | ".join(_cr_row(headline_view(m["metrics"]), cats)) + f" | {_pct(blind)} |")
    text_only = manifest.get("text_only")
    if text_only:
        t = text_only["by_category"]
        perception = [t[c] for c in PERCEPTION if c in t]
        lines.append("| text only (bag of words) | - | - | - | - | " + " | ".join(_pct(t.get(c)) for c in cats)
                     + f" | {_pct(sum(perception) / len(perception) if perception else None)} | - |")
    lines += ["", f"Per category: {_measure_text(protocol)}, in percent, on the held-out items. `blind`: the same "
              "protocol with every image replaced by a flat image of its mean colour (the perception mean). "
              "`text only`: a logistic regression on the bag of words of each option's query (pairwise), fitted on "
              f"{(text_only or {}).get('train_items', '?')} training-split items and scored on "
              f"{(text_only or {}).get('test_items', '?')} test-split items (`cdviz.probes.text_baseline`); "
              "chance is 50.", ""]
    lines += _strict_and_letters_section(manifest)
    lines += ["## Teacher-student misalignment per student layer (held-out items)", "",
              "| student | measure | student layer | teacher layers | mean | 95% CI |", "|---|---|---|---|---|---|"]
    for student, rows in manifest["misalignment_by_layer"].items():
        for r in rows:
            lines.append(f"| {student} | {r['measure']} | {r['student_layer']} | {r['teacher_layers']} | "
                         f"{r['mean']:.4f} | {r.get('ci_low', float('nan')):.4f} .. {r.get('ci_high', float('nan')):.4f} |")
    t = manifest["compodistill_targets"] or {}
    lines += ["", f"CompoDistill VAT targets (from the student-kd report, source `{t.get('source')}`): student layers "
              f"{t.get('student_layers')} aligned to teacher groups {t.get('teacher_groups')}.", ""]
    lines += _error_link_section(manifest.get("error_link"))
    lines += _seeds_section(manifest)
    lines += ["## Design goals, checked", ""] + [f"- {g}" for g in design_goals(manifest)] + [""]
    if manifest.get("designs"):
        lines += [f"The designs tried for a teacher that binds, with their figures: [{manifest['designs']}]"
                  f"({manifest['designs']}).", ""]
    if variations:
        lines += _variations_section(manifest, variations)
    return "\n".join(lines)


def _pct(v) -> str:
    return "-" if v is None or v != v else f"{v:.1f}"


def _measure_text(protocol: str) -> str:
    if protocol == "match":
        return "pairwise accuracy under the match protocol (the true option's yes/no log-odds beats the false one's)"
    return "consistent two-choice accuracy (right in both orders)"


def _protocol_lines(protocol: str) -> list[str]:
    if protocol != "match":
        return []
    return ["Scored with the match protocol (`cdviz eval --protocol match`): each option is asked as one yes/no "
            "query, 'Does this image show \"<caption>\"? Answer yes or no.' (a question's option as a proposed "
            "answer; a yes/no question as it stands), and scored by log P(yes) - log P(no) at the answer position. "
            "Pairwise: the true option scores highest (chance 50%). Strict: the true option is judged yes and the "
            "false one no.", ""]


def _strict_and_letters_section(manifest: dict) -> list[str]:
    """The other protocol beside the headline one, and match's strict accuracy where measured."""
    rows = [(name, m["metrics"]) for name, m in manifest["models"].items()]
    other = "match" if manifest["spec"].get("protocol", "letters") == "letters" else "letters"
    if not any(other in m for _, m in rows):
        return []
    lines = [f"The other protocol, for reference ({_measure_text(other)}):", "",
             f"| model | {other} recognition | {other} perception mean | match strict perception mean |",
             "|---|---|---|---|"]
    for name, m in rows:
        view = m.get(other, {})
        strict = m.get("strict_mean_over_categories", m.get("match", {}).get("strict_mean"))
        lines.append(f"| {name} | {_pct(view.get('by_skill', {}).get('recognition'))} | "
                     f"{_pct(view.get('perception_mean'))} | {_pct(strict)} |")
    return lines + [""]


def _error_link_section(link: dict | None) -> list[str]:
    if not link:
        return []
    groups = link.get("outcome_groups") or {}
    lines = ["## Error link in the student-kd run", "",
             "AUROC of each layer's misalignment for the student's errors on items the teacher gets right "
             f"(outcome groups {', '.join(f'{k} {v}' for k, v in groups.items())}); 95% bootstrap interval, "
             f"q after the report's multiple-testing correction. Target layers {link.get('target_layers')} "
             f"(source `{link.get('source')}`).", "",
             "| measure | student layer | teacher layers | AUROC | 95% CI | q |", "|---|---|---|---|---|---|"]
    for r in link.get("auroc", []):
        lines.append(f"| {r['measure']} | {r['student_layer']} | {r['teacher_layers']} | {_num(r.get('auroc'))} | "
                     f"{_num(r.get('ci_low'))} .. {_num(r.get('ci_high'))} | {_num(r.get('q_value'))} |")
    return lines + [""]


def _num(v) -> str:
    return "-" if v is None or v != v else f"{v:.3f}"


def _teacher_training_lines(spec: dict) -> list[str]:
    """A paragraph on the teacher's grounding and route losses, for a zoo built with them (none otherwise)."""
    if not spec.get("teacher_ground"):
        return []
    warmup, bind = spec.get("teacher_qa_steps", 0), spec.get("teacher_bind_steps", 0)
    phases = []
    if warmup:
        phases.append(f"first {warmup} steps on the short questions alone ({', '.join(spec.get('teacher_qa_kinds', ['qa']))})")
    if bind:
        phases.append(f"then {bind} steps on {', '.join(spec.get('teacher_bind_kinds', []))} (no match queries)")
    if phases:
        phases.append(f"then {spec.get('teacher_steps')} steps on the full mix")
    route = ""
    if spec.get("teacher_route"):
        from cdviz.train.recipe import ground_layers, route_layers

        band = list(spec.get("teacher_ground_layers") or ground_layers(None, spec["teacher_layers"]))
        layers = ", ".join(map(str, route_layers(None, spec["teacher_layers"], band)))
        route = (f", and a route loss (weight {spec['teacher_route']}, teacher layers {layers}): -log of the share "
                 "of the answer position's attention on the question's words that name those objects")
    return [f"The teacher is trained with CE plus a grounding loss (weight {spec['teacher_ground']}, teacher layers "
            f"{_ground_layer_text(spec)}): at the answer position, -log of the share of its image attention on the "
            "patches of the objects the answer is about" + route + ("; " + ", ".join(phases) + "." if phases else ".")
            + " The students get neither loss.", ""]


def _ground_layer_text(spec: dict) -> str:
    layers = spec.get("teacher_ground_layers")
    if layers:
        return ", ".join(map(str, layers))
    from cdviz.train.recipe import ground_layers

    return ", ".join(map(str, ground_layers(None, spec["teacher_layers"]))) + " (the middle band)"


def _cr_row(view: dict, cats: list[str]) -> list[str]:
    """Table cells from a ``headline_view``: recognition, each of ``cats``, the perception mean."""
    cat = view["by_category"]
    return ([_pct(view["by_skill"].get("recognition"))] + [_pct(cat.get(c)) for c in cats]
            + [_pct(view["perception_mean"])])


def _vat_by_layer(rows: list[dict]) -> str:
    return ", ".join(f"L{r['student_layer']} {r['mean']:.4f}" for r in rows if r["measure"] == "i2i:vat_cosine")


def _variations_section(manifest: dict, variations: dict) -> list[str]:
    """Each variation of the fix next to student-kd and the shipped student-compodistill."""
    cats = PERCEPTION
    lines = ["## Variations of the fix (`cdviz zoo variations`)", "",
             "Each changes one thing against student-compodistill; same steps, data and seed. Not shipped. Each row "
             "was measured when it was trained (variations.json), on the probe set of that time"
             + ("; the shipped rows are re-measured on the current one, so compare within a row's own measurement."
                if manifest.get("evaluate_command") else "."), "",
             "| model | change | recognition | " + " | ".join(cats) + " | perception mean | i2i:vat_cosine by student layer |",
             "|---" * (len(cats) + 5) + "|"]
    shipped = {n: (manifest["models"][n]["metrics"], manifest["misalignment_by_layer"].get(n, []))
               for n in ("student-kd", "student-compodistill")}
    for name, (metrics, mis) in shipped.items():
        lines.append(f"| {name} | (shipped) | " + " | ".join(_cr_row(headline_view(metrics), cats))
                     + f" | {_vat_by_layer(mis)} |")
    for name, v in variations.items():
        lines.append(f"| {name} | {v['description']} | " + " | ".join(_cr_row(headline_view(v["metrics"]), cats))
                     + f" | {_vat_by_layer(v['misalignment_by_layer'])} |")
    return lines + [""]


def _seeds_section(manifest: dict) -> list[str]:
    seeds = manifest.get("seeds")
    if not seeds:
        return []
    lines = ["## Student seeds (`cdviz zoo seeds`)", "",
             "The same teacher; student-kd and student-compodistill retrained from another initialisation and data "
             "order per seed (seed 0 is the shipped pair). Recovered share = (compodistill - kd) / (teacher - kd) "
             "on the perception mean.", "",
             "| seed | kd recognition | kd perception | compodistill recognition | compodistill perception | "
             "recovered share | target-layer i2i:vat_cosine kd -> compodistill |", "|---|---|---|---|---|---|---|"]
    for seed, r in sorted(seeds["runs"].items(), key=lambda kv: int(kv[0])):
        lines.append(f"| {seed} | {_pct(r['kd']['recognition'])} | {_pct(r['kd']['perception'])} | "
                     f"{_pct(r['compodistill']['recognition'])} | {_pct(r['compodistill']['perception'])} | "
                     f"{_num(r['recovered'])} | {_num(r.get('target_vat_kd'))} -> {_num(r.get('target_vat_cd'))} |")
    agg = seeds.get("recovered", {})
    lines += ["", f"Recovered share over {agg.get('n')} seeds: mean {_num(agg.get('mean'))}, 95% t-interval "
              f"{_num(agg.get('ci_low'))} .. {_num(agg.get('ci_high'))}.", ""]
    return lines


def design_goals(manifest: dict) -> list[str]:
    """The design goals of the demo pair, each stated with the measured numbers and whether it holds."""
    def view(name):
        return headline_view(manifest["models"][name]["metrics"])

    nan = float("nan")
    t, kd, cd = view("teacher"), view("student-kd"), view("student-compodistill")
    rec = {n: v["by_skill"].get("recognition", nan) for n, v in (("t", t), ("kd", kd), ("cd", cd))}
    perc = {n: (v["perception_mean"] if v["perception_mean"] is not None else nan)
            for n, v in (("t", t), ("kd", kd), ("cd", cd))}
    blind = manifest["models"]["teacher"]["metrics"].get("blind", {}).get("perception_mean") or nan
    worst = min((t["by_category"].get(c, nan) for c in PERCEPTION), default=nan)
    verdict = lambda ok: "holds" if ok else "does NOT hold"  # noqa: E731
    goals = []
    text_only = (manifest.get("text_only") or {}).get("by_category", {})
    if text_only:
        far = max(abs(v - 50) for v in text_only.values())
        goals.append(f"no text shortcut: the text-only model is within 50 +/- 5 on every category (furthest "
                     f"{far:.1f} points from 50) -> {verdict(far <= 5)}")
    goals += [
        f"teacher binds: >= 90 on every perception category (lowest {worst:.1f}), >= 95 on recognition "
        f"({rec['t']:.1f}), perception mean >= blind + 35 ({perc['t']:.1f} vs blind {blind:.1f}) "
        f"-> {verdict(worst >= 90 and rec['t'] >= 95 and perc['t'] >= blind + 35)}",
        f"student-kd within 5 points of the teacher on recognition ({rec['kd']:.1f} vs {rec['t']:.1f}) and >= 10 below "
        f"it on the perception mean ({perc['kd']:.1f} vs {perc['t']:.1f}) "
        f"-> {verdict(abs(rec['kd'] - rec['t']) <= 5 and perc['kd'] <= perc['t'] - 10)}",
    ]
    seeds = manifest.get("seeds")
    gap = perc["t"] - perc["kd"]
    if seeds and seeds.get("recovered", {}).get("n"):
        agg = seeds["recovered"]
        ok = (agg["mean"] >= 1 / 3 and agg.get("ci_low") is not None and agg["ci_low"] > 0
              and seeds.get("recognition_ok", False))
        goals.append(f"student-compodistill recovers >= 1/3 of the KD student's perception gap, mean over "
                     f"{agg['n']} seeds with a 95% interval above 0 (mean {_num(agg['mean'])}, interval "
                     f"{_num(agg.get('ci_low'))} .. {_num(agg.get('ci_high'))}), recognition no more than 2 points worse "
                     f"({'yes' if seeds.get('recognition_ok') else 'no'}) -> {verdict(ok)}")
    else:
        share = (perc["cd"] - perc["kd"]) / gap if gap > 0 else nan
        goals.append(f"student-compodistill recovers >= 1/3 of the KD student's perception gap (one seed: "
                     f"{perc['cd']:.1f} vs {perc['kd']:.1f}, share {share:.3f}; run `cdviz zoo seeds` for the "
                     f"interval) -> {verdict(share >= 1 / 3 and rec['cd'] >= rec['kd'] - 2)}")
    link = manifest.get("error_link")
    if link:
        targets = set(link.get("target_layers") or [])
        hits = [r for r in link.get("auroc", []) if r["student_layer"] in targets and (r.get("ci_low") or 0) > 0.5]
        best = max((r for r in link.get("auroc", []) if r["student_layer"] in targets),
                   key=lambda r: r.get("auroc") or 0, default=None)
        shown = (f"best in the target layers: {best['measure']} layer {best['student_layer']} AUROC "
                 f"{_num(best.get('auroc'))} ({_num(best.get('ci_low'))} .. {_num(best.get('ci_high'))})"
                 if best else "no AUROC in the target layers")
        goals.append(f"the error link is visible: misalignment in the flagged layers predicts the KD student's errors "
                     f"on teacher-right items with a 95% interval above 0.5 ({shown}) -> {verdict(bool(hits))}")
    return goals


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
