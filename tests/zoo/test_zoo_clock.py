"""The build budget (cdviz.zoo.clock): phase times kept across resumes, and a verdict that holds
only for one uninterrupted build on 2 CPU cores within the limit."""

from __future__ import annotations

import json

import pytest

from cdviz.zoo import clock as clock_module
from cdviz.zoo.clock import BuildClock, budget_goals, build_time


@pytest.fixture
def two_cores(monkeypatch):
    monkeypatch.setattr(clock_module, "machine", lambda: {"cpu_count": 2, "torch_threads": 2, "device": "cpu"})


def test_phases_add_up_and_a_resume_is_counted(tmp_path, two_cores, monkeypatch):
    ticks = iter([0.0, 90.0, 100.0, 160.0, 0.0, 30.0])
    monkeypatch.setattr(clock_module.time, "perf_counter", lambda: next(ticks))
    path = tmp_path / "timings.json"
    first = BuildClock(path)
    with first.phase("teacher"):
        pass
    with first.phase("student-kd"):
        pass
    assert json.loads(path.read_text())["phases"] == {"teacher": 90.0, "student-kd": 60.0}
    assert build_time(path)["uninterrupted"] and build_time(path)["minutes"] == 2.5
    second = BuildClock(path)  # killed and resumed: the teacher phase's seconds add up
    with second.phase("teacher"):
        pass
    summary = build_time(path)
    assert summary["phases"] == {"teacher": 120.0, "student-kd": 60.0}
    assert summary["runs"] == 2 and not summary["uninterrupted"] and summary["minutes"] == 3.0


def test_a_failed_phase_keeps_the_earlier_ones(tmp_path, two_cores):
    path = tmp_path / "timings.json"
    c = BuildClock(path)
    with c.phase("teacher"):
        pass
    with pytest.raises(RuntimeError):
        with c.phase("student-kd"):
            raise RuntimeError("killed")
    assert list(build_time(path)["phases"]) == ["teacher"]


def _time(minutes: float, runs: int = 1, cores: int = 2, device: str = "cpu") -> dict:
    return {"minutes": minutes, "phases": {"all": minutes * 60}, "runs": runs, "uninterrupted": runs == 1,
            "machine": {"cpu_count": cores, "torch_threads": cores, "device": device}}


@pytest.mark.parametrize("time_, size, build_verdict, size_verdict", [
    (_time(54.2), 9.1, "(54.2 minutes in one process, 2 CPU cores, 2 torch threads, cpu) -> holds", "-> holds"),
    (_time(61.0), 9.1, "-> does NOT hold", "-> holds"),
    (_time(40.0), 26.0, "-> holds", "(26.0 MB) -> does NOT hold"),
    (_time(40.0, runs=3), 9.1, "resumed over 3 processes", "-> holds"),
    (_time(20.0, cores=16), 9.1, "built on 16 CPU cores", "-> holds"),
    (_time(5.0, device="cuda"), 9.1, "cuda in 5.0 minutes", "-> holds"),
    (None, 9.1, "kept no timings.json", "-> holds"),
])
def test_budget_verdict_follows_the_measurement(time_, size, build_verdict, size_verdict):
    build, size_line = budget_goals(time_, size)
    assert build_verdict in build and size_verdict in size_line
    measured = time_ is not None and time_["runs"] == 1 and time_["machine"] == {
        "cpu_count": 2, "torch_threads": 2, "device": "cpu"}
    assert build.endswith("-> not measured") != measured, build


def test_no_timings_file_is_no_build_time(tmp_path):
    assert build_time(tmp_path / "timings.json") is None
