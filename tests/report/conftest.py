"""Fixtures for the report tests: small synthetic runs with a planted truth."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def small_run(tmp_path_factory):
    """120 items, student layers 1 and 2 misaligned and linked to errors."""
    from cdviz.synthetic import make_synthetic_run

    return make_synthetic_run(tmp_path_factory.mktemp("small") / "run", n_items=120, seed=0, shard_size=40)


@pytest.fixture(scope="session")
def small_report(small_run, tmp_path_factory):
    """(output dir, progress increments) of a report on ``small_run``."""
    from cdviz.workflow import build_report

    steps = []
    out = build_report(small_run, tmp_path_factory.mktemp("report"), progress=steps.append, n_boot=200, n_perm=200)
    return out, steps
