"""``cdviz report``, ``cdviz verify`` and ``cdviz compare``: read run stores, never models."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cdviz.cli.common import console, progress_bar, user_errors
from cdviz.errors import OptionError


def report_cmd(
    run: Path = typer.Argument(..., help="Run store directory."),
    out: Optional[Path] = typer.Option(None, help="Output directory (default RUN/report)."),
    attribution_items: int = typer.Option(0, "--attribution-items", help="Also run captum attribution on N items (loads both models)."),
    n_boot: int = typer.Option(1000, "--n-boot", help="Bootstrap replicates for intervals."),
    n_perm: int = typer.Option(1000, "--n-perm", help="Permutations for p-values."),
    device: str = typer.Option("cpu", help="Device for attribution."),
    view: str = typer.Option("primary", "--view", help="Misalignment over each model's primary image piece "
                             "('primary') or over its crops / tiles assembled into one map of the whole image "
                             "('detail': t2i only, a run recorded with --pieces; items of one piece are skipped)."),
) -> None:
    """Misalignment report: index.html, report.md, summary.json and tables."""
    from cdviz.workflow import build_report
    from cdviz.workflow import report_steps

    from cdviz.store import open_run

    with user_errors():
        if n_boot < 1 or n_perm < 1 or attribution_items < 0:
            raise OptionError("--n-boot and --n-perm must be 1 or more, --attribution-items 0 or more")
        if view not in ("primary", "detail"):
            raise OptionError(f"--view {view!r}: use primary or detail")
        open_run(run).require_whole()  # a partial or damaged run is named, never analysed as if whole
        total = report_steps(run, attribution_items)
        with progress_bar(f"report {run}", total) as advance:
            path = build_report(run, out, advance, n_boot=n_boot, n_perm=n_perm,
                                attribution_items=attribution_items, device=device, view=view)
    console.print(f"report: {path / 'index.html'}\nsummary: {path / 'summary.json'}")


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


def compare_cmd(
    before: Path = typer.Argument(..., help="Run store before (e.g. student-kd)."),
    after: Path = typer.Argument(..., help="Run store after (e.g. student-compodistill)."),
    out: Optional[Path] = typer.Option(None, help="Output directory (default AFTER/compare)."),
    n_boot: int = typer.Option(1000, "--n-boot"),
) -> None:
    """Per-layer misalignment and per-category accuracy deltas, with intervals."""
    from cdviz.workflow import compare_runs
    from cdviz.store import open_run

    with user_errors():
        for run in (before, after):
            open_run(run).require_whole()  # a partial or damaged run is named, never compared as if whole
        with progress_bar("compare", None) as advance:
            path = compare_runs(before, after, out or after / "compare", n_boot=n_boot, progress=advance)
    console.print(f"comparison: {path / 'compare.html'}\nsummary: {path / 'summary.json'}")
