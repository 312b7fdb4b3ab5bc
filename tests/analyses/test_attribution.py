"""Attribution on a real small store recorded from tiny LLaVA checkpoints."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from analyses.attribution import AttributionResult, attribution
from cdviz.evaluate import answer_logits, load_image, plan_queries
from cdviz.models import load_model
from cdviz.probes.probeset import load_probeset
from cdviz.store import open_run

# Builds two tiny checkpoints and records a 12-item store before attributing (several seconds).
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from cdviz.models.tiny import build_tiny
    from cdviz.probes.shapes import make_shapes
    from cdviz.record import RecordOptions, record

    root = tmp_path_factory.mktemp("attr")
    teacher = build_tiny("llava", root / "teacher", n_layers=3, image_size=32, seed=0)
    student = build_tiny("llava", root / "student", n_layers=2, image_size=32, seed=1)
    make_shapes(root / "probes", n=12, seed=0, image_size=32)
    return open_run(record(teacher, student, root / "probes", root / "run", RecordOptions(shard_size=6, batch_size=4)))


@pytest.fixture(scope="module")
def result(tiny_run):
    return attribution(tiny_run, n_items=3, n_steps=24, seed=0)


def test_one_row_per_item_model_layer(result, tiny_run):
    f = result.frame
    assert len(f) == 3 * (3 + 2)
    assert set(f[f.model == "teacher"].layer) == {0, 1, 2} and set(f[f.model == "student"].layer) == {0, 1}
    assert f.spearman.between(-1, 1).all() and f.topk_iou.between(0, 1).all()
    n_image = int(tiny_run.index.teacher_n_image.iloc[0])
    assert len(result.maps) == 3 * 2 * n_image


def test_replayed_logit_matches_a_plain_forward(result, tiny_run):
    """The hook replay (decoder on captured embeddings) must be the model's own answer logit."""
    probes = load_probeset(tiny_run.manifest["probes"]["path"])
    items = probes.by_uid()
    for model in ("teacher", "student"):
        adapter = load_model(tiny_run.model_info(model)["path"])
        for row in result.items[result.items.model == model].itertuples():
            q = plan_queries(items[row.uid])[0]
            logits = answer_logits(adapter, [load_image(probes, items[row.uid], 0)], [q.text], [row.uid])
            assert row.logit == pytest.approx(float(logits[0, row.target_token]), abs=1e-4)


def test_integrated_gradients_are_complete(result):
    """Completeness: attributions sum to f(x) - f(baseline); captum's delta is that gap."""
    sums = result.maps.groupby(["uid", "model"]).attribution.sum()
    scale = sums.abs().max() + 1e-6
    assert (result.items.delta.abs() < 0.05 * scale + 1e-3).all()


def test_target_is_the_chosen_letter(result, tiny_run):
    out = tiny_run.outcomes
    for row in result.items.itertuples():
        chosen = out[(out.model == row.model) & (out.uid == row.uid) & (out.order.astype(str) == "01")].chosen.iloc[0]
        adapter_letters = load_model(tiny_run.model_info(row.model)["path"]).letter_token_ids(2)
        assert row.target_token == adapter_letters[int(chosen)]


def test_round_trip(result):
    back = AttributionResult.from_dict(json.loads(json.dumps(result.to_dict())))
    pd.testing.assert_frame_equal(back.to_frame(), result.to_frame(), check_dtype=False)
    pd.testing.assert_frame_equal(back.by_layer(), result.by_layer(), check_dtype=False)
    assert np.isfinite(back.maps.attribution).all()


def test_report_with_attribution(tiny_run, tmp_path):
    from cdviz.workflow import build_report, report_steps

    steps = []
    out = build_report(tiny_run.root, tmp_path / "rep", progress=steps.append, n_boot=20, n_perm=20,
                       attribution_items=2)
    summary = json.loads((out / "summary.json").read_text())
    assert {r["model"] for r in summary["attribution"]} == {"teacher", "student"}
    assert "attribution" in summary["files"]["tables"]
    assert sum(steps) == report_steps(tiny_run.root, attribution_items=2)
