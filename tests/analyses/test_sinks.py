"""Sinks: exact statistics on a hand-made store (to fp16 storage precision)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from analyses.sinks import SinksResult, sinks
from cdviz.store import open_run
from handmade import item, write_store


@pytest.fixture(scope="module")
def exact(tmp_path_factory):
    raw = np.tile([0.7, 0.1, 0.1, 0.1], (2, 2, 1))  # token 0 soaks up attention
    filt = np.tile([0.1, 0.1, 0.1, 0.1], (2, 2, 1))  # the filter removed it
    flat = np.full((1, 2, 4), 0.25)
    it = item("a", raw, flat, teacher_filt=filt)
    return sinks(open_run(write_store(tmp_path_factory.mktemp("s"), [it])), k=2.0)


def test_sink_statistics(exact):
    t = exact.frame[exact.frame.model == "teacher"]
    assert len(t) == 2 * 3  # 2 layers x (2 heads + mean)
    np.testing.assert_allclose(t.n_sinks, 1, rtol=1e-3)
    np.testing.assert_allclose(t.sink_share, 0.7, rtol=1e-3)
    np.testing.assert_allclose(t.sink_share_filt, 0.25, rtol=1e-3)
    np.testing.assert_allclose(t.cos_raw_filt, 0.1 / (math.sqrt(0.52) * 0.2), rtol=1e-3)
    s = exact.frame[exact.frame.model == "student"]
    np.testing.assert_allclose(s.n_sinks, 0, rtol=1e-3)
    np.testing.assert_allclose(s.cos_raw_filt, 1.0, rtol=1e-3)


def test_sink_positions(exact):
    p = exact.positions[(exact.positions.model == "teacher") & (exact.positions.layer == 0)]
    assert p.frequency.tolist() == [1.0, 0.0, 0.0, 0.0]
    assert p[["row", "col"]].values.tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]


def test_round_trip_and_k_check(exact, planted_store):
    back = SinksResult.from_dict(json.loads(json.dumps(exact.to_dict())))
    pd.testing.assert_frame_equal(back.to_frame(), exact.to_frame(), check_dtype=False)
    with pytest.raises(ValueError, match="k > 1"):
        sinks(planted_store, k=1.0)
