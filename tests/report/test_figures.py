"""Figure functions: pure, one trace per series, dataset strings escaped."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import pytest

from analyses.error_link import error_link
from analyses.grounding import grounding
from analyses.layer_correspondence import layer_correspondence
from analyses.misalignment import misalignment
from analyses.sinks import sinks
from cdviz.report import figures as F
from cdviz.store import open_run


@pytest.fixture(scope="module")
def results(small_run):
    store = open_run(small_run)
    mis = misalignment(store)
    return {"mis": mis, "link": error_link(store, misalignment=mis, n_boot=50, n_perm=50, by_category=False),
            "lc": layer_correspondence(store), "gr": grounding(store, n_boot=20, n_perm=20), "sk": sinks(store)}


def test_accuracy_by_category_escapes_labels():
    frame = pd.DataFrame({"category": ["<b>x</b>", "y"], "teacher": [0.9, 0.8], "student": [0.5, 0.6]})
    fig = F.fig_accuracy_by_category(frame)
    assert [t.name for t in fig.data] == ["teacher", "student"]
    assert list(fig.data[0].x) == ["&lt;b&gt;x&lt;/b&gt;", "y"]
    summary = {"accuracy": {"by_category": frame.to_dict(orient="records")}}
    assert len(F.fig_accuracy_by_category(summary).data) == 2


def test_result_figures(results):
    mis, link = results["mis"], results["link"]
    n_measures = len(mis.measures)
    assert len(F.fig_misalignment_by_layer(mis).data) == n_measures
    assert len(F.fig_misalignment_by_layer(mis.by_layer(), measures=["t2i:js"]).data) == 1
    heat = F.fig_layer_head_heatmap(mis.by_layer_head(), "mean", "i2i:vat_cosine")
    assert heat.data[0].z.shape == (4, 5) and list(heat.data[0].x)[-1] == "mean"
    assert len(F.fig_auroc_by_layer(link).data) == n_measures
    assert len(F.fig_auroc_by_layer(link, "t2i:js").data) == 1
    assert {t.name.split(" ")[0] for t in F.fig_misalignment_by_outcome(link).data} <= {"TR/SR", "TR/SW", "TW/SR",
                                                                                          "TW/SW"}
    sim = F.fig_layer_similarity(results["lc"])
    assert sim.data[0].z.shape == (8, 4) and len(sim.data[1].x) == 4
    assert isinstance(F.fig_head_matching(results["lc"], 1), go.Figure)
    assert len(F.fig_grounding_by_layer(results["gr"]).data) == 2
    assert len(F.fig_sinks_by_layer(results["sk"]).data) == 4


def test_compare_and_placeholder_figures():
    frame = pd.DataFrame({"measure": ["m", "m"], "student_layer": [0, 1], "delta": [-0.1, 0.0],
                          "ci_low": [-0.2, -0.1], "ci_high": [0.0, 0.1]})
    assert len(F.fig_compare_layers(frame).data) == 1
    assert F.empty_figure("<nothing>").layout.annotations[0].text == "&lt;nothing&gt;"


def test_figures_from_report_tables(small_report):
    """The dashboard draws from the report's parquet tables as well as from results."""
    tables = small_report[0] / "tables"
    sim = F.fig_layer_similarity(pd.read_parquet(tables / "layer_similarity.parquet"), metric="js",
                                 higher_is_aligned=False)
    assert sim.data[0].z.shape == (8, 4) and len(sim.data[1].x) == 4
    auroc = pd.read_parquet(tables / "error_link_auroc.parquet")
    assert len(F.fig_auroc_by_layer(auroc).data) == auroc.measure.nunique()
    assert len(F.fig_misalignment_by_outcome(pd.read_parquet(tables / "misalignment_by_outcome.parquet")).data) >= 2
    assert len(F.fig_layer_head_heatmap(pd.read_parquet(tables / "misalignment_by_layer_head.parquet")).data) == 1
    assert len(F.fig_grounding_by_layer(pd.read_parquet(tables / "grounding_by_layer.parquet")).data) == 2
