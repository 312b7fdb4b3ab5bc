"""What every command shares: the stderr console, progress bars, user errors (exit 2, no
traceback) and the parsing of options that several commands take.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from cdviz.errors import CdvizError, OptionError
from cdviz.types import ProbeError

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
