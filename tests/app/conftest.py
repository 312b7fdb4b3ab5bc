"""Fixture runs for the dashboard tests: synthetic stores (with images) in temporary runs roots."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from cdviz.synthetic import make_synthetic_run

APP = Path(__file__).resolve().parents[2] / "app" / "main.py"


@pytest.fixture(scope="session")
def runs_root(tmp_path_factory) -> Path:
    """demo (misalignment planted in student layers 1-2, linked to errors) and after (no plant)."""
    root = tmp_path_factory.mktemp("runs")
    make_synthetic_run(root / "demo", n_items=60, seed=0)
    make_synthetic_run(root / "after", n_items=60, seed=1, planted=(), link=0.0)
    return root


@pytest.fixture(scope="session")
def reported_root(tmp_path_factory) -> Path:
    """A run with its batch report, plus the attribution tables the report writes when asked to."""
    from cdviz.workflow import build_report

    root = tmp_path_factory.mktemp("reported")
    run = make_synthetic_run(root / "demo", n_items=40, seed=2)
    out = build_report(run, n_boot=50, n_perm=50)
    add_attribution_tables(run, out, ["syn-00003", "syn-00007"])
    return root


@pytest.fixture(scope="session")
def browser_root(tmp_path_factory) -> Path:
    """Everything every page can show: a reported demo run with attribution, and an after run."""
    from cdviz.workflow import build_report

    root = tmp_path_factory.mktemp("browser-runs")
    run = make_synthetic_run(root / "demo", n_items=40, seed=0)
    add_attribution_tables(run, build_report(run, n_boot=50, n_perm=50), ["syn-00001", "syn-00002"])
    make_synthetic_run(root / "after", n_items=40, seed=1, planted=(), link=0.0)
    return root


def add_attribution_tables(run: Path, out: Path, uids: list[str]) -> None:
    """Add an attribution result for ``uids`` to the report's saved results and rewrite the report
    (what build_report(attribution_items=...) does, without loading models), with a known map:
    attribution = the token index, so each item's map is a ramp."""
    from analyses import pipeline
    from analyses.attribution import AttributionResult
    from cdviz.report import write_report
    from cdviz.store import open_run

    store = open_run(run)
    frames, maps, targets = [], [], []
    for uid in uids:
        for model in ("teacher", "student"):
            rows, cols = store.grid(uid, model)
            n = rows * cols
            maps.append(pd.DataFrame({"uid": uid, "model": model, "token": np.arange(n), "row": np.arange(n) // cols,
                                      "col": np.arange(n) % cols, "attribution": np.arange(n, dtype=np.float64)}))
            targets.append({"uid": uid, "model": model, "target_token": 7, "logit": 1.0, "delta": 0.0,
                            "grid_rows": rows, "grid_cols": cols})
            for layer in store.layers(model):
                frames.append({"uid": uid, "model": model, "layer": layer, "spearman": 0.1 * layer,
                               "topk_iou": 0.05 * layer})
    results = pipeline.Results.load(out / "results")
    results.add("attribution", AttributionResult(pd.DataFrame(frames), pd.concat(maps, ignore_index=True),
                                                 pd.DataFrame(targets)))
    results.save(out / "results")
    write_report(store, results, out)


@pytest.fixture(autouse=True)
def fresh_caches():
    """Streamlit's caches are process-wide; each test starts from a server that has seen nothing."""
    st.cache_data.clear()
    st.cache_resource.clear()
    yield


@pytest.fixture
def open_app(monkeypatch):
    """``open_app(root, page="overview")`` -> an AppTest that has rendered ``page`` of the app."""

    def make(root: Path, page: str = "overview") -> AppTest:
        monkeypatch.setenv("CDVIZ_RUNS_ROOT", str(root))
        at = AppTest.from_file(str(APP), default_timeout=120)
        at.run()
        if page != "overview":
            at.switch_page(f"app_pages/{page}.py").run()
        assert not at.exception, [e.value for e in at.exception]
        return at

    return make
