"""The ``cdviz`` command: a thin table mapping commands to library functions.

    cdviz probes make shapes --n 2000 --seed 0 --out probes/shapes
    cdviz probes import sugarcrepe ~/data/sugarcrepe --images-dir ~/data/coco/val2017 --out probes/sc
    cdviz probes show probes/shapes
    cdviz eval --model checkpoints/teacher --probes probes/shapes --out runs/eval/teacher.parquet
"""

from __future__ import annotations

import inspect
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from cdviz.errors import CdvizError, OptionError
from cdviz.types import ProbeError

app = typer.Typer(help="cdviz: find and fix where a distilled student looks differently from its teacher.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
probes_app = typer.Typer(help="Make, import and inspect probe sets.", no_args_is_help=True)
app.add_typer(probes_app, name="probes")
console = Console(stderr=True, soft_wrap=True)  # soft wrap: error messages stay greppable


@contextmanager
def progress_bar(description: str, total: int | None) -> Iterator:
    """A rich progress bar; yields ``advance(n)``."""
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task, n)


@contextmanager
def user_errors() -> Iterator[None]:
    """Bad input ends the command with its message and exit code 2, not a traceback."""
    try:
        yield
    except (CdvizError, KeyError, FileNotFoundError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        console.print(f"[red]error:[/red] {msg}")
        raise typer.Exit(2) from None


@probes_app.command("make")
def probes_make(
    world: str = typer.Argument("shapes", help="Synthetic world to generate (only 'shapes' for now)."),
    n: int = typer.Option(2000, "--n", help="Number of items."),
    seed: int = typer.Option(0, help="Random seed; the same seed gives byte-identical output."),
    image_size: int = typer.Option(64, "--image-size", help="Image side in pixels."),
    split: Optional[str] = typer.Option(None, help="Only scenes of this split (train / validation / test)."),
    out: Path = typer.Option(..., help="Output directory."),
) -> None:
    """Generate a synthetic probe set with exact object boxes."""
    with user_errors():
        if world != "shapes":
            raise KeyError(f"unknown world {world!r}; available: shapes")
        from cdviz.probes.shapes import SPLITS, make_shapes

        if split is not None and split not in SPLITS:
            raise KeyError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
        with progress_bar(f"shapes world -> {out}", n) as advance:
            ps = make_shapes(out, n=n, seed=seed, image_size=image_size, splits=(split,) if split else SPLITS,
                             progress=advance)
        console.print(f"wrote {len(ps)} items to {out}")


@probes_app.command("import")
def probes_import(
    source: str = typer.Argument(..., help="Native format: sugarcrepe, winoground, aro_vg_relation, ..."),
    path: Path = typer.Argument(..., help="Local copy of the benchmark (file or directory)."),
    out: Path = typer.Option(..., help="Output probe set directory."),
    images_dir: Optional[Path] = typer.Option(None, "--images-dir", help="Folder with the benchmark's images."),
    coco_annotations: Optional[Path] = typer.Option(None, "--coco-annotations", help="COCO instances_val2017.json for boxes."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Record bad items as skips instead of stopping."),
) -> None:
    """Convert a local benchmark copy into a cdviz probe set (images are referenced, not copied)."""
    from cdviz.probes.probeset import Skip, save_probeset
    from cdviz.probes.registry import get_source

    with user_errors():
        loader = get_source(source)
        options = {k: v for k, v in {"images_dir": images_dir, "coco_annotations": coco_annotations}.items() if v is not None}
        accepted = inspect.signature(loader).parameters
        for name in options:
            if name not in accepted:
                raise ProbeError(f"--{name.replace('_', '-')} does not apply to {source!r}; leave it out")
        items, skipped = [], []
        with progress_bar(f"import {source}", None) as advance:
            for item in _guarded(loader(path, **options), skip_bad, skipped):
                items.append(item)
                advance(1)
        save_probeset(items, out, name=f"{source}:{path}", params={"source": source, "path": str(path),
                      **{k: str(v) for k, v in options.items()}}, skipped=[Skip(**s) for s in skipped])
        console.print(f"wrote {len(items)} items to {out}" + (f" ({len(skipped)} skipped)" if skipped else ""))


def _guarded(iterator, skip_bad: bool, skipped: list[dict]):
    """Yield from a loader; with skip_bad, a bad item is recorded and the loader resumes."""
    it = iter(iterator)
    while True:
        try:
            yield next(it)
        except StopIteration:
            return
        except ProbeError as e:
            if not skip_bad:
                raise
            skipped.append({"where": str(e).split(": ")[0], "reason": str(e)})


@probes_app.command("show")
def probes_show(root: Path = typer.Argument(..., help="Probe set directory.")) -> None:
    """Counts per category, skill and split; box coverage; a few examples."""
    from cdviz.probes.probeset import load_probeset

    with user_errors():
        ps = load_probeset(root)
    out = Console()
    out.print(f"[bold]{ps.meta.get('name', root)}[/bold]: {len(ps)} items ({len(ps.skipped)} skipped)")
    counts = ps.counts()
    table = Table("category", "skill", "items", "with boxes")
    for (cat, skill), group in _group(ps.items).items():
        table.add_row(cat, skill, str(len(group)), str(sum(bool(i.boxes) for i in group)))
    out.print(table)
    for key in ("skill", "split", "source"):
        out.print(f"{key}: " + ", ".join(f"{k}={v}" for k, v in sorted(counts[key].items())))
    for item in ps.items[:3]:
        out.print(f"  {item.uid}: {item.question} {list(item.options)} -> {item.options[item.correct]!r}",
                  markup=False)


def _group(items):
    groups: dict[tuple[str, str], list] = {}
    for i in items:
        groups.setdefault((i.category, i.skill), []).append(i)
    return dict(sorted(groups.items()))


@app.command("eval")
def eval_cmd(
    model: str = typer.Option(..., help="Local HF model directory or hub id org/name[@revision] (fetched into / read "
                              "from the HF cache; HF_HUB_OFFLINE=1: the cache only)."),
    probes: Path = typer.Option(..., help="Probe set directory."),
    out: Path = typer.Option(..., help="Per-query outcomes (.parquet); a .summary.json is written beside it."),
    batch_size: int = typer.Option(8, "--batch-size"),
    device: str = typer.Option("cpu", help="cpu, cuda, cuda:1, ... (unused with --device-map)."),
    device_map: Optional[str] = typer.Option(None, "--device-map", help="auto: spread the model over the visible "
                                             "GPUs with accelerate (balanced, sequential also work)."),
    dtype: str = typer.Option("float32", help="float32, bfloat16, float16 or auto (the checkpoint's own)."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Record bad items as skips instead of stopping."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Allow the checkpoint's own code."),
    blind: bool = typer.Option(False, "--blind", help="Text-only control: each image replaced by a flat image of its "
                               "mean colour; accuracy above chance then comes from the texts alone."),
    protocol: str = typer.Option("letters", help="letters: the option letters' logits, every order; likelihood: "
                                 "each option's log-probability as the answer (generative scoring); match: one "
                                 "yes/no query per option, scored log P(yes) - log P(no) (pairwise and strict)."),
) -> None:
    """Two-choice accuracy (both orders, consistent, or match pairwise / strict), recognition and Winoground scores."""
    from cdviz.evaluate import evaluate, summarize
    from cdviz.io import write_json_atomic, write_parquet_atomic
    from cdviz.models import load_model
    from cdviz.probes.probeset import load_probeset

    from cdviz.evaluate import PROTOCOLS
    from cdviz.models.loading import parse_dtype
    from cdviz.record.recorder import check_probes

    with user_errors():
        check_count("--batch-size", batch_size)
        parse_dtype(dtype)
        if protocol not in PROTOCOLS:
            raise OptionError(f"--protocol {protocol!r}: choose one of {', '.join(PROTOCOLS)}")
        ps = load_probeset(probes, skip_bad=skip_bad)
        check_probes(ps)
        adapter = load_model(model, dtype=dtype, device=device, device_map=device_map,
                             trust_remote_code=trust_remote_code)
        with progress_bar(f"eval {Path(model).name}", len(ps)) as advance:
            frame, skipped = evaluate(adapter, ps, batch_size=batch_size, skip_bad=skip_bad, blind=blind,
                                      protocol=protocol, progress=advance)
        if frame.empty:
            first = skipped[0].reason if skipped else "no outcome rows"
            raise OptionError(f"{model}: no item of {probes} could be scored ({len(skipped)} skipped; first: {first}); "
                              "nothing written")
    summary = summarize(frame)
    summary.update(model=str(model), model_origin=adapter.origin.to_dict(), probes=str(probes), blind=blind,
                   protocol=protocol, skipped=[s.to_dict() for s in (*ps.skipped, *skipped)])
    write_parquet_atomic(out, frame)
    summary_path = out.with_suffix(".summary.json")
    write_json_atomic(summary_path, summary)
    print_summary(summary, title=f"{Path(model).name} on {probes.name}")
    console.print(f"outcomes: {out}\nsummary:  {summary_path}")


@app.command("record")
def record_cmd(
    teacher: str = typer.Option(..., help="Teacher: model directory or hub id org/name[@revision]."),
    student: str = typer.Option(..., help="Student: model directory or hub id org/name[@revision]."),
    probes: Path = typer.Option(..., help="Probe set directory."),
    out: Path = typer.Option(..., help="Run directory (resumes if it holds the same run)."),
    layers: Optional[str] = typer.Option(None, help="Decoder layers to record, e.g. '0,2,4' or '2-5' (default: all)."),
    queries: str = typer.Option("answer", help="Text query rows: 'answer' (answer position) or 'prompt' (every text token)."),
    store_block: bool = typer.Option(False, "--store-block", help="Also store the head-mean image->image block (N^2 per layer)."),
    shard_size: int = typer.Option(32, "--shard-size", help="Items per shard (the unit of resumption)."),
    batch_size: int = typer.Option(8, "--batch-size"),
    device: str = typer.Option("auto", help="auto (cuda:LOCAL_RANK when available), cpu, cuda, ... (unused with "
                               "--device-map)."),
    device_map: Optional[str] = typer.Option(None, "--device-map", help="auto: spread each model over the visible "
                                             "GPUs with accelerate (one process; balanced, sequential also work)."),
    dtype: str = typer.Option("float32", help="float32, bfloat16, float16 or auto (each checkpoint's own)."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Record bad items as skips instead of stopping."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code"),
    protocol: str = typer.Option("letters", help="How choice items are asked: letters (every option order; the first "
                                 "order is captured) or match (one yes/no query per option; the true option's query "
                                 "is captured)."),
    match_record: str = typer.Option("true", "--match-record", help="With --protocol match: capture the true "
                                     "option's query only (true) or every option's (all; RunStore.get(..., option=k))."),
) -> None:
    """Record teacher and student attention (and their answers) on a probe set into a run store."""
    import os

    import torch

    from cdviz.models import load_pair
    from cdviz.probes.probeset import load_probeset
    from cdviz.record import RecordOptions, record_run

    if device == "auto":
        device = f"cuda:{os.environ.get('LOCAL_RANK', 0)}" if torch.cuda.is_available() else "cpu"
    if device_map and int(os.environ.get("WORLD_SIZE", 1)) > 1:
        raise typer.BadParameter("--device-map spreads each model over every visible GPU from one process; run it "
                                 "without torchrun / accelerate launch (or drop --device-map to shard the probes)")
    from cdviz.record.recorder import check_options, check_probes

    with user_errors():
        options = RecordOptions(layers=parse_layers(layers), queries=queries, store_block=store_block,
                                shard_size=shard_size, batch_size=batch_size, dtype=dtype, protocol=protocol,
                                match_record=match_record)
        check_options(options)
        ps = load_probeset(probes, skip_bad=skip_bad)
        check_probes(ps)
        t, s, report = load_pair(teacher, student, dtype=dtype, device=device, device_map=device_map,
                                 trust_remote_code=trust_remote_code)
        for w in report.warnings:
            console.print(f"[yellow]warning:[/yellow] {w}")
        with progress_bar(f"record -> {out}", len(ps)) as advance:
            record_run(t, s, ps, out, options, skip_bad=skip_bad, progress=advance)
    if ps.skipped:  # probe lines dropped on load; also in the store manifest's "skipped" list
        console.print(f"[yellow]{len(ps.skipped)} probe line(s) skipped on load[/yellow] (listed in {out}/manifest.json):")
        for skip in ps.skipped[:5]:
            console.print(f"  {skip.where}: {skip.reason}")
    console.print(f"run store: {out}")


def parse_layers(spec: Optional[str]) -> Optional[tuple[int, ...]]:
    """'0,2,4' or '2-5' or '0,3-4' -> (0, 2, 4) / (2, 3, 4, 5) / (0, 3, 4); None stays None."""
    if spec is None:
        return None
    out: list[int] = []
    for part in spec.split(","):
        part = part.strip()
        try:
            bounds = [int(x) for x in part.split("-")] if "-" in part else [int(part)]
        except ValueError:
            raise ProbeError(f"--layers {spec!r}: {part!r} is not a layer number or range like 2-5") from None
        if len(bounds) > 2:
            raise ProbeError(f"--layers {spec!r}: {part!r} is not a layer number or range like 2-5")
        lo, hi = bounds[0], bounds[-1]
        if lo > hi:
            raise ProbeError(f"--layers {spec!r}: the range {part!r} runs backwards; write {hi}-{lo}")
        out.extend(range(lo, hi + 1))
    if not out:
        raise ProbeError(f"--layers {spec!r} selects no layer; give layers like '0,2,4' or '2-5'")
    return tuple(sorted(set(out)))


def check_count(option: str, value: int) -> None:
    """A count option (items per batch, per shard) must be 1 or more."""
    if value < 1:
        raise OptionError(f"{option} {value}: give 1 or more")


@app.command("report")
def report_cmd(
    run: Path = typer.Argument(..., help="Run store directory."),
    out: Optional[Path] = typer.Option(None, help="Output directory (default RUN/report)."),
    attribution_items: int = typer.Option(0, "--attribution-items", help="Also run captum attribution on N items (loads both models)."),
    n_boot: int = typer.Option(1000, "--n-boot", help="Bootstrap replicates for intervals."),
    n_perm: int = typer.Option(1000, "--n-perm", help="Permutations for p-values."),
    device: str = typer.Option("cpu", help="Device for attribution."),
) -> None:
    """Misalignment report: index.html, report.md, summary.json and tables."""
    from cdviz.report import build_report
    from cdviz.report.build import report_steps

    from cdviz.store import open_run

    with user_errors():
        if n_boot < 1 or n_perm < 1 or attribution_items < 0:
            raise OptionError("--n-boot and --n-perm must be 1 or more, --attribution-items 0 or more")
        open_run(run).require_whole()  # a partial or damaged run is named, never analysed as if whole
        total = report_steps(run, attribution_items)
        with progress_bar(f"report {run}", total) as advance:
            path = build_report(run, out, advance, n_boot=n_boot, n_perm=n_perm,
                                attribution_items=attribution_items, device=device)
    console.print(f"report: {path / 'index.html'}\nsummary: {path / 'summary.json'}")


@app.command("verify")
def verify_cmd(
    run: Path = typer.Argument(..., help="Run store directory."),
    checksums: bool = typer.Option(False, "--checksums", help="Also compare each shard's sha256 with the one "
                                   "recorded (reads every file)."),
) -> None:
    """Say which shards of a run are missing or damaged, and the command that repairs them (exit 1 if any)."""
    from cdviz.store import open_run

    with user_errors():
        health = open_run(run).health(checksums=checksums)
    if health.ok:
        console.print(f"{run}: all {health.n_shards} shards recorded and intact ({health.n_recorded} items)")
        return
    console.print(f"[red]incomplete:[/red] {health.message()}")
    raise typer.Exit(1)


@app.command("compare")
def compare_cmd(
    before: Path = typer.Argument(..., help="Run store before (e.g. student-kd)."),
    after: Path = typer.Argument(..., help="Run store after (e.g. student-compodistill)."),
    out: Optional[Path] = typer.Option(None, help="Output directory (default AFTER/compare)."),
    n_boot: int = typer.Option(1000, "--n-boot"),
) -> None:
    """Per-layer misalignment and per-category accuracy deltas, with intervals."""
    from cdviz.report import compare_runs
    from cdviz.store import open_run

    with user_errors():
        for run in (before, after):
            open_run(run).require_whole()  # a partial or damaged run is named, never compared as if whole
        with progress_bar("compare", None) as advance:
            path = compare_runs(before, after, out or after / "compare", n_boot=n_boot, progress=advance)
    console.print(f"comparison: {path / 'compare.html'}\nsummary: {path / 'summary.json'}")


@app.command("finetune")
def finetune_cmd(
    student: Optional[str] = typer.Option(None, help="Student: model directory or hub id org/name[@revision]."),
    teacher: Optional[str] = typer.Option(None, help="Teacher: model directory or hub id org/name[@revision]."),
    out: Optional[Path] = typer.Option(None, help="Output directory."),
    recipe: Optional[Path] = typer.Option(None, help="Recipe file (TOML / YAML / JSON); flags override it."),
    data: Optional[str] = typer.Option(None, help="'shapes' (default) or a JSONL of LLaVA conversations."),
    stages: Optional[str] = typer.Option(None, help="Comma-separated stages from dpt, dft, sft, ce (see above)."),
    from_report: Optional[Path] = typer.Option(None, "--from-report", help="Run whose report picks the VAT layers."),
    steps: Optional[int] = typer.Option(None, help="Optimizer steps per stage (default: one epoch of the data)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Micro-batch per process (default 4)."),
    paper_compat: Optional[bool] = typer.Option(None, "--paper-compat/--no-paper-compat",
                                                help="Reproduce the reference code's KD mask and windows."),
    eval_probes: Optional[Path] = typer.Option(None, "--eval-probes", help="Evaluate the result on this probe set."),
    rerecord: Optional[Path] = typer.Option(None, "--rerecord", help="Re-record teacher + result on this probe set."),
    protocol: Optional[str] = typer.Option(None, help="Protocol of --eval-probes / --rerecord (letters, match; "
                                           "default: the --from-report run's, else letters)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the latest checkpoint."),
) -> None:
    """Fine-tune a student with CompoDistill (KD + VAT + TAF), stage after stage.

    Stages (--stages; run in the order given, each from the previous one's model):

      dpt  TAF linear only; CE + KD            distilled pre-training
      dft  LoRA + TAF linear; CE + KD + VAT    distilled fine-tuning
      sft  fresh LoRA on the merged model + TAF linear; CE only (no teacher)
      ce   every weight; CE only               plain training (no teacher)

    Default: dpt,dft,sft. LoRA covers every linear of the language model;
    only ce trains the vision tower. TAF: the student sees images through a
    frozen copy of the teacher's connector plus a trainable linear. VAT
    aligns image-to-image attention in the layers the report of
    --from-report RUN recommends (default: the paper's middle band).

    Per-stage settings (lr, LoRA rank, loss weights, grad_accum, ...) live in
    a --recipe (cdviz/train/recipes/*.toml); flags override it. Output:
    OUT/model, a plain HF model directory (LoRA merged, TAF folded in where
    exact), OUT/<stage>/metrics.jsonl and resumable checkpoints. Runs on a GPU
    when one is visible (bf16 autocast), else on the CPU. Several GPUs:
    accelerate launch --multi_gpu --num_processes N -m cdviz.train RECIPE.toml
    """
    from cdviz.train.config import finetune_cli_args_to_config
    from cdviz.train.finetune import finetune

    with user_errors():
        cfg = finetune_cli_args_to_config(
            recipe=recipe, teacher=_str(teacher), student=_str(student), data=data, stages=stages,
            from_report=_str(from_report), out=_str(out), resume=resume, steps=steps, batch_size=batch_size,
            paper_compat=paper_compat, eval_probes=_str(eval_probes), record_probes=_str(rerecord),
            eval_protocol=protocol)
        final = finetune(cfg)
    console.print(f"model: {final}")


def _str(p: Optional[Path]) -> Optional[str]:
    return None if p is None else str(p)


zoo_app = typer.Typer(help="The bundled demo models.", no_args_is_help=True)
app.add_typer(zoo_app, name="zoo")


@zoo_app.command("build")
def zoo_build_cmd(
    out: Path = typer.Option(Path("checkpoints"), help="Where the four models go."),
    seed: int = typer.Option(0, help="Seed for data, initialisation and training."),
    teacher_ground: float = typer.Option(1.0, "--teacher-ground",
                                         help="Weight of the teacher's grounding loss (0: off)."),
    teacher_route: float = typer.Option(1.0, "--teacher-route",
                                        help="Weight of the teacher's route loss (the answer row reads the words "
                                             "naming the asked-about objects; 0: off)."),
    teacher_qa_steps: int = typer.Option(400, "--teacher-qa-steps",
                                         help="Teacher steps on the short questions alone before the full mix."),
    teacher_bind_steps: int = typer.Option(0, "--teacher-bind-steps",
                                           help="Teacher steps after the warm-up on --teacher-bind-kinds (0: none)."),
    teacher_bind_kinds: str = typer.Option("caption,choice,qa", "--teacher-bind-kinds",
                                           help="The mix of those steps: some of caption, choice, match, qa, qa:TYPE."),
    teacher_steps: int = typer.Option(2000, "--teacher-steps", help="Last teacher steps, on the full mix."),
    teacher_qa_kinds: str = typer.Option("qa:colour", "--teacher-qa-kinds",
                                         help="Which questions those steps use: qa, or some of qa:colour, qa:where, "
                                              "qa:relation, qa:exists, qa:count, comma-separated."),
    protocol: str = typer.Option("match", help="How the held-out set is scored and recorded: match or letters."),
) -> None:
    """Train teacher, student-sft, student-kd and student-compodistill (resumable)."""
    from cdviz.zoo import ZooSpec, build_zoo

    if min(teacher_ground, teacher_route, teacher_qa_steps, teacher_bind_steps) < 0 or teacher_steps < 1:
        raise typer.BadParameter("--teacher-ground, --teacher-route, --teacher-qa-steps and --teacher-bind-steps "
                                 "must be >= 0, --teacher-steps >= 1")
    from cdviz.probes.shapes import SAMPLE_KINDS

    def kind_list(text: str, flag: str) -> tuple[str, ...]:
        kinds = tuple(k.strip() for k in text.split(",") if k.strip())
        if not kinds or set(kinds) - set(SAMPLE_KINDS):
            raise typer.BadParameter(f"{flag} {text!r}: give some of {', '.join(SAMPLE_KINDS)}")
        return kinds

    kinds = kind_list(teacher_qa_kinds, "--teacher-qa-kinds")
    bind_kinds = kind_list(teacher_bind_kinds, "--teacher-bind-kinds")
    if protocol not in ("match", "letters"):
        raise typer.BadParameter(f"--protocol {protocol!r}: choose match or letters")
    spec = ZooSpec(seed=seed, teacher_ground=teacher_ground, teacher_route=teacher_route,
                   teacher_qa_steps=teacher_qa_steps, teacher_qa_kinds=kinds,
                   teacher_bind_steps=teacher_bind_steps, teacher_bind_kinds=bind_kinds, teacher_steps=teacher_steps,
                   protocol=protocol)
    with user_errors():
        build_zoo(out, spec, log=lambda m: console.print(f"[bold]{m}[/bold]"))
    console.print(f"models and manifest in {out}")


@zoo_app.command("binding")
def zoo_binding_cmd(
    model: str = typer.Option(..., help="Model directory (e.g. checkpoints/teacher) or hub id org/name[@revision]."),
    scenes: int = typer.Option(60, help="Held-out (test-split) shapes scenes to ask about."),
    seed: int = typer.Option(0, help="Seed of the shapes world (the zoo's)."),
    image_size: int = typer.Option(48, "--image-size", help="Scene size in pixels (the zoo's)."),
) -> None:
    """Colour binding: "What colour is the SHAPE?" accuracy by objects in the scene (cdviz/binding.py)."""
    from cdviz.binding import colour_binding
    from cdviz.models import load_model

    if scenes < 1:
        raise typer.BadParameter("--scenes must be >= 1")
    with user_errors():
        adapter = load_model(model)
        with progress_bar(f"binding {Path(model).name}", scenes) as advance:
            result = colour_binding(adapter, scenes=scenes, seed=seed, image_size=image_size, progress=advance)
    n = max(1, result["n"])
    console.print(f"{result['n']} colour questions: right {100 * result['right'] / n:.1f}%, "
                  f"answer names a colour in view {100 * result['in_view'] / n:.1f}%")
    for objects, (right, total) in result["by_objects"].items():
        console.print(f"  {objects} object(s): {right}/{total}")


@zoo_app.command("evaluate")
def zoo_evaluate_cmd(
    out: Path = typer.Option(Path("checkpoints"), help="A folder `cdviz zoo build` has filled."),
    protocol: Optional[str] = typer.Option(None, help="letters or match (default: the manifest's; letters for a "
                                           "manifest written before protocols existed)."),
) -> None:
    """Re-measure the shipped models without retraining (new held-out set, records, reports, controls);
    rewrites OUT/manifest.json and OUT/README.md."""
    from cdviz.zoo import evaluate_zoo, headline_view

    with user_errors():
        manifest = evaluate_zoo(out, protocol, log=lambda m: console.print(f"[bold]{m}[/bold]"))
    for name, m in manifest["models"].items():
        view = headline_view(m["metrics"])
        console.print(f"{name}: recognition {view['by_skill'].get('recognition')}, perception mean "
                      f"{view['perception_mean']} ({view['measure']})")


@zoo_app.command("seeds")
def zoo_seeds_cmd(
    out: Path = typer.Option(Path("checkpoints"), help="A folder `cdviz zoo build` has filled."),
    seed: int = typer.Option(0, help="The seed the zoo was built with."),
    seeds: str = typer.Option("1,2", help="Student seeds to add, comma-separated (the shipped pair is the zoo's seed)."),
) -> None:
    """Retrain student-kd and student-compodistill with other student seeds (resumable); writes the
    recovered share of the KD gap per seed and its 95% interval into OUT/manifest.json and README.md."""
    from cdviz.zoo import ZooSpec, build_seeds

    try:
        chosen = tuple(int(v) for v in seeds.split(",") if v.strip())
    except ValueError:
        raise typer.BadParameter(f"--seeds {seeds!r}: give integers, comma-separated, e.g. 1,2") from None
    if not chosen or seed in chosen:
        raise typer.BadParameter(f"--seeds {seeds!r}: give seeds other than the zoo's own ({seed})")
    with user_errors():
        result = build_seeds(out, ZooSpec(seed=seed), chosen, log=lambda m: console.print(f"[bold]{m}[/bold]"))
    agg = result["recovered"]
    console.print(f"recovered share of the KD gap over {agg['n']} seeds: mean {agg['mean']}, "
                  f"95% interval {agg['ci_low']} .. {agg['ci_high']}")


@zoo_app.command("variations")
def zoo_variations_cmd(
    out: Path = typer.Option(Path("checkpoints"), help="A folder `cdviz zoo build` has filled."),
    seed: int = typer.Option(0, help="The seed the zoo was built with."),
    only: Optional[list[str]] = typer.Option(None, "--only", help="Run just these variations (repeatable)."),
) -> None:
    """Retrain student-compodistill with one change each (VAT on all layers, VAT weight 4, plus text-to-image
    alignment), evaluate and record each; writes OUT/variations.json and the table in OUT/README.md."""
    from cdviz.zoo import ZooSpec, build_variations, headline_view

    with user_errors():
        results = build_variations(out, ZooSpec(seed=seed), names=tuple(only) if only else None,
                                   log=lambda m: console.print(f"[bold]{m}[/bold]"))
    for name, r in results.items():
        view = headline_view(r["metrics"])
        console.print(f"{name}: perception mean {view['perception_mean']} ({view['measure']})")


bench_app = typer.Typer(help="Benchmarks that print ratios measured side by side in one run.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


@bench_app.command("record")
def bench_record_cmd(
    device: str = typer.Option("cpu", help="cpu or cuda."),
    seq_len: int = typer.Option(1024, "--seq-len", help="Tokens per sample."),
    image_tokens: int = typer.Option(576, "--image-tokens", help="Image tokens (a square number)."),
    n_layers: int = typer.Option(4, "--n-layers"),
    hidden: int = typer.Option(2048, "--hidden"),
    heads: int = typer.Option(16, "--heads"),
    kv_heads: int = typer.Option(16, "--kv-heads"),
    intermediate: int = typer.Option(5504, "--intermediate", help="MLP width."),
    layers: Optional[str] = typer.Option(None, help="Layers to record (default: all)."),
    repeats: int = typer.Option(5, help="Interleaved timing rounds (median reported)."),
    dtype: str = typer.Option("float32", help="float32 or bfloat16 (CUDA)."),
) -> None:
    """Plain SDPA forward vs cdviz recording vs eager output_attentions, side by side."""
    from cdviz.bench_record import BenchConfig, run_bench

    with user_errors():
        r = run_bench(BenchConfig(device=device, seq_len=seq_len, image_tokens=image_tokens, n_layers=n_layers,
                                  hidden=hidden, n_heads=heads, n_kv_heads=kv_heads, intermediate=intermediate,
                                  layers=parse_layers(layers),
                                  repeats=repeats, dtype=dtype))
    out = Console()
    c = r["config"]
    out.print(f"model: {c['n_layers']} layers, hidden {c['hidden']}, MLP {c['intermediate']}, "
              f"{c['n_heads']} heads ({c['n_kv_heads']} kv), "
              f"T={c['seq_len']} with {c['image_tokens']} image tokens, {c['device']} {c['dtype']}")
    table = Table("approach", "median s", f"peak ({r['peak_kind']})")
    for name in ("sdpa", "cdviz", "eager"):
        table.add_row(name, f"{r['median_s'][name]:.4f}", _mib(r["peak_bytes"][name]))
    out.print(table)
    out.print(f"ratio cdviz / sdpa  (b/a): {r['ratio_cdviz_over_sdpa']:.3f}")
    out.print(f"ratio eager / cdviz (c/b): {r['ratio_eager_over_cdviz']:.3f}")
    out.print(f"stored per sample (fp16): {_mib(r['stored_bytes_per_sample'])}")
    t7 = Table("T", "eager output_attentions", "cdviz transient (1 layer)", "cdviz kept",
               title="7B-class analytic attention memory per sample (32 layers x 32 heads, 576 image tokens, bf16)")
    for row in r["analytic_7b"]:
        t7.add_row(str(row["T"]), _mib(row["eager_bytes"]), _mib(row["cdviz_transient_bytes"]), _mib(row["cdviz_kept_bytes"]))
    out.print(t7)


@bench_app.command("train")
def bench_train_cmd(
    device: str = typer.Option("cpu", help="cpu or cuda."),
    seq_len: int = typer.Option(1024, "--seq-len", help="Tokens per sample."),
    image_tokens: int = typer.Option(576, "--image-tokens", help="Image tokens (a square number)."),
    answer_tokens: int = typer.Option(64, "--answer-tokens", help="Labelled answer tokens at the end (CE / KD rows)."),
    layers: int = typer.Option(8, "--layers", help="Student decoder layers."),
    hidden: int = typer.Option(512, "--hidden", help="Student hidden size."),
    heads: int = typer.Option(8, "--heads", help="Student attention heads."),
    teacher_layers: int = typer.Option(12, "--teacher-layers"),
    teacher_hidden: int = typer.Option(768, "--teacher-hidden"),
    teacher_heads: int = typer.Option(12, "--teacher-heads"),
    repeats: int = typer.Option(3, help="Interleaved timing rounds (median reported)."),
    dtype: str = typer.Option("float32", help="float32 or bfloat16 (CUDA)."),
    threads: Optional[int] = typer.Option(None, help="CPU threads (default: torch's)."),
) -> None:
    """Training step time and peak memory: CE+KD vs + VAT (cdviz capture) vs + VAT (eager output_attentions)."""
    from cdviz.bench_train import VARIANTS, TrainBenchConfig, run_bench

    with user_errors():
        r = run_bench(TrainBenchConfig(device=device, seq_len=seq_len, image_tokens=image_tokens,
                                       answer_tokens=answer_tokens, layers=layers, hidden=hidden, heads=heads,
                                       teacher_layers=teacher_layers, teacher_hidden=teacher_hidden,
                                       teacher_heads=teacher_heads, repeats=repeats, dtype=dtype,
                                       threads=threads))
    out = Console()
    c, lm = r["config"], r["layer_map"]
    mlp = r["mlp"]
    out.print(f"student: {c['layers']} layers, hidden {c['hidden']}, MLP {mlp['student']}, {c['heads']} heads; "
              f"teacher: {c['teacher_layers']} layers, hidden {c['teacher_hidden']}, MLP {mlp['teacher']}, "
              f"{c['teacher_heads']} heads; T={c['seq_len']} with {c['image_tokens']} image tokens and "
              f"{c['answer_tokens']} answer tokens, batch 1, {c['device']} {c['dtype']}"
              + (f", {c['threads']} CPU threads" if c["device"] == "cpu" else ""))
    out.print(f"VAT layers: student {lm['student_layers']} <- teacher groups {lm['teacher_groups']}; step = forward + "
              f"backward + AdamW on the student's language model and connector; median of {c['repeats']} rounds")
    table = Table("step", "median s", "peak MiB above resident")
    labels = {"ce+kd": "(a) CE+KD, SDPA", "ce+kd+vat": "(b) CE+KD+VAT, cdviz capture",
              "eager ref.": "(c) CE+KD+VAT, eager output_attentions"}
    for v in VARIANTS:
        table.add_row(labels[v], f"{r['median_s'][v]:.3f}", f"{r['peak_bytes'][v] / 2**20:,.1f}")
    out.print(table)
    out.print(f"peak memory: {r['peak_method']}")
    for text, key, goal, ok in (
            ("ratio (b)/(a) step time  ", "ratio_b_over_a_time", "target <= 1.3", lambda x: x <= 1.3),
            ("ratio (c)/(b) step time  ", "ratio_c_over_b_time", "target >= 2", lambda x: x >= 2),
            ("ratio (c)/(b) peak memory", "ratio_c_over_b_peak", "target >= 4", lambda x: x >= 4)):
        out.print(f"{text}: {r[key]:.2f}  ({goal}: {'met' if ok(r[key]) else 'MISSED'})")


@bench_app.command("report")
def bench_report_cmd(n_items: int = typer.Option(1000, "--n-items", help="Items in the synthetic store.")) -> None:
    """Time each phase of `cdviz report` on a synthetic store shaped like the demo pair."""
    from cdviz.bench_report import bench_report

    bench_report(n_items, console=Console())


@bench_app.command("targets", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def bench_targets_cmd(ctx: typer.Context) -> None:
    """Detection power of the fine-tune target rule on planted synthetic stores (options: --help of
    python -m cdviz.bench_targets)."""
    from cdviz.bench_targets import main as targets_main

    raise typer.Exit(targets_main(list(ctx.args)))


@bench_app.command("gpu", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def bench_gpu_cmd(ctx: typer.Context) -> None:
    """The one-shot GPU check (make gpu-check): real-size models from configs, record and train steps in bf16;
    without a GPU it says so and exits 0 (options: --help of python -m cdviz.gpu_check)."""
    from cdviz.gpu_check import main as gpu_main

    raise typer.Exit(gpu_main(list(ctx.args)))


@bench_app.command("app")
def bench_app_cmd(n_items: int = typer.Option(1000, "--n-items", help="Items in the synthetic run."),
                  repeats: int = typer.Option(3, help="Timing rounds (median reported).")) -> None:
    """Time to first render of the dashboard's Overview and Item explorer."""
    from cdviz.bench_app import bench_app

    bench_app(n_items, repeats=repeats, console=Console())


def _mib(n: int) -> str:
    return f"{n / 2**20:,.2f} MiB"


def print_summary(summary: dict, title: str) -> None:
    out = Console()
    if summary.get("protocol") == "match" and "pairwise_mean_over_categories" in summary:
        table = Table("category", "n", "pairwise", "strict", title=f"{title} (match protocol)")
        for group in ("by_category", "by_skill"):
            for name, row in summary.get(group, {}).items():
                label = f"[bold]{name}[/bold]" if group == "by_skill" else name
                table.add_row(label, str(row["n"]), f"{row['pairwise']:.1f}", f"{row['strict']:.1f}")
        out.print(table)
        out.print(f"perception mean over categories: pairwise {summary['pairwise_mean_over_categories']:.1f}, "
                  f"strict {summary['strict_mean_over_categories']:.1f}")
        return
    table = Table("category", "n", "acc per order", "mean", "consistent", title=title)
    for cat, row in summary.get("by_category", {}).items():
        orders = " / ".join(f"{v:.1f}" for v in row["accuracy_per_order"].values())
        table.add_row(cat, str(row["n"]), orders, f"{row['accuracy']:.1f}", f"{row['consistent']:.1f}")
    for skill, row in summary.get("by_skill", {}).items():
        table.add_row(f"[bold]{skill}[/bold]", str(row["n"]), "", f"{row['accuracy']:.1f}", f"{row['consistent']:.1f}")
    out.print(table)
    if "winoground" in summary:
        w = summary["winoground"]
        out.print(f"Winoground (n={w['n']}): text {w['text']:.1f}  image {w['image']:.1f}  group {w['group']:.1f}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
