"""Fixtures for the analysis tests: a synthetic store with a planted truth, and hand-made stores
with exact values (see tests/analyses/handmade.py)."""

from __future__ import annotations

import pytest



@pytest.fixture(scope="session")
def planted_run(tmp_path_factory):
    """200 items; student layers 1 and 2 misaligned, misalignment drives student errors."""
    from cdviz.synthetic import make_synthetic_run

    return make_synthetic_run(tmp_path_factory.mktemp("planted") / "run", n_items=200, seed=0)


@pytest.fixture(scope="session")
def planted_store(planted_run):
    from cdviz.store import open_run

    return open_run(planted_run)


@pytest.fixture(scope="session")
def planted_misalignment(planted_store):
    from analyses.misalignment import misalignment

    return misalignment(planted_store)


@pytest.fixture(scope="session")
def planted_link(planted_store, planted_misalignment):
    from analyses.error_link import error_link

    return error_link(planted_store, misalignment=planted_misalignment, n_boot=500, n_perm=500)
