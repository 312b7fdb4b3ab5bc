"""The item explorer's "Piece" selector on a run recorded with ``--pieces``: the base/global view
by default, each crop / tile of either model on request, and "no such piece" for a model that
did not cut the image that way."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from cdviz.models import load_model
from cdviz.models.tiny_families import build_tiny_family
from cdviz.probes import load_probeset
from cdviz.probes.shapes import make_shapes
from cdviz.record import RecordOptions, record_run
from tests.app.test_pages import texts


@pytest.fixture(scope="module")
def pieces_root(tmp_path_factory) -> Path:
    """A run whose teacher (InternVL: 4 tiles + thumbnail) and student (LLaVA-NeXT: base view +
    stitched crops) cut the same 48 px images differently. The two are not a distillable pair
    (record_run takes any two adapters); they stand for a teacher and student whose pieces differ."""
    root = tmp_path_factory.mktemp("pieces-runs")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "built without its video processor"
        teacher = load_model(build_tiny_family("internvl", root / "models" / "teacher", n_layers=3))
        student = load_model(build_tiny_family("llava_next", root / "models" / "student"))
    probes = load_probeset(make_shapes(root / "probes", n=2, seed=3, image_size=48).root)
    record_run(teacher, student, probes, root / "runs" / "demo", RecordOptions(pieces=True, batch_size=2))
    return root / "runs"


def test_piece_selector(pieces_root, open_app):
    from app import state

    at = open_app(pieces_root, "item_explorer")
    run = state.open_named(pieces_root, "demo")
    uid = at.selectbox(key="item").value
    row = run.store.row(uid)
    piece = at.selectbox(key="ie_piece")
    assert piece.value == state.PRIMARY_VIEW
    tiles = [f"tile {i + 1} (row {r + 1}, col {c + 1})" for i, (r, c) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)])]
    assert piece.options == [state.PRIMARY_VIEW, *tiles, "crop 1"]
    assert list(state.item_pieces(row, "teacher")) == tiles and list(state.item_pieces(row, "student")) == ["crop 1"]
    assert at.metric  # the base view: the teacher/student comparison

    at.selectbox(key="head").set_value(1).run()
    at.selectbox(key="ie_piece").set_value("crop 1").run()
    assert not at.exception
    shown = texts(at)
    assert "teacher: no such piece" in shown and not at.metric  # no comparison across pieces
    assert "Maps drawn without the image" not in shown  # a tile is drawn over its cell of the image
    layer = at.selectbox(key="layer").value
    crop = run.store.get(uid, "student", "t2i_pieces", layer, 1)[-1]  # [M], the answer row: the crop is all of M
    assert crop.size == int(np.prod(state.item_pieces(row, "student")["crop 1"]["grid"]))
    assert f"student: {crop.sum():.1%} of the query's attention on this piece" in shown

    at.selectbox(key="ie_piece").set_value(tiles[1]).run()
    shown = texts(at)
    assert "student: no such piece" in shown and "of the query's attention on this piece" in shown

    at.selectbox(key="ie_field").set_value("i2i").run()  # pieces hold t2i only: back to the base view
    assert not at.exception and at.selectbox(key="ie_piece").disabled and at.metric


def test_no_piece_selector_without_pieces(runs_root, open_app):
    at = open_app(runs_root, "item_explorer")
    assert "ie_piece" not in {w.key for w in at.selectbox}
