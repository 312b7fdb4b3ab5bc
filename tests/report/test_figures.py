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
    by_layer = F.fig_misalignment_by_layer(mis, student="tiny-student")
    lines = [t for t in by_layer.data if t.name != "noise floor"]
    assert len(lines) == n_measures and len(by_layer.data) == 2 * n_measures  # each panel: measure + noise floor
    assert len({t.yaxis for t in lines}) == n_measures  # one panel, one y scale per measure
    assert by_layer.layout.xaxis.dtick == 1 and by_layer.layout.xaxis.tickformat == "d"  # whole layers only
    assert "tiny-student" in by_layer.layout.xaxis3.title.text and "further apart" in by_layer.layout.yaxis.title.text
    assert len(F.fig_misalignment_by_layer(mis.by_layer(), measures=["t2i:js"]).data) == 2
    heat = F.fig_layer_head_heatmap(mis.by_layer_head(), "mean", "i2i:vat_cosine")
    assert heat.data[0].z.shape == (4, 5) and list(heat.data[0].x)[-1] == "avg map"
    assert "head-averaged map" in heat.layout.title.text
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
    fig = F.fig_compare_layers(frame)
    assert len(fig.data) == 1 and list(fig.data[0].marker.color) == [F.CHANGE_COLORS["no change"]] * 2
    fell = frame.assign(ci_high=[-0.05, 0.1])
    assert list(F.fig_compare_layers(fell).data[0].marker.color) == [F.CHANGE_COLORS["fell"],
                                                                      F.CHANGE_COLORS["no change"]]
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
