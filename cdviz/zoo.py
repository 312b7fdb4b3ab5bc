"""``cdviz zoo build``: train the bundled demo models on the shapes world with cdviz's own trainer.

    teacher               larger LLaVA (vision tower, connector, decoder), CE on instruction data
                          (optionally plus a grounding loss, --teacher-ground; see below)
    student-sft           smaller decoder, CE only, no teacher (baseline)
    student-kd            smaller decoder, CE + logit KD from the teacher ("existing KD")
    student-compodistill  smaller decoder, DPT -> DFT -> SFT with TAF, KD and VAT on the layers a
                          misalignment report of student-kd flags

The vision tower is pretrained first (cdviz/zoo_vision.py: naming each patch's colour, shape and
size) and then frozen; teacher and students share it, as the paper's share a pretrained SigLIP.
Why the shipped teacher is weak, and what a grounding loss did (session 3; figures in
checkpoints/experiments/grounded-teacher/README.md): trained with CE alone, the from-scratch
teacher reads colours and shapes off the image without binding them to objects. Asked "what
colour is the square?" on held-out scenes (``cdviz zoo binding``), all its answers name a colour
in view, but only 52% the right one (9/9 with one object, 14/18 with two, 28/57 with three, 19/50
with four). Short
runs on the questions alone with object-aligned 16 px patches, a connector pre-aligned to the
word embeddings, or lr 3e-3 stayed at 48-58%. A grounding loss (``--teacher-ground W``: at the
answer position, -log of the share of the image attention on the named objects' patches) fixes
binding when the teacher first trains on colour and existence questions alone
(``--teacher-qa-steps 1000 --teacher-qa-kinds qa:colour,qa:exists``; 99% after the full mix);
warming up on all question types instead, it attended to the objects but never read their
colour. That grounded teacher shows the paper's attention gap (34% of its answer-row image
attention in the named boxes against at most 15% for student-kd), but its letter-format
accuracy collapsed to 7.5%, so the default build leaves the loss off.

The students start from one initialisation. student-kd and
student-compodistill get the same number of optimizer steps, so the comparison isolates the
CompoDistill ingredients. Every stage resumes: rerunning the command skips finished models and
continues unfinished ones from their last checkpoint.

    cdviz zoo build --out checkpoints      (about 45 minutes on 2 CPU cores)
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, dataclass
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
    teacher_steps: int = 6000
    teacher_ground: float = 0.0    # grounding-loss weight for the teacher (cdviz/train/config.py); 0: off
    teacher_ground_layers: tuple[int, ...] | None = None  # None: the teacher's middle band (cdviz.layer_map)
    teacher_qa_steps: int = 0      # steps on the short questions alone before the full mix (0: none)
    teacher_qa_kinds: tuple[str, ...] = ("qa",)  # which questions those steps train (cdviz.probes.shapes.SAMPLE_KINDS)
    student_steps: int = 2000
    dpt_steps: int = 100
    sft_steps: int = 100
    batch_size: int = 32
    lr: float = 1e-3
    shapes_scenes: int = 6000
    heldout_items: int = 600       # held-out probe set (test-split scenes, never trained on)
    record_items: int = 300        # items recorded for the misalignment report
    check_items: int = 120         # the first items of the held-out set, re-evaluated by the tests


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
    grounding = dict(trainable="llm+connector", ground=spec.teacher_ground,
                     ground_layers=list(spec.teacher_ground_layers) if spec.teacher_ground_layers else None)
    if spec.teacher_qa_steps:
        init_teacher = train_model(init_teacher, work / "teacher-qa", steps=spec.teacher_qa_steps, lr=spec.lr,
                                   shapes_kinds=list(spec.teacher_qa_kinds), **grounding, **common)
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
    metrics = {name: _evaluate(out / name, heldout, spec.check_items) for name in MODELS}
    misalignment = {"student-kd": _layer_misalignment(run_kd), "student-compodistill": _layer_misalignment(run_cd)}
    manifest = _manifest(out, spec, metrics, misalignment, run_kd)
    write_json_atomic(out / "manifest.json", manifest)
    write_text_atomic(out / "README.md", render_readme(manifest))
    return manifest


def _common(spec: ZooSpec) -> dict:
    return dict(batch_size=spec.batch_size, shapes_scenes=spec.shapes_scenes, shapes_seed=spec.seed,
                shapes_image_size=spec.image_size, seed=spec.seed, checkpoint_every=50, resume=True, progress=True)


def compodistill_config(spec: ZooSpec, work: Path, name: str, student_init: Path, teacher: Path, run_kd: Path, *,
                        vat: float = 1.0, t2i: float = 0.0, all_layers: bool = False):
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
        **_common(spec))


# Principled variations of the fix, each changing one thing against the shipped student-compodistill.
VARIATIONS: dict[str, tuple[str, dict]] = {
    "vat-all-layers": ("VAT on every student layer, teacher groups at proportional depth", {"all_layers": True}),
    "vat-weight-4": ("VAT loss weight 4 instead of 1 (report's layers)", {"vat": 4.0}),
    "vat+t2i": ("plus text-to-image alignment at the answer row, weight 1 (report's layers)", {"t2i": 1.0}),
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
    results = json.loads((out / "variations.json").read_text()) if (out / "variations.json").is_file() else {}
    for name in names or tuple(VARIATIONS):
        description, changes = VARIATIONS[name]
        log(f"variation {name}: {description}")
        model = finetune(compodistill_config(spec, work / "variants", name, student_init, teacher, run_kd, **changes))
        run = _record_and_report(teacher, model, heldout, work / "variants" / f"run-{name}", spec)
        results[name] = {"description": description, "changes": changes,
                         "metrics": _evaluate(model, heldout, spec.check_items),
                         "misalignment_by_layer": _layer_misalignment(run)}
        write_json_atomic(out / "variations.json", results)
    # Re-read: the zoo may have been re-evaluated while the variations trained.
    write_text_atomic(out / "README.md", render_readme(json.loads(manifest_path.read_text()), results))
    return results


def _record_and_report(teacher: Path, student: Path, probes: Path, run: Path, spec: ZooSpec) -> Path:
    from cdviz.probes.probeset import load_probeset
    from cdviz.record import RecordOptions, record_run
    from cdviz.models import load_pair
    from cdviz.report import build_report

    if not (run / "report" / "summary.json").is_file():
        ps = load_probeset(probes)
        ps.items = ps.items[:spec.record_items]
        t, s, _ = load_pair(teacher, student)
        record_run(t, s, ps, run, RecordOptions(shard_size=50, batch_size=16))
        build_report(run)
    return run


def _export(src: Path, dst: Path) -> None:
    """Copy a trained HF directory (model + processor files) into checkpoints/NAME."""
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.is_file() and not f.name.startswith("."):
            shutil.copy2(f, dst / f.name)


def _evaluate(model_dir: Path, probes: Path, check_items: int) -> dict:
    """Held-out summary, plus the query accuracy on the first ``check_items`` items (the test's subset)."""
    from cdviz.evaluate import evaluate, summarize
    from cdviz.models import load_model
    from cdviz.probes.probeset import load_probeset

    ps = load_probeset(probes)
    model = load_model(model_dir)
    frame, _ = evaluate(model, ps, batch_size=32)
    summary = summarize(frame)
    subset = {i.uid for i in ps.items[:check_items]}
    summary["check"] = {"n_items": check_items, "accuracy": 100 * float(frame[frame.uid.isin(subset)].correct.mean())}
    # Controls: the text alone (blind), and generative scoring (likelihood, chance 50%), each
    # also blind; summarised as consistent accuracy per category.
    for key, kwargs in {"blind": dict(blind=True), "likelihood": dict(protocol="likelihood"),
                        "likelihood_blind": dict(protocol="likelihood", blind=True)}.items():
        frame, _ = evaluate(model, ps, batch_size=32, **kwargs)
        summary[key] = _consistent_view(summarize(frame))
    return summary


def _consistent_view(summary: dict) -> dict:
    """Consistent accuracy per category and per skill, and their mean: the form controls are stored in."""
    return {"by_category": {c: v["consistent"] for c, v in summary.get("by_category", {}).items()},
            "by_skill": {c: v["consistent"] for c, v in summary.get("by_skill", {}).items()},
            "consistent_mean_over_categories": summary.get("consistent_mean_over_categories")}


def _layer_misalignment(run: Path) -> list[dict]:
    from analyses.misalignment import misalignment
    from cdviz.store import open_run

    frame = misalignment(open_run(run)).by_layer()
    keep = ["measure", "student_layer", "teacher_layers", "mean", "ci_low", "ci_high", "n"]
    return json.loads(frame[[c for c in keep if c in frame.columns]].to_json(orient="records"))


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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
        "cdviz_version": __version__, "build_command": f"cdviz zoo build --out {out} --seed {spec.seed}"
        + (f" --teacher-steps {spec.teacher_steps}" if spec.teacher_steps != ZooSpec.teacher_steps else "")
        + (f" --teacher-ground {spec.teacher_ground}" if spec.teacher_ground else "")
        + (f" --teacher-qa-steps {spec.teacher_qa_steps}" if spec.teacher_qa_steps else "")
        + (f" --teacher-qa-kinds {','.join(spec.teacher_qa_kinds)}" if spec.teacher_qa_steps else ""),
        "spec": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(spec).items()},  # as JSON reads back
        "models": models, "misalignment_by_layer": misalignment,
        "compodistill_targets": targets,
        "heldout": {"command": f"cdviz probes make shapes --n {spec.heldout_items} --seed {spec.seed} "
                               f"--split test --image-size {spec.image_size} --out DIR"},
    }


def render_readme(manifest: dict, variations: dict | None = None) -> str:
    """checkpoints/README.md: what the models are, the measured table and (if run) the variations."""
    cats = ["replace_att", "swap_att", "replace_obj", "swap_obj", "replace_rel", "add_obj", "add_att", "counting"]
    lines = ["# Bundled demo models", "",
             "Four LLaVA-architecture models trained by `cdviz zoo build` on the synthetic shapes world "
             "(see `cdviz/zoo.py`). Standard HF directories: `LlavaForConditionalGeneration.from_pretrained` and "
             "`AutoProcessor.from_pretrained` work on each.", "",
             f"Build: `{manifest['build_command']}`; held-out set: `{manifest['heldout']['command']}`.", "",
             *_teacher_training_lines(manifest["spec"]),
             "| model | layers | heads | hidden | recognition | " + " | ".join(cats) + " | CR mean |",
             "|---" * (len(cats) + 6) + "|"]
    for name, m in manifest["models"].items():
        c = m["config"]
        lines.append(f"| {name} | {c['layers']} | {c['heads']} | {c['hidden']} | "
                     + " | ".join(_cr_row(_consistent_view(m["metrics"]), cats)) + " |")
    lines += ["", "Accuracy is consistent two-choice accuracy (right in both orders), in percent.", "",
              "## Teacher-student misalignment per student layer (held-out items)", "",
              "| student | measure | student layer | teacher layers | mean | 95% CI |", "|---|---|---|---|---|---|"]
    for student, rows in manifest["misalignment_by_layer"].items():
        for r in rows:
            lines.append(f"| {student} | {r['measure']} | {r['student_layer']} | {r['teacher_layers']} | "
                         f"{r['mean']:.4f} | {r.get('ci_low', float('nan')):.4f} .. {r.get('ci_high', float('nan')):.4f} |")
    t = manifest["compodistill_targets"] or {}
    lines += ["", f"CompoDistill VAT targets (from the student-kd report, source `{t.get('source')}`): student layers "
              f"{t.get('student_layers')} aligned to teacher groups {t.get('teacher_groups')}.", ""]
    lines += ["## Controls: the captions alone, and generative scoring", "",
              "`blind` (`cdviz eval --blind`): every image replaced by a flat image of its mean colour, so what "
              "remains comes from the texts alone. `likelihood` (`cdviz eval --protocol likelihood`): each option "
              "scored by its log-probability as the answer, one query per item, chance 50% (letters: chance 25% "
              "consistent). Sums of log-probabilities favour the shorter option, hence the blind column beside it.",
              "", "| model | protocol | recognition | " + " | ".join(cats) + " | CR mean |",
              "|---" * (len(cats) + 4) + "|"]
    for name, m in manifest["models"].items():
        for key in ("blind", "likelihood", "likelihood_blind"):
            if m["metrics"].get(key):
                lines.append(f"| {name} | {key} | " + " | ".join(_cr_row(m["metrics"][key], cats)) + " |")
    lines += ["", "## Design goals, checked", ""] + [f"- {g}" for g in design_goals(manifest)] + [""]
    if variations:
        lines += _variations_section(manifest, variations)
    return "\n".join(lines)


def _teacher_training_lines(spec: dict) -> list[str]:
    """A paragraph on the teacher's grounding loss, for a zoo built with one (none otherwise)."""
    if not spec.get("teacher_ground"):
        return []
    warmup = spec.get("teacher_qa_steps", 0)
    kinds = ", ".join(spec.get("teacher_qa_kinds", ["qa"]))
    return [f"The teacher is trained with CE plus a grounding loss (weight {spec['teacher_ground']}, teacher layers "
            f"{_ground_layer_text(spec)}): at the answer position, -log of the share of its image attention on the "
            "patches of the objects the answer is about"
            + (f"; first {warmup} steps on the short questions alone ({kinds}), then the full mix." if warmup else ".")
            + " The students get no grounding loss.", ""]


def _ground_layer_text(spec: dict) -> str:
    layers = spec.get("teacher_ground_layers")
    if layers:
        return ", ".join(map(str, layers))
    from cdviz.train.recipe import ground_layers

    return ", ".join(map(str, ground_layers(None, spec["teacher_layers"]))) + " (the middle band)"


def _cr_row(view: dict, cats: list[str]) -> list[str]:
    """Table cells from a ``_consistent_view``: recognition, each of ``cats``, the CR mean."""
    cat = view["by_category"]
    mean = view["consistent_mean_over_categories"]
    return ([f"{view['by_skill'].get('recognition', float('nan')):.1f}"]
            + [f"{cat[c]:.1f}" if c in cat else "-" for c in cats] + [f"{mean:.1f}" if mean is not None else "-"])


def _variations_section(manifest: dict, variations: dict) -> list[str]:
    """Each variation of the fix next to student-kd and the shipped student-compodistill."""
    cats = ["replace_att", "swap_att", "replace_obj", "swap_obj", "replace_rel", "counting"]
    lines = ["## Variations of the fix (`cdviz zoo variations`)", "",
             "Each changes one thing against student-compodistill; same steps, data and seed. Not shipped.", "",
             "| model | change | recognition | " + " | ".join(cats) + " | CR mean | i2i:vat_cosine by student layer |",
             "|---" * (len(cats) + 5) + "|"]

    def vat_by_layer(rows: list[dict]) -> str:
        return ", ".join(f"L{r['student_layer']} {r['mean']:.4f}" for r in rows if r["measure"] == "i2i:vat_cosine")

    shipped = {n: (manifest["models"][n]["metrics"], manifest["misalignment_by_layer"].get(n, []))
               for n in ("student-kd", "student-compodistill")}
    for name, (metrics, mis) in shipped.items():
        lines.append(f"| {name} | (shipped) | " + " | ".join(_cr_row(_consistent_view(metrics), cats))
                     + f" | {vat_by_layer(mis)} |")
    for name, v in variations.items():
        lines.append(f"| {name} | {v['description']} | " + " | ".join(_cr_row(_consistent_view(v["metrics"]), cats))
                     + f" | {vat_by_layer(v['misalignment_by_layer'])} |")
    return lines + [""]


def design_goals(manifest: dict) -> list[str]:
    """The issue's design goals, each stated with the measured numbers and whether it holds."""
    def cr(name):
        return manifest["models"][name]["metrics"].get("consistent_mean_over_categories") or float("nan")

    def rec(name):
        return manifest["models"][name]["metrics"].get("by_skill", {}).get("recognition", {}).get("consistent", float("nan"))

    t, kd, cd = cr("teacher"), cr("student-kd"), cr("student-compodistill")
    verdict = lambda ok: "holds" if ok else "does NOT hold"  # noqa: E731
    return [
        f"teacher strong on both skills (consistent CR >= 90%): CR mean {t:.1f}, recognition {rec('teacher'):.1f} "
        f"-> {verdict(t >= 90 and rec('teacher') >= 90)}",
        f"student-kd close to the teacher on recognition ({rec('student-kd'):.1f} vs {rec('teacher'):.1f}) but clearly "
        f"weaker on perception ({kd:.1f} vs {t:.1f}) -> {verdict(kd <= t - 5 and abs(rec('student-kd') - rec('teacher')) <= 5)}",
        f"student-compodistill recovers part of that gap ({cd:.1f} vs student-kd {kd:.1f}) -> {verdict(cd > kd)}",
    ]
