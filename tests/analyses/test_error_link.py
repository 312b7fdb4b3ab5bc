"""Error link: planted truth recovered, groups counted exactly, round trip."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from analyses.error_link import ErrorLinkResult, error_link
from cdviz.store import open_run
from handmade import item, write_store

PLANTED, OTHER = (1, 2), (0, 3)


@pytest.mark.parametrize("measure", ["i2i:vat_cosine", "t2i:js"])
def test_planted_layers_predict_errors(planted_link, measure):
    a = planted_link.overall(measure).set_index("student_layer")
    for layer in PLANTED:
        assert a.auroc[layer] > 0.7 and a.ci_low[layer] > 0.5 and a.q_value[layer] < 0.01
    for layer in OTHER:
        assert abs(a.auroc[layer] - 0.5) < 0.1 and a.ci_low[layer] < 0.5 < a.ci_high[layer]
        assert a.q_value[layer] > 0.05


def test_logistic_slope_positive_only_in_planted_layers(planted_link):
    lg = planted_link.logistic
    lg = lg[(lg.category == "all") & (lg.term == "misalignment") & (lg.measure == "i2i:vat_cosine")]
    lg = lg.set_index("student_layer")
    for layer in PLANTED:
        assert lg.ci_low[layer] > 0 and lg.odds_ratio[layer] > 2
    for layer in OTHER:
        assert lg.ci_low[layer] < 0 < lg.ci_high[layer]
    terms = set(planted_link.logistic.term)
    assert "category=colour" in terms and "intercept" in terms  # category covariates in the pooled model


def test_per_category_rows_and_counts(planted_link, planted_store):
    cats = sorted(planted_store.index.category.unique())
    assert set(planted_link.auroc.category) == {"all", *cats}
    a = planted_link.auroc
    one = a[(a.category == cats[0]) & (a.measure == "t2i:js") & (a.student_layer == 1)].iloc[0]
    idx = planted_store.index
    sub = idx[(idx.category == cats[0]) & idx.teacher_correct.astype(bool)]
    assert one.n_pos == int((~sub.student_correct.astype(bool)).sum()) and one.n_pos + one.n_neg == len(sub)


def test_outcome_groups_counted_exactly(tmp_path):
    att = np.full((1, 1, 4), 0.25)
    combos = [(True, True), (True, False), (True, False), (False, True), (False, False)]
    items = [item(f"u{i}", att, att, teacher_correct=t, student_correct=s) for i, (t, s) in enumerate(combos)]
    link = error_link(open_run(write_store(tmp_path, items)), n_boot=10, n_perm=10)
    g = link.groups[link.groups.category == "all"].set_index("group")["n"].to_dict()
    assert g == {"TR/SR": 1, "TR/SW": 2, "TW/SR": 1, "TW/SW": 1}
    assert set(link.by_outcome.group) == {"TR/SR", "TR/SW", "TW/SR", "TW/SW"}


def test_holm_correction_is_at_least_bh(planted_store, planted_misalignment):
    kw = dict(misalignment=planted_misalignment, measures=["t2i:js"], n_boot=0, n_perm=200, by_category=False)
    bh = error_link(planted_store, correction="bh", **kw).auroc
    holm = error_link(planted_store, correction="holm", **kw).auroc
    assert (holm.q_value.to_numpy() >= bh.q_value.to_numpy() - 1e-12).all()
    with pytest.raises(ValueError, match="holm"):
        error_link(planted_store, correction="fdr", **kw)


def test_round_trip(planted_link):
    back = ErrorLinkResult.from_dict(json.loads(json.dumps(planted_link.to_dict())))
    for name in ("groups", "auroc", "logistic", "by_outcome"):
        pd.testing.assert_frame_equal(getattr(back, name), getattr(planted_link, name), check_dtype=False)
    pd.testing.assert_frame_equal(back.to_frame(), planted_link.to_frame(), check_dtype=False)


def test_computes_misalignment_when_not_given(planted_store):
    link = error_link(planted_store, n_boot=0, n_perm=0, by_category=False, measures=["i2i:vat_cosine"])
    assert set(link.auroc.student_layer) == {0, 1, 2, 3} and link.auroc.ci_low.isna().all()
