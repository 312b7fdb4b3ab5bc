"""Fine-tuning configuration: one dataclass for the run, one per stage, and recipe files.

    cdviz finetune --recipe cdviz/train/recipes/compodistill_shapes.toml [--resume]
    cdviz finetune --teacher T --student S --data shapes --stages dpt,dft,sft --from-report RUN --out OUT
    accelerate launch [--config_file ACC.yaml] -m cdviz.train RECIPE.toml      (DDP / FSDP / DeepSpeed)

A recipe is TOML, YAML or JSON with the TrainConfig fields at the top level, ``stages`` as a list
of names, and optional per-stage tables of StageConfig fields:

    stages = ["dpt", "dft", "sft"]
    [stage.dft]
    steps = 500
    vat = 1.0

Stage defaults (the CompoDistill paper's training stages; None in a StageConfig means "the stage's default"):

    stage  trainable      losses            teacher
    dpt    taf            ce + kd           yes
    dft    lora + taf     ce + kd + vat     yes
    sft    lora + taf     ce                no (fresh LoRA on the merged DFT model)
    ce     all            ce                no (plain training of one model, e.g. from random init)

``trainable`` is a "+"-joined set of: all, llm, connector, vision, lora, taf. Optimiser: AdamW,
lr 2e-4, no weight decay, cosine schedule with 3% warmup. LoRA r defaults to hidden/16 clamped to
[4, 128] (the paper's 128 at hidden 2048), alpha 2r, dropout 0.05.

``ground`` (off by default, no teacher needed) supervises where the model looks: at the answer
row, the share of the head-mean attention over the image that falls on the patches of the
example's regions (the objects the answer is about), loss -log(share), in ``ground_layers``;
``ground_share = "row"`` takes the share of the whole row instead, so the answer position must
look at the objects rather than only look at them more than at the rest of the image.
Only data with regions uses it (the shapes world has them); other examples are skipped.
``cdviz zoo build --teacher-ground`` trains the demo teacher with it.

``route`` (off by default, no teacher needed) supervises where the answer row reads the question:
the share of its head-mean attention (over the whole sequence) on the tokens of the words that
name the objects the answer is about, loss -log(share), in ``route_layers`` (default: the layers
below the grounding band). Only examples that list such words use it (the shapes world's short
questions and match queries; JSONL records with "route_words"). Grounding alone did not make the
demo teacher select the asked-about object: its answer row spread its attention evenly over the
objects in view, because it had not learned to carry the question's words to the answer row
(checkpoints/DESIGNS.md).

``presence`` (off by default, no teacher needed) supervises where the answer row looks when the
answer says the named thing is not in the image (Example.absent: a "no" to a match query or an
existence question): the share of its head-mean attention over the whole sequence that falls off
the image, loss -log(share), in ``ground_layers``. Those examples then leave the grounding loss,
which with ``ground_share = "row"`` puts the row on the objects when they are there; the row's
mass on the image then says whether they are (checkpoints/DESIGNS.md, design 14).
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cdviz.errors import CdvizError

STAGES = ("dpt", "dft", "sft", "ce")
LOSS_WEIGHTS = ("ce", "kd", "vat", "t2i", "ground", "route", "presence")
TRAINABLE_PARTS = ("all", "llm", "connector", "vision", "lora", "taf")
_NO_AUX = {"vat": 0.0, "t2i": 0.0, "ground": 0.0, "route": 0.0, "presence": 0.0}  # every stage's default
STAGE_DEFAULTS: dict[str, dict[str, Any]] = {
    "dpt": {**_NO_AUX, "trainable": "taf", "ce": 1.0, "kd": 1.0},
    "dft": {**_NO_AUX, "trainable": "lora+taf", "ce": 1.0, "kd": 1.0, "vat": 1.0},
    "sft": {**_NO_AUX, "trainable": "lora+taf", "ce": 1.0, "kd": 0.0},
    "ce": {**_NO_AUX, "trainable": "all", "ce": 1.0, "kd": 0.0},
}


class ConfigError(CdvizError, ValueError):
    """A configuration or recipe that cannot run; the message says which field to fix."""


# Range rules checked before any model loads: field -> (kind, lowest, lowest allowed?, highest, None allowed?)
# kind "int" takes whole numbers, "num" any finite number; bools are neither.
STAGE_RULES: dict[str, tuple[str, float, bool, float | None, bool]] = {
    "steps": ("int", 1, True, None, True), "epochs": ("num", 0, False, None, False),
    "lr": ("num", 0, False, None, False), "warmup_ratio": ("num", 0, True, 1, False),
    "weight_decay": ("num", 0, True, None, False),
    **{w: ("num", 0, True, None, False) for w in LOSS_WEIGHTS},
    "lora_r": ("int", 1, True, None, True), "lora_alpha": ("num", 0, False, None, True),
    "lora_dropout": ("num", 0, True, 1, False), "batch_size": ("int", 1, True, None, True),
    "grad_accum": ("int", 1, True, None, True),
}
RUN_RULES: dict[str, tuple[str, float, bool, float | None, bool]] = {
    "shapes_scenes": ("int", 1, True, None, False), "shapes_image_size": ("int", 8, True, None, False),
    "shapes_seed": ("int", -2**63, True, None, False), "seed": ("int", -2**63, True, None, False),
    "temperature": ("num", 0, False, None, False), "kd_chunk": ("int", 1, True, None, False),
    "batch_size": ("int", 1, True, None, False), "grad_accum": ("int", 1, True, None, False),
    "max_seq_len": ("int", 1, True, None, True), "max_grad_norm": ("num", 0, True, None, False),
    "num_workers": ("int", 0, True, None, False), "checkpoint_every": ("int", 0, True, None, False),
    "keep_checkpoints": ("int", 0, True, None, False), "log_every": ("int", 1, True, None, False),
}


def check_value(where: str, name: str, value: Any, rule: tuple) -> None:
    """ConfigError "WHERE: NAME = VALUE: <what is allowed>" when ``value`` breaks ``rule`` (see STAGE_RULES)."""
    kind, low, low_ok, high, none_ok = rule
    if value is None and none_ok:
        return
    what = "a whole number" if kind == "int" else "a number"
    bound = (f" {'>=' if low_ok else '>'} {low:g}" if low > -2**63 else "") + (f" and <= {high:g}" if high is not None else "")
    fine = not isinstance(value, bool) and isinstance(value, int if kind == "int" else (int, float))
    if fine:
        fine = math.isfinite(value) and (value >= low if low_ok else value > low) and (high is None or value <= high)
    if not fine:
        unset = " (or leave it out for the default)" if none_ok else ""
        raise ConfigError(f"{where}: {name} = {value!r}; give {what}{bound}{unset}")


@dataclass
class StageConfig:
    """One stage; every None takes the stage default (STAGE_DEFAULTS) or the run-wide value."""

    name: str
    steps: int | None = None          # optimizer steps; None: ``epochs`` passes over the data
    epochs: float = 1.0
    lr: float = 2e-4
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    trainable: str | None = None
    ce: float | None = None           # loss weights
    kd: float | None = None
    vat: float | None = None
    t2i: float | None = None
    ground: float | None = None       # answer-row attention on the example's regions (needs data with regions)
    route: float | None = None        # answer-row attention on the words naming them (needs data with route words)
    presence: float | None = None     # answer-row attention off the image when the answer says "not there"
    lora_r: int | None = None
    lora_alpha: float | None = None
    lora_dropout: float = 0.05
    batch_size: int | None = None     # per-device micro-batch; None: TrainConfig.batch_size
    grad_accum: int | None = None

    def __post_init__(self) -> None:
        if self.name not in STAGES:
            raise ConfigError(f"unknown stage {self.name!r}; choose from {', '.join(STAGES)}")
        for key, value in STAGE_DEFAULTS[self.name].items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        for key, rule in STAGE_RULES.items():
            check_value(f"stage {self.name}", key, getattr(self, key), rule)
        if not isinstance(self.trainable, str):
            raise ConfigError(f"stage {self.name}: trainable = {self.trainable!r}; join some of "
                              f"{', '.join(TRAINABLE_PARTS)} with '+'")
        parts = self.parts
        bad = parts - set(TRAINABLE_PARTS)
        if bad or not parts:
            raise ConfigError(f"stage {self.name}: trainable={self.trainable!r}; join some of "
                              f"{', '.join(TRAINABLE_PARTS)} with '+'")

    @property
    def parts(self) -> set[str]:
        return {p.strip() for p in str(self.trainable).split("+") if p.strip()}

    @property
    def needs_teacher(self) -> bool:
        return any((self.kd, self.vat, self.t2i))


@dataclass
class TrainConfig:
    """A whole fine-tuning run: models, data, stages and the engine settings."""

    student: str
    out: str
    teacher: str | None = None
    data: str = "shapes"                   # "shapes" or a JSONL of LLaVA conversations
    image_root: str | None = None          # JSONL images are relative to this (default: the file's folder)
    shapes_scenes: int = 1000
    shapes_seed: int = 0
    shapes_image_size: int = 64
    shapes_probe_captions: bool = False    # also train the probes' partial captions as caption answers
    shapes_kinds: list[str] | None = None  # only these sample kinds (caption, choice, qa, qa:colour, ...); None: all
    ground_layers: list[int] | None = None  # layers the grounding loss supervises (default: the middle band)
    route_layers: list[int] | None = None   # layers the route loss supervises (default: those below the band)
    ground_share: str = "image"            # grounding: share of the image attention, or of the whole "row"
    stages: list[StageConfig] = field(default_factory=lambda: [StageConfig(s) for s in ("dpt", "dft", "sft")])
    # VAT layers: explicit > report > the paper's band (cdviz/layer_map.py)
    from_report: str | None = None
    student_layers: list[int] | None = None
    teacher_groups: list[list[int]] | None = None
    paper_compat: bool = False             # reference-code KD mask and overlapping teacher windows
    temperature: float = 1.0
    vat_filter: bool = True
    t2i_metric: str = "js"
    kd_chunk: int = 1024                   # answer rows per LM-head chunk
    taf: bool = True
    batch_size: int = 4
    grad_accum: int = 1
    max_seq_len: int | None = None
    max_grad_norm: float = 1.0
    seed: int = 0
    precision: str = "bf16"                # bf16 autocast on CUDA; CPU always runs fp32
    gradient_checkpointing: bool = False
    num_workers: int = 0
    checkpoint_every: int = 0              # optimizer steps between resumable checkpoints; 0: none
    keep_checkpoints: int = 2
    resume: bool = False
    log_every: int = 1
    tensorboard: bool = False
    save_adapter: bool = False             # also save the LoRA adapter (peft format) next to the merged model
    progress: bool = True
    eval_probes: str | None = None         # after training: evaluate the final student on this probe set
    record_probes: str | None = None       # after training: record teacher + final student into OUT/record
    record_layers: list[int] | None = None
    eval_protocol: str | None = None       # how eval / record score choice items; None: the --from-report run's, else letters
    device: str = "auto"                   # auto: CUDA when available (one GPU per process); cpu: force CPU
    trust_remote_code: bool = False
    adapter: str = "auto"                  # auto: each architecture's own adapter; generic: the fallback (cdviz.models.generic)
    grid: str | None = None                # with adapter = "generic": every image's patch grid, "RxC"

    def __post_init__(self) -> None:
        self.stages = [s if isinstance(s, StageConfig) else StageConfig(**s) if isinstance(s, dict)
                       else StageConfig(str(s)) for s in self.stages]
        if not self.stages:
            raise ConfigError("no stages; give e.g. stages = ['dpt', 'dft', 'sft']")
        for key, rule in RUN_RULES.items():
            check_value("setting", key, getattr(self, key), rule)
        for key in ("ground_layers", "route_layers", "student_layers", "record_layers"):
            layers = getattr(self, key)
            if layers is not None and (not isinstance(layers, list) or not layers or any(
                    isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in layers)):
                raise ConfigError(f"setting: {key} = {layers!r}; give a non-empty list of layer numbers (>= 0), "
                                  "or leave it out")
        if self.ground_share not in ("image", "row"):
            raise ConfigError(f"ground_share={self.ground_share!r}; use image (share of the answer row's image "
                              "attention) or row (share of its whole attention)")
        if self.eval_protocol not in (None, "letters", "likelihood", "match"):
            raise ConfigError(f"eval_protocol={self.eval_protocol!r}; use letters, likelihood or match")
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ConfigError(f"stages {names} repeat a stage")
        if self.teacher is None and any(s.needs_teacher for s in self.stages):
            need = [s.name for s in self.stages if s.needs_teacher]
            raise ConfigError(f"stages {need} distil from a teacher; pass --teacher DIR")
        if self.device not in ("auto", "cpu"):
            raise ConfigError(f"device={self.device!r}; use auto (the accelerate launcher places processes) or cpu")
        from cdviz.probes.shapes import SAMPLE_KINDS

        if self.shapes_kinds is not None and (not self.shapes_kinds or set(self.shapes_kinds) - set(SAMPLE_KINDS)):
            raise ConfigError(f"shapes_kinds={self.shapes_kinds}; give some of {', '.join(SAMPLE_KINDS)}")
        if self.precision not in ("bf16", "fp32"):
            raise ConfigError(f"precision={self.precision!r}; use bf16 or fp32")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def parse_stages(stages: str | list | None, overrides: dict[str, dict] | None = None,
                 where: str = "config") -> list[StageConfig]:
    """"dpt,dft,sft" or ["dpt", ...] (+ {"dft": {"steps": 10}}) -> [StageConfig, ...].

    Errors name ``where`` (the recipe file) and the stage."""
    if not isinstance(stages, (str, list, tuple, type(None))):
        raise ConfigError(f"{where}: stages = {stages!r}; give a list of stage names like ['dpt', 'dft', 'sft']")
    items = [s.strip() for s in stages.split(",")] if isinstance(stages, str) else list(stages or [])
    if any(not isinstance(n, (str, dict)) for n in items):
        raise ConfigError(f"{where}: stages = {stages!r}; give a list of stage names like ['dpt', 'dft', 'sft']")
    names = [n if isinstance(n, str) else n.get("name") for n in items]
    overrides = overrides or {}
    if not isinstance(overrides, dict) or any(not isinstance(v, dict) for v in overrides.values()):
        raise ConfigError(f"{where}: per-stage settings go in tables like [stage.dft] (a mapping per stage)")
    unknown = set(overrides) - set(names)
    if unknown:
        raise ConfigError(f"{where}: settings for stage(s) {sorted(unknown)} that are not in stages={names}")
    known = {f.name for f in dataclasses.fields(StageConfig)}
    out = []
    for n in items:
        settings = {"name": n, **overrides.get(n, {})} if isinstance(n, str) else dict(n)
        bad = sorted(set(settings) - known)
        if bad:
            raise ConfigError(f"{where}: stage {settings.get('name')}: unknown setting(s) {bad}; known: "
                              f"{', '.join(sorted(known - {'name'}))}")
        try:
            out.append(StageConfig(**settings))
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
    return out


def config_from_dict(d: dict[str, Any], where: str = "config") -> TrainConfig:
    """A recipe's mapping -> TrainConfig, with an error naming unknown keys."""
    d = dict(d)
    d.pop("models", None)  # what a run's recipe.json records about the loaded models; not a setting
    stage_tables = d.pop("stage", {}) or {}
    stages = parse_stages(d.pop("stages", ["dpt", "dft", "sft"]), stage_tables, where)
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {unknown}; known: {', '.join(sorted(known))}")
    try:
        return TrainConfig(**d, stages=stages)
    except (TypeError, ConfigError) as e:
        raise ConfigError(f"{where}: {e}") from None


def load_recipe(path: str | Path, **overrides: Any) -> TrainConfig:
    """Read a TOML / YAML / JSON recipe; keyword overrides (not None) replace its values."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such recipe file")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".toml":
        try:
            d = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML ({e}); fix that line") from None
    elif path.suffix in (".yaml", ".yml"):
        import yaml

        try:
            d = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({' '.join(str(e).split())}); fix that line") from None
    elif path.suffix == ".json":
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}:{e.lineno}: not valid JSON ({e.msg} at column {e.colno}); fix that line") from None
    else:
        raise ConfigError(f"{path}: unknown recipe format; use .toml, .yaml or .json")
    if not isinstance(d, dict):
        raise ConfigError(f"{path}: a recipe is a mapping of settings (student = ..., out = ..., stages = [...])")
    d.update({k: v for k, v in overrides.items() if v is not None})
    return config_from_dict(d, str(path))


def finetune_cli_args_to_config(*, recipe: str | Path | None = None, teacher: str | None = None,
                                student: str | None = None, data: str | None = None, stages: str | None = None,
                                from_report: str | None = None, out: str | None = None, resume: bool = False,
                                steps: int | None = None, **settings: Any) -> TrainConfig:
    """What ``cdviz finetune`` passes, as a TrainConfig: a recipe (optional) overridden by flags.

    ``steps`` sets every stage's step count; other keyword settings are TrainConfig fields
    (``batch_size=8``, ``paper_compat=True``, ...), None meaning "not given".
    """
    given = {"teacher": teacher, "student": student, "data": data, "from_report": from_report, "out": out,
             **settings}
    given = {k: v for k, v in given.items() if v is not None}
    if resume:
        given["resume"] = True
    if recipe is not None:
        cfg = load_recipe(recipe)
        base = cfg.to_dict()
        base["stages"] = [dataclasses.asdict(s) for s in cfg.stages]
        base.update(given)
    else:
        base = given
    missing = [k for k in ("student", "out") if not base.get(k)]
    if missing:
        raise ConfigError(f"missing {', '.join('--' + m for m in missing)} (or give them in the recipe)")
    if stages is not None:  # the flag picks the stages; recipe settings for those stages still apply
        from_recipe = {s["name"]: s for s in base.get("stages", []) if isinstance(s, dict)}
        base["stages"] = [from_recipe.get(n.strip(), n.strip()) for n in stages.split(",")]
    cfg = config_from_dict(base, str(recipe) if recipe else "command line")
    if steps is not None:
        check_value("command line", "--steps", steps, STAGE_RULES["steps"])
        for s in cfg.stages:
            s.steps = steps
    return cfg
