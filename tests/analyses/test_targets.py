"""Recommended targets: planted layers chosen, the fallback band, the documented schema."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from analyses.targets import TargetsResult, targets
from cdviz.layer_map import middle_band
from cdviz.store import open_run
from cdviz.synthetic import make_synthetic_run

SCHEMA_KEYS = {"version", "measure", "source", "student_layers", "teacher_groups", "criteria", "evidence"}
EVIDENCE_KEYS = {"student_layer", "teacher_layers", "mean_misalignment", "auroc", "ci_low", "ci_high", "q_value",
                 "selected", "rank", "reason"}


def test_planted_layers_recommended(planted_store, planted_misalignment, planted_link):
    t = targets(planted_store, misalignment=planted_misalignment, error_link=planted_link)
    assert t.source == "error_link" and t.measure == "i2i:vat_cosine"
    assert t.student_layers == [1, 2] and t.teacher_groups == [[2, 3], [4, 5]]
    ev = t.evidence.set_index("student_layer")
    assert ev.loc[[0, 3], "reason"].tolist() == ["neither", "neither"]
    assert sorted(ev.loc[[1, 2], "rank"].tolist()) == [1, 2]


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


