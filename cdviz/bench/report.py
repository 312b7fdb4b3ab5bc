"""``cdviz bench report``: time `build_report` phase by phase on a synthetic store of demo-like
shape (teacher 8 layers, student 4, 4 heads, 8x8 grids), and its peak memory.

    .venv/bin/python -m cdviz.bench.report            # 1000 items
    bench_report(n_items=1000) -> {"n_items", "make_store_s", "phases": {phase: s}, "report_s", "peak_rss_mb", ...}

Peak RSS is the process's high-water mark (getrusage), so it includes whatever ran before;
``rss_before_mb`` is the mark when the report started, for the difference.
"""

from __future__ import annotations

import resource
import sys
import tempfile
import time
from pathlib import Path

from cdviz.workflow import build_report
from cdviz.synthetic import make_synthetic_run


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def bench_report(n_items: int = 1000, *, teacher_layers: int = 8, student_layers: int = 4, n_heads: int = 4,
                 grid: tuple[int, int] = (8, 8), shard_size: int = 50, seed: int = 0, workdir: str | Path | None = None,
                 n_boot: int = 1000, n_perm: int = 1000, console=None) -> dict:
    """Make a synthetic store and time each phase of `build_report` on it.

    Args:
        n_items: items in the store.
        teacher_layers, student_layers, n_heads, grid: store shape (both models on ``grid``).
        workdir: where to put the store and report (default: a temporary directory, removed after).
        n_boot, n_perm: as in build_report.
        console: a rich Console to print the table to (None: do not print).

    Returns:
        dict with n_items, make_store_s, phases {name: seconds}, report_s, rss_before_mb, peak_rss_mb.
    """
    with tempfile.TemporaryDirectory(prefix="cdviz-bench-") as tmp:
        root = Path(workdir) if workdir is not None else Path(tmp)
        t0 = time.perf_counter()
        run = make_synthetic_run(root / "run", n_items=n_items, seed=seed, teacher_layers=teacher_layers,
                                 student_layers=student_layers, n_heads=n_heads, teacher_grid=grid, student_grid=grid,
                                 planted=tuple(p for p in (1, 2) if p < student_layers), shard_size=shard_size)
        made = time.perf_counter() - t0
        rss_before = _peak_rss_mb()
        phases: dict[str, float] = {}
        t0 = time.perf_counter()
        build_report(run, root / "report", timings=phases, n_boot=n_boot, n_perm=n_perm, seed=seed)
        result = {"n_items": n_items, "make_store_s": made, "phases": phases, "report_s": time.perf_counter() - t0,
                  "rss_before_mb": rss_before, "peak_rss_mb": _peak_rss_mb()}
    if console is not None:
        print_bench(result, console)
    return result


def print_bench(result: dict, console) -> None:
    """A rich table of the phases and the totals."""
    from rich.table import Table

    table = Table(title=f"build_report on {result['n_items']} synthetic items")
    table.add_column("phase")
    table.add_column("seconds", justify="right")
    for name, s in result["phases"].items():
        table.add_row(name, f"{s:.3f}")
    table.add_row("[bold]report total[/bold]", f"[bold]{result['report_s']:.3f}[/bold]")
    table.add_row("(making the store)", f"{result['make_store_s']:.3f}")
    console.print(table)
    console.print(f"peak RSS {result['peak_rss_mb']:.0f} MiB (before the report: {result['rss_before_mb']:.0f} MiB)")


if __name__ == "__main__":
    from rich.console import Console

    bench_report(int(sys.argv[1]) if len(sys.argv) > 1 else 1000, console=Console())
