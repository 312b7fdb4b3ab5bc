"""Wall time of each phase of ``cdviz zoo build``, for the build budget (<= 60 minutes on 2 CPU cores).

    clock = BuildClock(work / TIMINGS)
    with clock.phase("teacher: full mix"):
        ...train...
    build_time(work / TIMINGS) -> {"minutes", "phases", "runs", "uninterrupted", "machine"}
    budget_goals(build_time(...), megabytes) -> the README's two budget lines

Each phase's seconds are added to ``timings.json`` when it ends (a phase that raises adds nothing),
so a build that is killed and resumed keeps what it measured; the file counts the processes that worked on the build. Only a
build done in one process is a measurement of the budget: a resumed one lost the work between its
last checkpoint and the kill, and a phase whose output was already there took no time.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from cdviz.io import write_json_atomic

TIMINGS = "timings.json"  # in the build folder (checkpoints/.build)
# cdviz zoo build's phases in the order they run (timings.json keeps its keys sorted by name)
BUILD_PHASES = ("init models and pretrain the vision tower", "teacher: short questions", "teacher: bind mix",
                "teacher: full mix", "teacher: more of the full mix", "teacher: presence", "student-sft", "student-kd",
                "student-kd: record and report", "student-compodistill", "student-compodistill: record and report",
                "evaluate the four models and the controls")


class BuildClock:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.data = json.loads(self.path.read_text()) if self.path.is_file() else {"phases": {}, "runs": 0}
        self.data["runs"] += 1
        self.data["machine"] = machine()
        self._save()

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        phases = self.data["phases"]
        phases[name] = round(phases.get(name, 0.0) + time.perf_counter() - start, 1)
        self._save()

    def _save(self) -> None:
        write_json_atomic(self.path, self.data)


def machine() -> dict:
    import torch

    return {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "device": "cuda" if torch.cuda.is_available() else "cpu"}


def build_time(path: Path) -> dict | None:
    """What ``timings.json`` says, with the total in minutes; None when the build kept no timings."""
    if not Path(path).is_file():
        return None
    data = json.loads(Path(path).read_text())
    seconds = sum(data["phases"].values())
    return {"minutes": round(seconds / 60, 1), "phases": data["phases"], "runs": data["runs"],
            "uninterrupted": data["runs"] == 1, "machine": data.get("machine", {})}


def budget_goals(time_: dict | None, sizes_mb: float, budget_minutes: float = 60, budget_mb: float = 25) -> list[str]:
    """The two budget lines for checkpoints/README.md's goals: build time (from ``build_time``) and size."""
    size = (f"checkpoints <= {budget_mb:g} MB ({sizes_mb:.1f} MB) -> "
            f"{'holds' if sizes_mb <= budget_mb else 'does NOT hold'}")
    goal = f"build <= {budget_minutes:g} minutes on 2 CPU cores"
    if time_ is None:
        return [f"{goal}: this build kept no timings.json -> not measured", size]
    m = time_.get("machine", {})
    where = f"{m.get('cpu_count', '?')} CPU cores, {m.get('torch_threads', '?')} torch threads, {m.get('device', '?')}"
    if not time_["uninterrupted"]:
        return [f"{goal}: the build was resumed over {time_['runs']} processes (their phases add up to "
                f"{time_['minutes']:.1f} minutes on {where}) -> not measured", size]
    if m.get("device") != "cpu" or m.get("cpu_count") != 2:
        return [f"{goal}: built on {where} in {time_['minutes']:.1f} minutes -> not measured", size]
    verdict = "holds" if time_["minutes"] <= budget_minutes else "does NOT hold"
    return [f"{goal} ({time_['minutes']:.1f} minutes in one process, {where}) -> {verdict}", size]
