"""``cdviz zoo build | binding | evaluate | seeds | variations``: the bundled demo models (cdviz.zoo)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cdviz.cli.common import console, progress_bar, user_errors


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
    teacher_more_steps: int = typer.Option(0, "--teacher-more-steps",
                                           help="Teacher steps after the full mix, on the same mix from a lower "
                                                "peak learning rate (0: none)."),
    teacher_more_lr: float = typer.Option(5e-4, "--teacher-more-lr", help="Peak learning rate of those steps."),
    teacher_presence_steps: int = typer.Option(1000, "--teacher-presence-steps",
                                               help="Last teacher steps: existence questions with hard negatives and "
                                                    "the presence loss (0: none; checkpoints/DESIGNS.md, designs 14-15)."),
    teacher_presence_lr: float = typer.Option(5e-4, "--teacher-presence-lr", help="Peak learning rate of those steps."),
    teacher_qa_kinds: str = typer.Option("qa:colour", "--teacher-qa-kinds",
                                         help="Which questions those steps use: qa, or some of qa:colour, qa:where, "
                                              "qa:relation, qa:exists, qa:count, comma-separated."),
    fix_t2i: float = typer.Option(1.0, "--fix-t2i",
                                  help="Weight of the answer-row text-to-image alignment beside VAT in "
                                       "student-compodistill (0: VAT alone, the paper's recipe)."),
    protocol: str = typer.Option("match", help="How the held-out set is scored and recorded: match or letters."),
) -> None:
    """Train teacher, student-sft, student-kd and student-compodistill (resumable)."""
    from cdviz.zoo import ZooSpec, build_zoo

    for flag, value in (("--teacher-ground", teacher_ground), ("--teacher-route", teacher_route),
                        ("--teacher-qa-steps", teacher_qa_steps), ("--teacher-bind-steps", teacher_bind_steps),
                        ("--teacher-more-steps", teacher_more_steps),
                        ("--teacher-presence-steps", teacher_presence_steps), ("--fix-t2i", fix_t2i)):
        if value < 0:
            raise typer.BadParameter(f"{flag} {value}: must be >= 0")
    if teacher_steps < 1:
        raise typer.BadParameter(f"give --teacher-steps >= 1 (got {teacher_steps})")
    for flag, value in (("--teacher-more-lr", teacher_more_lr), ("--teacher-presence-lr", teacher_presence_lr)):
        if value <= 0:
            raise typer.BadParameter(f"give {flag} > 0 (got {value})")
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
                   teacher_more_steps=teacher_more_steps, teacher_more_lr=teacher_more_lr,
                   teacher_presence_steps=teacher_presence_steps, teacher_presence_lr=teacher_presence_lr,
                   fix_t2i=fix_t2i, protocol=protocol)
    with user_errors():
        manifest = build_zoo(out, spec, log=lambda m: console.print(f"[bold]{m}[/bold]"))
    took = manifest.get("build_time") or {}
    note = "" if took.get("uninterrupted", True) else f" over {took['runs']} processes"
    console.print(f"models and manifest in {out}"
                  + (f"; build phases took {took['minutes']:.1f} minutes{note}" if took else ""))


def zoo_binding_cmd(
    model: str = typer.Option(..., help="Model directory (e.g. checkpoints/teacher) or hub id org/name[@revision]."),
    scenes: int = typer.Option(60, help="Held-out (test-split) shapes scenes to ask about."),
    seed: int = typer.Option(0, help="Seed of the shapes world (the zoo's)."),
    image_size: int = typer.Option(48, "--image-size", help="Scene size in pixels (the zoo's)."),
) -> None:
    """Colour binding: "What colour is the SHAPE?" accuracy by objects in the scene (cdviz/diagnostics/binding.py)."""
    from cdviz.diagnostics.binding import colour_binding
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


def _zoo_spec(out: Path, seed: int):
    """The spec the zoo in ``out`` was built with, so added students train as its shipped ones did."""
    from cdviz.zoo import ZooSpec
    from cdviz.zoo.spec import built_spec

    if not (out / "manifest.json").is_file():
        return ZooSpec(seed=seed)  # the command then says the zoo must be built first
    spec = built_spec(out)
    if spec.seed != seed:
        raise typer.BadParameter(f"--seed {seed}: the zoo in {out} was built with seed {spec.seed}")
    return spec


def zoo_seeds_cmd(
    out: Path = typer.Option(Path("checkpoints"), help="A folder `cdviz zoo build` has filled."),
    seed: int = typer.Option(0, help="The seed the zoo was built with."),
    seeds: str = typer.Option("1,2", help="Student seeds to add, comma-separated (the shipped pair is the zoo's seed)."),
) -> None:
    """Retrain student-kd and student-compodistill with other student seeds (resumable); writes the
    recovered share of the KD gap per seed and its 95% interval into OUT/manifest.json and README.md."""
    from cdviz.zoo import build_seeds

    try:
        chosen = tuple(int(v) for v in seeds.split(",") if v.strip())
    except ValueError:
        raise typer.BadParameter(f"--seeds {seeds!r}: give integers, comma-separated, e.g. 1,2") from None
    if not chosen or seed in chosen:
        raise typer.BadParameter(f"--seeds {seeds!r}: give seeds other than the zoo's own ({seed})")
    with user_errors():
        result = build_seeds(out, _zoo_spec(out, seed), chosen, log=lambda m: console.print(f"[bold]{m}[/bold]"))
    agg = result["recovered"]
    console.print(f"recovered share of the KD gap over {agg['n']} seeds: mean {agg['mean']}, "
                  f"95% interval {agg['ci_low']} .. {agg['ci_high']}")


def zoo_variations_cmd(
    out: Path = typer.Option(Path("checkpoints"), help="A folder `cdviz zoo build` has filled."),
    seed: int = typer.Option(0, help="The seed the zoo was built with."),
    only: Optional[list[str]] = typer.Option(None, "--only", help="Run just these variations (repeatable)."),
) -> None:
    """Retrain student-compodistill with one change each (VAT alone, text-to-image alignment alone, every layer,
    VAT weight 4), evaluate and record each; writes OUT/variations.json and the table in OUT/README.md."""
    from cdviz.zoo import build_variations, headline_view

    with user_errors():
        results = build_variations(out, _zoo_spec(out, seed), names=tuple(only) if only else None,
                                   log=lambda m: console.print(f"[bold]{m}[/bold]"))
    for name, r in results.items():
        view = headline_view(r["metrics"])
        console.print(f"{name}: perception mean {view['perception_mean']} ({view['measure']})")
