"""``cdviz eval`` and ``cdviz record``: run models on a probe set (answers only, or answers and attention)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from cdviz.cli.common import check_count, console, parse_layers, progress_bar, user_errors
from cdviz.errors import OptionError


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
    adapter: str = typer.Option("auto", "--adapter", help="auto: the architecture's own cdviz adapter; generic: the "
                                "fallback for a model without one (a single image token, a standard decoder-layer "
                                "list; it warns once with what it assumed)."),
    grid: Optional[str] = typer.Option(None, "--grid", help="With --adapter generic: every image's patch grid RxC "
                                       "(default: a square, else the factorisation nearest the image's aspect ratio)."),
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
        model_adapter = load_model(model, dtype=dtype, device=device, device_map=device_map,
                                   trust_remote_code=trust_remote_code, adapter=adapter, grid=grid)
        with progress_bar(f"eval {Path(model).name}", len(ps)) as advance:
            frame, skipped = evaluate(model_adapter, ps, batch_size=batch_size, skip_bad=skip_bad, blind=blind,
                                      protocol=protocol, progress=advance)
        if frame.empty:
            first = skipped[0].reason if skipped else "no outcome rows"
            raise OptionError(f"{model}: no item of {probes} could be scored ({len(skipped)} skipped; first: {first}); "
                              "nothing written")
    summary = summarize(frame)
    summary.update(model=str(model), model_origin=model_adapter.origin.to_dict(), probes=str(probes), blind=blind,
                   protocol=protocol, skipped=[s.to_dict() for s in (*ps.skipped, *skipped)])
    write_parquet_atomic(out, frame)
    summary_path = out.with_suffix(".summary.json")
    write_json_atomic(summary_path, summary)
    print_summary(summary, title=f"{Path(model).name} on {probes.name}")
    console.print(f"outcomes: {out}\nsummary:  {summary_path}")


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


def record_cmd(
    teacher: str = typer.Option(..., help="Teacher: model directory or hub id org/name[@revision]."),
    student: str = typer.Option(..., help="Student: model directory or hub id org/name[@revision]."),
    probes: Path = typer.Option(..., help="Probe set directory."),
    out: Path = typer.Option(..., help="Run directory (resumes if it holds the same run)."),
    layers: Optional[str] = typer.Option(None, help="Decoder layers to record, e.g. '0,2,4' or '2-5' (default: all)."),
    queries: str = typer.Option("answer", help="Text query rows: 'answer' (answer position) or 'prompt' (every text token)."),
    store_block: bool = typer.Option(False, "--store-block", help="Also store the head-mean image->image block (N^2 per layer)."),
    pieces: bool = typer.Option(False, "--pieces", help="Also store the text query rows' attention over the patches "
                                "of an image's other pieces (crops, tiles: t2i_pieces), for models that cut an "
                                "image into several; `cdviz report --view detail` compares them. Text-to-image "
                                "only: image-to-image per piece is not recorded."),
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
    adapter: str = typer.Option("auto", "--adapter", help="auto: the architecture's own cdviz adapter; generic: the "
                                "fallback for a model without one; teacher and student both (a single image token, a standard decoder-layer "
                                "list; it warns once with what it assumed)."),
    grid: Optional[str] = typer.Option(None, "--grid", help="With --adapter generic: every image's patch grid RxC "
                                       "(default: a square, else the factorisation nearest the image's aspect ratio)."),
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
        options = RecordOptions(layers=parse_layers(layers), queries=queries, store_block=store_block, pieces=pieces,
                                shard_size=shard_size, batch_size=batch_size, dtype=dtype, protocol=protocol,
                                match_record=match_record)
        check_options(options)
        ps = load_probeset(probes, skip_bad=skip_bad)
        check_probes(ps)
        t, s, report = load_pair(teacher, student, dtype=dtype, device=device, device_map=device_map,
                                 trust_remote_code=trust_remote_code, adapter=adapter, grid=grid)
        for w in report.warnings:
            console.print(f"[yellow]warning:[/yellow] {w}")
        with progress_bar(f"record -> {out}", len(ps)) as advance:
            record_run(t, s, ps, out, options, skip_bad=skip_bad, progress=advance)
    if ps.skipped:  # probe lines dropped on load; also in the store manifest's "skipped" list
        console.print(f"[yellow]{len(ps.skipped)} probe line(s) skipped on load[/yellow] (listed in {out}/manifest.json):")
        for skip in ps.skipped[:5]:
            console.print(f"  {skip.where}: {skip.reason}")
    console.print(f"run store: {out}")
