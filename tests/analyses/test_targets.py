"""Recommended targets: planted layers chosen wherever they are (first, middle, last, mixed, next to
larger unlinked misalignment, across grids), the fallback band, the documented schema."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from analyses.error_link import error_link
from analyses.misalignment import misalignment
from analyses.targets import TargetsResult, targets
from cdviz.layer_map import middle_band
from cdviz.store import open_run
from cdviz.synthetic import make_synthetic_run

SCHEMA_KEYS = {"version", "measure", "source", "rule", "student_layers", "teacher_groups", "criteria", "power",
               "evidence"}
EVIDENCE_KEYS = {"student_layer", "teacher_layers", "mean_misalignment", "baseline", "auroc", "ci_low", "ci_high",
                 "q_value", "selected", "rank", "reason"}


def test_planted_layers_recommended(planted_store, planted_misalignment, planted_link):
    t = targets(planted_store, misalignment=planted_misalignment, error_link=planted_link)
    assert t.source == "error_link" and t.measure == "i2i:vat_cosine"
    assert t.student_layers == [1, 2] and t.teacher_groups == [[2, 3], [4, 5]]
    ev = t.evidence.set_index("student_layer")
    assert all(r.startswith("not linked") for r in ev.loc[[0, 3], "reason"])
    assert ev.loc[[1, 2], "reason"].tolist() == ["linked", "linked"]
    assert sorted(ev.loc[[1, 2], "rank"].tolist()) == [1, 2]
    assert t.rule.startswith("error link: layers 1, 2 chosen")
    assert (ev.baseline > 0).all() and (ev.loc[[1, 2], "mean_misalignment"] > 10 * ev.loc[[1, 2], "baseline"]).all()


def test_max_layers_keeps_the_best_ranked(planted_store, planted_misalignment, planted_link):
    t = targets(planted_store, misalignment=planted_misalignment, error_link=planted_link, max_layers=1)
    assert len(t.student_layers) == 1
    ev = t.evidence.set_index("student_layer")
    assert ev.loc[t.student_layers[0], "rank"] == 1
    assert "beyond max_layers" in " ".join(ev.reason)


def test_schema_is_json_and_round_trips(planted_store, planted_misalignment, planted_link):
    d = targets(planted_store, misalignment=planted_misalignment, error_link=planted_link).to_dict()
    text = json.dumps(d, allow_nan=False)  # strict JSON: NaN must have become null
    assert set(d) == SCHEMA_KEYS and d["version"] == 1
    assert all(set(e) == EVIDENCE_KEYS for e in d["evidence"])
    assert all(isinstance(g, list) and all(isinstance(x, int) for x in g) for g in d["teacher_groups"])
    back = TargetsResult.from_dict(json.loads(text))
    assert back.student_layers == [1, 2] and back.to_dict() == d
    expected = pd.DataFrame(d["evidence"]).drop(columns="rank")
    pd.testing.assert_frame_equal(back.to_frame().drop(columns="rank"), expected, check_dtype=False)


def test_no_link_falls_back_to_middle_band(tmp_path):
    store = open_run(make_synthetic_run(tmp_path / "run", n_items=120, seed=1, link=0.0))
    t = targets(store)
    assert t.source == "fallback_middle_band"
    assert t.student_layers == middle_band(4) == [1]
    assert t.teacher_groups == [[2, 3]]
    assert not t.evidence.selected.any()
    assert t.rule.startswith("fallback: no layer's i2i:vat_cosine misalignment predicts") and "not evidence" in t.rule
    assert 0.6 < t.power["detectable_auroc"] < 0.8 and "would be detected 90% of the time" in t.power_text()


def test_reports_written_before_rule_and_power_still_load(planted_store, planted_misalignment, planted_link):
    d = targets(planted_store, misalignment=planted_misalignment, error_link=planted_link).to_dict()
    for key in ("rule", "power"):
        del d[key]
    for e in d["evidence"]:
        del e["baseline"]
    back = TargetsResult.from_dict(d)
    assert back.student_layers == [1, 2] and back.rule == "" and back.power_text() == ""
    assert back.evidence.baseline.isna().all()


def _recommend(tmp_path, **kw):
    run = make_synthetic_run(tmp_path / "run", **{"n_items": 300, "link": 6.0, **kw})
    store = open_run(run)
    mis = misalignment(store)
    link = error_link(store, misalignment=mis, n_boot=300)
    return targets(store, misalignment=mis, error_link=link), mis


@pytest.mark.slow
@pytest.mark.parametrize("planted, kw", [
    ((0,), {}),                                                            # the first layer
    ((3,), {}),                                                            # the last layer
    ((0, 3), {"seed": 3}),                                                 # the pair (was [1])
    ((0, 2), {"depth_profile": "monotone"}),                               # a mixed pair, other profile
    ((0, 5), {"teacher_layers": 12, "student_layers": 6, "teacher_grid": (27, 27), "student_grid": (24, 24)}),
])
def test_planted_layers_found_wherever_they_are(tmp_path, planted, kw):
    t, _ = _recommend(tmp_path, planted=planted, **{"seed": 11, **kw})
    assert t.source == "error_link" and t.student_layers == sorted(planted), t.evidence.to_string()


@pytest.mark.slow
def test_linked_layers_kept_next_to_larger_unlinked_misalignment(tmp_path):
    # Decoy layers 1 and 2 disagree with the teacher more than the planted 0 and 3 on every item, but
    # not in step with the errors: a rule asking for misalignment >= the median over layers (the old
    # one) would keep nothing but the fallback; the link's AUROC finds 0 and 3.
    t, mis = _recommend(tmp_path, planted=(0, 3), decoys=(1, 2), seed=3)
    ev = t.evidence.set_index("student_layer")
    assert (ev.loc[[0, 3], "mean_misalignment"] < ev.mean_misalignment.median()).all()
    assert t.student_layers == [0, 3] and t.source == "error_link"
    assert all(r.startswith("not linked") for r in ev.loc[[1, 2], "reason"])

