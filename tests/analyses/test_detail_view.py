"""The detail view: an image's crops / tiles (``t2i_pieces``) assembled into one map over the whole
image (cdviz.pieces), and the teacher/student misalignment over it (misalignment(view="detail"),
`cdviz report --view detail`).

    pytest tests/analyses/test_detail_view.py
"""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from analyses.misalignment import MisalignmentResult, misalignment
from cdviz.errors import OptionError
from cdviz.metrics import js_divergence, resample_to_grid
from cdviz.pieces import NO_PIECES, NOT_RECORDED, assemble, detail_layout, detail_map, store_detail
from cdviz.store import open_run
from tests.analyses.handmade import item, write_store

# ------------------------------------------------------------------------------------------ layout


def _tiles(grid, layout, order):
    """The "pieces" column of an image cut into ``layout`` tiles of ``grid`` patches, the tiles in
    token order ``order`` (a list of (row, col))."""
    n = grid[0] * grid[1]
    return [{"role": "tile", "grid": list(grid), "offset": k * n, "place": [r, c, *layout]}
            for k, (r, c) in enumerate(order)]


def test_tiles_are_placed_by_their_place():
    # 2x2 layout of 2x3 tiles, in token order (1,1), (0,0), (1,0), (0,1): not row-major on purpose
    order = [(1, 1), (0, 0), (1, 0), (0, 1)]
    pieces = _tiles((2, 3), (2, 2), order)
    maps = np.arange(24, dtype=np.float32)  # M = 4 tiles x 6 patches; patch value = its position in M
    got, grid, reason = detail_map(pieces, maps[None, None])  # [1, 1, 24] -> [1, 1, 4 * 6]
    assert reason == "" and grid == (4, 6)
    want = np.empty((4, 6), dtype=np.float32)
    for k, (r, c) in enumerate(order):
        want[2 * r:2 * r + 2, 3 * c:3 * c + 3] = np.arange(6).reshape(2, 3) + 6 * k
    np.testing.assert_array_equal(got[0, 0].reshape(4, 6), want)
    # by hand: row 0 is tile (0,0) = token tile 1 (6..8), then tile (0,1) = token tile 3 (18..20)
    assert got[0, 0, :6].tolist() == [6, 7, 8, 18, 19, 20]
    assert got[0, 0, 6 * 3:].tolist() == [15, 16, 17, 3, 4, 5]  # row 3: tile (1,0) row 1, tile (1,1) row 1


def test_offsets_are_read_not_assumed():
    # a crop listed after a gap of M (offset 5): the map starts there
    pieces = [{"role": "crop", "grid": [2, 3], "offset": 5}]
    maps = np.arange(11, dtype=np.float32)
    got, grid, reason = detail_map(pieces, maps)
    assert grid == (2, 3) and got.tolist() == [5, 6, 7, 8, 9, 10]


def test_crops_are_the_stitched_grid():
    """LLaVA-NeXT's crops are recorded as one stitched, unpadded grid over the image (row-end newlines
    left out): the detail map is that grid as it lies in M."""
    layout, reason = detail_layout([{"role": "crop", "grid": [4, 10], "offset": 0}])
    assert reason == "" and layout.kind == "crops" and layout.grid == (4, 10)
    np.testing.assert_array_equal(layout.index, np.arange(40))


@pytest.mark.parametrize("pieces, says", [
    ([], NO_PIECES),
    (_tiles((2, 2), (2, 2), [(0, 0), (0, 1), (1, 0)]), "leave cells"),
    (_tiles((2, 2), (2, 2), [(0, 0), (0, 1), (1, 0), (0, 1)]), "two tiles placed at (0, 1)"),
    (_tiles((2, 2), (1, 2), [(0, 0), (0, 2)]), "outside"),
    ([{"role": "tile", "grid": [2, 2], "offset": 0}], "without a place"),
    ([{"role": "tile", "grid": [2, 2], "offset": 0, "place": [0, 0, 1, 2]},
      {"role": "tile", "grid": [2, 3], "offset": 4, "place": [0, 1, 1, 2]}], "unequal grids"),
    ([{"role": "crop", "grid": [2, 2], "offset": 0}, {"role": "crop", "grid": [2, 2], "offset": 4}], "2 crops"),
    ([{"role": "crop", "grid": [2, 2], "offset": 0}, {"role": "tile", "grid": [2, 2], "offset": 4,
                                                      "place": [0, 0, 1, 1]}], "roles"),
])
def test_no_detail_view_says_why(pieces, says):
    layout, reason = detail_layout(pieces)
    assert layout is None and says in reason
    assert detail_map(pieces, np.zeros(16)) == (None, None, reason)


def test_maps_shorter_than_the_index_are_refused():
    layout, _ = detail_layout(_tiles((2, 2), (1, 2), [(0, 0), (0, 1)]))
    with pytest.raises(ValueError, match="disagree"):
        assemble(np.zeros(7), layout)


# ---------------------------------------------------------------------------------- planted store

T_LAYOUT, T_TILE = (2, 2), (4, 4)  # teacher: 2x2 tiles of 4x4 patches -> 8x8
S_LAYOUT, S_TILE = (3, 3), (2, 2)  # student: 3x3 tiles of 2x2 patches -> 6x6
T_ORDER = [(0, 1), (1, 1), (0, 0), (1, 0)]  # tiles in token order, not row-major
S_ORDER = [(r, c) for r in range(3) for c in range(3)][::-1]


def _blob(grid, centre, sigma=0.15):
    """Mass per cell of a Gaussian blob over the unit image, integrated exactly (separable, erf)."""
    def axis(n, mu):
        edges = np.linspace(0.0, 1.0, n + 1)
        cdf = np.array([0.5 * (1 + math.erf((e - mu) / (sigma * math.sqrt(2)))) for e in edges])
        return np.diff(cdf)
    m = np.outer(axis(grid[0], centre[0]), axis(grid[1], centre[1]))
    return (m / m.sum()).astype(np.float32)  # [rows, cols]


def _cut(full, tile, order):
    """A [rows, cols] map over the whole image -> [M] over its tiles in token order."""
    return np.concatenate([full[r * tile[0]:(r + 1) * tile[0], c * tile[1]:(c + 1) * tile[1]].reshape(-1)
                           for r, c in order])


def _pieces(full, layout, tile, order, n_layers, n_heads):
    maps = np.broadcast_to(_cut(full, tile, order), (n_layers, n_heads, layout[0] * layout[1] * tile[0] * tile[1]))
    return _tiles(tile, layout, order), maps.copy()


PRIMARY = np.full((2, 2, 4), 0.25)  # [L, H, N] on the 2x2 primary grid, the same for both


def _planted_store(root, student_centre, extra=()):
    t_full = _blob((8, 8), (0.35, 0.6))
    s_full = _blob((6, 6), student_centre)
    items = [item(f"i{k}", PRIMARY, PRIMARY[:1], teacher_correct=True, student_correct=bool(k % 2),
                  pieces={"teacher": _pieces(t_full, T_LAYOUT, T_TILE, T_ORDER, 2, 2),
                          "student": _pieces(s_full, S_LAYOUT, S_TILE, S_ORDER, 1, 2)})
             for k in range(4)]
    return open_run(write_store(root, [*items, *extra]))


def _expected_js(t_full, s_full):
    """What the detail view should give: the teacher's 8x8 map moved onto the common 6x6 grid,
    JS against the student's 6x6 map (both as the fp16 store holds them)."""
    t = torch.from_numpy(t_full.astype(np.float16).astype(np.float32).reshape(-1))
    s = torch.from_numpy(s_full.astype(np.float16).astype(np.float32).reshape(-1))
    return float(js_divergence(resample_to_grid(t, (8, 8), (6, 6)), resample_to_grid(s, (6, 6), (6, 6))))


def test_store_detail_reads_the_planted_tiles(tmp_path):
    store = _planted_store(tmp_path / "run", (0.35, 0.6))
    d, reason = store_detail(store, "i0", "teacher")
    assert reason == "" and d.grid == (8, 8) and d.kind == "tiles" and d.maps.shape == (2, 2, 1, 64)
    np.testing.assert_allclose(d.maps[1, 0, 0].reshape(8, 8), _blob((8, 8), (0.35, 0.6)), atol=1e-4)  # fp16
    s, _ = store_detail(store, "i0", "student")
    np.testing.assert_allclose(s.maps[0, 1, 0].reshape(6, 6), _blob((6, 6), (0.35, 0.6)), atol=1e-4)


def test_same_map_at_different_resolutions_is_aligned(tmp_path):
    """Teacher 2x2 tiles of 4x4 vs student 3x3 tiles of 2x2, both of one planted map: the detail
    misalignment is the resampling error (8x8 -> 6x6) and nothing else; a shifted map is far away."""
    same = misalignment(_planted_store(tmp_path / "same", (0.35, 0.6)), view="detail", t2i_metrics=("js", "emd_sliced"))
    shifted = misalignment(_planted_store(tmp_path / "shifted", (0.6, 0.3)), view="detail",
                           t2i_metrics=("js", "emd_sliced"))
    assert same.view == "detail" and same.measures == ["t2i:js", "t2i:emd_sliced"]  # no i2i per piece
    assert same.values.shape == (4, 1, 3, 2) and same.n_skipped == 0
    t_full = _blob((8, 8), (0.35, 0.6))
    # the bound: the planted map's own resampling error, exact 8x8 cell masses moved onto 6x6 vs
    # the exact 6x6 masses, computed from the fp16 maps the store holds
    bound = _expected_js(t_full, _blob((6, 6), (0.35, 0.6)))
    js = same.values[..., 0]
    np.testing.assert_allclose(js, bound, atol=1e-6)
    assert bound < 2e-4, bound  # piecewise-parabolic remapping of a smooth blob: far below any real gap
    far = _expected_js(t_full, _blob((6, 6), (0.6, 0.3)))
    np.testing.assert_allclose(shifted.values[..., 0], far, atol=1e-5)
    assert far > 0.1 and far > 500 * bound
    assert (shifted.values[..., 1] > 50 * np.abs(same.values[..., 1]).max()).all()
    np.testing.assert_allclose(same.baseline, 0.0, atol=1e-6)  # teacher heads alike: no split-half noise


def test_items_without_a_detail_view_are_skipped(tmp_path):
    one = item("single", PRIMARY, PRIMARY[:1], pieces={
        "teacher": _pieces(_blob((8, 8), (0.5, 0.5)), T_LAYOUT, T_TILE, T_ORDER, 2, 2)})  # student: one piece
    store = _planted_store(tmp_path / "run", (0.35, 0.6), extra=[one])
    res = misalignment(store, view="detail")
    assert "single" not in set(res.items.uid) and len(res.items) == 4
    assert res.skipped == {"single": f"student: {NO_PIECES}"} and res.n_skipped == 1
    back = MisalignmentResult.from_dict(json.loads(json.dumps(res.to_dict())))
    assert back.view == "detail" and back.skipped == res.skipped
    np.testing.assert_array_equal(back.values, res.values)


def test_detail_view_of_a_run_without_pieces_names_the_option(tmp_path):
    store = open_run(write_store(tmp_path / "run", [item("a", PRIMARY, PRIMARY[:1])]))
    assert store_detail(store, "a", "teacher") == (None, NOT_RECORDED)
    with pytest.raises(OptionError, match="cdviz record --pieces"):
        misalignment(store, view="detail")
    with pytest.raises(OptionError, match="unknown view"):
        misalignment(store, view="tiles")
    with pytest.raises(OptionError, match="image-to-image per piece is not recorded"):
        misalignment(store, view="detail", fields=("i2i",))


# ------------------------------------------------------------------------------- default unchanged

#: misalignment(planted store) before the detail view existed (commit 43c68f3): per measure, the
#: sum of values and of the baseline over items, layers (and heads), and item 3's layer 1 values.
BEFORE = {
    "measures": ["i2i:vat_cosine", "t2i:js", "t2i:spearman", "t2i:topk_iou"],
    "values": [656.7903324961662, 363.4268811607035, 750.6617148518562, 1562.3332682847977],
    "baseline": [0.5533698201179504, 0.7937556218384998, 20.967230439186096, 25.999998450279236],
    "item3_layer1": [[0.009360194206237793, 0.00844663567841053, 0.17941176891326904, 0.0],
                     [0.0037227869033813477, 0.008726806379854679, 0.17352938652038574, 0.0],
                     [0.005228877067565918, 0.008450262248516083, 0.19411766529083252, 0.0],
                     [0.005890607833862305, 0.0076413024216890335, 0.1823529601097107, 0.0],
                     [0.001194298267364502, 0.006826931145042181, 0.17352938652038574, 0.0]],
}


def test_default_view_is_the_primary_view_as_before(planted_store, planted_misalignment):
    res = planted_misalignment  # misalignment(planted_store), no view given
    assert res.view == "primary" and res.skipped == {} and res.measures == BEFORE["measures"]
    sums = [float(np.nansum(res.values[..., m].astype(np.float64))) for m in range(len(res.measures))]
    base = [float(np.nansum(res.baseline[..., m].astype(np.float64))) for m in range(len(res.measures))]
    np.testing.assert_allclose(sums, BEFORE["values"], rtol=1e-6)
    np.testing.assert_allclose(base, BEFORE["baseline"], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(res.values[3, 1], BEFORE["item3_layer1"], rtol=1e-6, atol=1e-7)
    primary = misalignment(planted_store, view="primary")
    np.testing.assert_array_equal(primary.values, res.values)
    np.testing.assert_array_equal(primary.baseline, res.baseline)


# -------------------------------------------------------------------------------- real architectures


def _load(path):
    from cdviz.models import load_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "built without its video processor"
        return load_model(path)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """Two runs recorded with --pieces on tiny real-architecture models: an InternVL teacher (4 tiles +
    thumbnail) with a LLaVA-NeXT student (base view + stitched crops), and an Idefics3 pair (tiles
    + global view). The first item's image is the scene shrunk to 30 px, which InternVL sees as one piece."""
    from cdviz.models.tiny_families import build_tiny_family, build_tiny_family_pair
    from cdviz.probes import load_probeset
    from cdviz.probes.shapes import make_shapes
    from cdviz.record import RecordOptions, record_run
    from tests.models.test_families import _sharpen

    root = tmp_path_factory.mktemp("detail")
    folder = make_shapes(root / "probes", n=3, seed=3, image_size=48).root
    lines = (folder / "items.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    small = folder / "images" / "small.png"
    Image.open(folder / first["images"][0]).convert("RGB").resize((30, 30)).save(small)
    first["images"] = ["images/small.png"]  # the first item only; the others keep the 48 px scene
    (folder / "items.jsonl").write_text("\n".join([json.dumps(first), *lines[1:]]) + "\n")
    probes = load_probeset(folder)
    pairs = {"mixed": (build_tiny_family("internvl", root / "internvl", n_layers=3),
                       build_tiny_family("llava_next", root / "llava_next")),
             "idefics3": build_tiny_family_pair("idefics3", root / "idefics3")}
    runs = {}
    for name, (t, s) in pairs.items():
        teacher, student = _load(t), _load(s)
        for a in (teacher, student):
            _sharpen(a)
        runs[name] = record_run(teacher, student, probes, root / "runs" / name, RecordOptions(pieces=True, batch_size=2))
    return runs, probes.image_path(probes.items[0])


def test_detail_view_on_recorded_families(recorded):
    runs, small = recorded
    mixed = open_run(runs["mixed"])
    res = misalignment(mixed, view="detail")
    one_piece = set(mixed.index.uid[mixed.index.image == str(small)])
    assert one_piece and set(res.skipped) == one_piece  # InternVL saw the 30 px image whole
    assert set(res.skipped.values()) == {f"teacher: {NO_PIECES}"}
    assert len(res.items) == len(mixed.index) - len(one_piece) > 0
    assert np.isfinite(res.values).all() and np.isfinite(res.baseline).all()
    uid = res.items.uid[0]
    t, _ = store_detail(mixed, uid, "teacher")
    s, _ = store_detail(mixed, uid, "student")
    assert t.kind == "tiles" and s.kind == "crops"
    assert t.grid[0] % 2 == 0 and t.grid[0] > mixed.grid(uid, "teacher")[0]  # 2 x 2 tiles: finer than the thumbnail

    ide = open_run(runs["idefics3"])
    res = misalignment(ide, view="detail", t2i_metrics=("js", "emd_sliced"))
    assert res.n_skipped == 0 and len(res.items) == len(ide.index)
    assert np.isfinite(res.values).all() and (res.values[..., 0] > 0).all()
    assert store_detail(ide, res.items.uid[0], "student")[0].kind == "tiles"


def test_report_says_its_view(recorded):
    from typer.testing import CliRunner

    from cdviz.cli import app

    runs, _ = recorded
    out = runs["mixed"] / "detail-report"
    result = CliRunner().invoke(app, ["report", str(runs["mixed"]), "--out", str(out), "--view", "detail",
                                      "--n-boot", "20", "--n-perm", "20"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["misalignment"]["view"] == "detail" and summary["misalignment"]["n_skipped_view"] > 0
    assert "View: detail" in (out / "report.md").read_text()
    from analyses.pipeline import Results

    saved = Results.load(out / "results", names=["misalignment"])["misalignment"]
    assert saved.view == "detail" and saved.n_skipped == summary["misalignment"]["n_skipped_view"]
    bad = CliRunner().invoke(app, ["report", str(runs["mixed"]), "--view", "tiles"])
    assert bad.exit_code != 0 and "primary or detail" in bad.output
