"""Training metrics: a JSONL log (one row per optimizer step), optional TensorBoard, a rich bar.

    OUT/<stage>/metrics.jsonl   {"stage", "step", "loss", "loss/ce", "loss/kd", "loss/vat", "lr", ...}
    OUT/<stage>/tb/             TensorBoard events, only with tensorboard = true and the package installed
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class MetricsLog:
    """Append-only JSONL of step rows, flushed per row so a killed run keeps what it logged."""

    def __init__(self, path: Path, tensorboard: bool = False, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled
        self.tb = None
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                Console(stderr=True).print("tensorboard is not installed; logging to metrics.jsonl only")
            else:
                self.tb = SummaryWriter(str(self.path.parent / "tb"))

    def write(self, row: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        if self.tb is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)) and k not in ("step", "total_steps"):
                    self.tb.add_scalar(k, v, row["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
            self.tb = None


def read_metrics(path: str | Path) -> list[dict]:
    """The rows of a metrics.jsonl."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


@contextmanager
def progress_bar(description: str, total: int, done: int = 0, enabled: bool = True) -> Iterator[Callable[[dict], None]]:
    """A rich bar over optimizer steps; yields ``update(row)`` (advances one step, shows the loss)."""
    if not enabled:
        yield lambda row: None
        return
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                  console=Console(stderr=True)) as bar:
        task = bar.add_task(description, total=total, completed=done, info="")

        def update(row: dict) -> None:
            info = f"loss {row['loss']:.4f} lr {row['lr']:.2e} {row['samples_per_s']:.1f} samples/s"
            bar.update(task, advance=1, info=info)

        yield update
