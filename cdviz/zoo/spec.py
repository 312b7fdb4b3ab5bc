"""The demo models' settings: ``ZooSpec``, the trainer settings and the CompoDistill recipe
every model shares, the held-out probe set, and the ``cdviz zoo build`` command that rebuilds a spec.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


MODEL_FILES = ("config.json", "model.safetensors")


MODELS = ("teacher", "student-sft", "student-kd", "student-compodistill")


# Principled variations of the fix, each changing one thing against the shipped student-compodistill
# (KD + VAT + answer-row text-to-image alignment on the report's layers, ZooSpec.fix_t2i): which
# ingredient moves accuracy.
VARIATIONS: dict[str, tuple[str, dict]] = {
    "vat-only": ("VAT alone, no text-to-image alignment (the paper's recipe)", {"t2i": 0.0}),
    "t2i-only": ("text-to-image alignment at the answer row alone, no VAT (report's layers)",
                 {"vat": 0.0, "t2i": 1.0}),
    "all-layers": ("VAT and t2i on every student layer, teacher groups at proportional depth", {"all_layers": True}),
    "vat-weight-4": ("VAT loss weight 4 instead of 1 (report's layers)", {"vat": 4.0}),
}


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
    # After the full mix: more steps on the same mix from a lower peak learning rate (a second cosine
    # cycle, "teacher-more"), to see whether the teacher was still learning the match format. 2000
    # more gave +2.9 points, within noise (checkpoints/DESIGNS.md, design 11), so it is off. 0: no such phase.
    teacher_more_steps: int = 0
    teacher_more_lr: float = 5e-4
    # Last: existence questions with hard negatives and the presence loss ("teacher-presence"): the
    # answer row on the named object when it is there, off the image when it is not. It teaches the
    # yes/no comparison the full mix never did (recognition 63.3 -> 87.5). It costs the short answers
    # (colour binding 91% -> 41%), which no probe category scores; on the full mix instead of alone it
    # kept them and lost the yes/no gain (checkpoints/DESIGNS.md, designs 14-16). 0: no such phase.
    teacher_presence_steps: int = 1000
    teacher_presence_lr: float = 5e-4
    teacher_presence_kinds: tuple[str, ...] = ("presence",)
    # The full mix every model trains on (cdviz.probes.shapes.SAMPLE_KINDS); None: every kind (captions,
    # two-choice items in both orders, yes/no match queries of every category with both answers, short
    # questions). Without the two-choice items the grounded teacher never learned to bind (see checkpoints/README.md).
    shapes_kinds: tuple[str, ...] | None = None
    protocol: str = "match"        # how the held-out set is scored and recorded (cdviz.evaluate.PROTOCOLS)
    student_steps: int = 1000
    # Weight of the answer-row text-to-image alignment (Align-TI's) beside VAT in student-compodistill's
    # DFT stage. With this teacher, VAT alone recovered 0.17 of the KD student's perception gap over three
    # seeds (95% interval across 0), both together 0.72 (interval 0.07 to 1.37); on seed 0, t2i alone 0.51
    # (checkpoints/DESIGNS.md, design 18). `cdviz zoo variations` keeps each ingredient's row.
    # 0: the paper's recipe, VAT alone.
    fix_t2i: float = 1.0
    dpt_steps: int = 100
    sft_steps: int = 100
    batch_size: int = 32
    lr: float = 1e-3
    shapes_scenes: int = 6000
    heldout_items: int = 600       # held-out probe set (test-split scenes, never trained on)
    record_items: int = 300        # items recorded for the misalignment report
    check_items: int = 120         # the first items of the held-out set, re-evaluated by the tests
    text_only_items: int = 8000    # training-split items the text-only control is fitted on


def built_spec(out: Path) -> ZooSpec:
    """The spec the zoo in ``out`` was built with (its manifest's). Fields added after a manifest was
    written did not exist for its build, so they take the values that reproduce it, not today's defaults."""
    import json
    from dataclasses import fields

    path = Path(out) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: build the zoo first (cdviz zoo build --out {out})")
    known = {f.name for f in fields(ZooSpec)}
    settings = {k: tuple(v) if isinstance(v, list) else v
                for k, v in json.loads(path.read_text())["spec"].items() if k in known}
    for name, before in (("protocol", "letters"), ("shapes_kinds", None), ("teacher_ground", 0.0),
                         ("teacher_qa_steps", 0), ("teacher_bind_steps", 0), ("teacher_route", 0.0),
                         ("teacher_more_steps", 0), ("teacher_presence_steps", 0), ("fix_t2i", 0.0)):
        settings.setdefault(name, before)
    return ZooSpec(**settings)


def teacher_model(work: Path, spec: ZooSpec) -> Path:
    """The trained teacher in a zoo's build folder: the last teacher phase's model directory."""
    last = ("teacher-presence" if spec.teacher_presence_steps else "teacher-more" if spec.teacher_more_steps
            else "teacher")
    return work / last / "model"


def heldout_probes(out: Path, spec: ZooSpec) -> Path:
    """The held-out probe set: test-split scenes of the training seed, regenerated deterministically."""
    from cdviz.probes.shapes import make_shapes

    if not (out / "items.jsonl").is_file():
        make_shapes(out, n=spec.heldout_items, seed=spec.seed, image_size=spec.image_size, splits=("test",))
    return out


def trainer_settings(spec: ZooSpec, seed: int | None = None) -> dict:
    """Trainer settings every model shares; ``seed`` (default: the zoo's) sets the data order only,
    the shapes world stays the zoo's."""
    return dict(batch_size=spec.batch_size, shapes_scenes=spec.shapes_scenes, shapes_seed=spec.seed,
                shapes_image_size=spec.image_size, seed=spec.seed if seed is None else seed, checkpoint_every=50, resume=True, progress=True,
                shapes_kinds=list(spec.shapes_kinds) if spec.shapes_kinds else None)


def compodistill_config(spec: ZooSpec, work: Path, name: str, student_init: Path, teacher: Path, run_kd: Path, *,
                        vat: float = 1.0, t2i: float | None = None, all_layers: bool = False,
                        seed: int | None = None):
    """DPT -> DFT -> SFT with the student-kd report's layers; the shipped model and its variations.

    The three stages together take ``spec.student_steps`` optimizer steps, as student-kd does.
    DFT weighs VAT by ``vat`` and the answer-row alignment by ``t2i`` (None: ``spec.fix_t2i``).
    ``all_layers`` aligns every student layer (teacher groups at proportional depth) instead.
    """
    from cdviz.layer_map import proportional_groups
    from cdviz.train.config import StageConfig, TrainConfig

    t2i = spec.fix_t2i if t2i is None else t2i
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
        **trainer_settings(spec, seed))


def build_command(out: Path, spec: ZooSpec) -> str:
    """The ``cdviz zoo build`` command that rebuilds ``spec``: every option that differs from the current defaults."""
    default = ZooSpec()
    flags = [f"--out {out}", f"--seed {spec.seed}"]
    for name in ("teacher_steps", "teacher_ground", "teacher_route", "teacher_qa_steps", "teacher_bind_steps",
                 "teacher_more_steps", "teacher_presence_steps", "fix_t2i", "protocol"):
        if getattr(spec, name) != getattr(default, name):
            flags.append(f"--{name.replace('_', '-')} {getattr(spec, name)}")
    if spec.teacher_qa_steps and tuple(spec.teacher_qa_kinds) != tuple(default.teacher_qa_kinds):
        flags.append(f"--teacher-qa-kinds {','.join(spec.teacher_qa_kinds)}")
    if spec.teacher_more_steps and spec.teacher_more_lr != default.teacher_more_lr:
        flags.append(f"--teacher-more-lr {spec.teacher_more_lr}")
    if spec.teacher_presence_steps and spec.teacher_presence_lr != default.teacher_presence_lr:
        flags.append(f"--teacher-presence-lr {spec.teacher_presence_lr}")
    if spec.teacher_bind_steps and tuple(spec.teacher_bind_kinds) != tuple(default.teacher_bind_kinds):
        flags.append(f"--teacher-bind-kinds {','.join(spec.teacher_bind_kinds)}")
    unset = [name for name in ("shapes_kinds", "student_steps", "shapes_scenes", "vision_steps")
             if getattr(spec, name) != getattr(default, name)]
    note = f"  # and {', '.join(unset)} as in the manifest's spec" if unset else ""
    return "cdviz zoo build " + " ".join(flags) + note
