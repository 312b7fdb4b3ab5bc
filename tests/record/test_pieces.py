"""Per-piece answer rows (``cdviz record --pieces``): the text query rows' attention over the
patches of an image's crops / tiles equals eager ``output_attentions`` on those tokens, in the
capture (fp32, 1e-5) and in the store (fp16), and the index's "pieces" column lays them out.

    pytest tests/record/test_pieces.py
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from cdviz import schema
from cdviz.evaluate import plan_queries
from cdviz.models import load_model, primary_piece
from cdviz.models.tiny_families import build_tiny_family, build_tiny_family_pair
from cdviz.probes import load_probeset
from cdviz.probes.shapes import make_shapes
from cdviz.record import Capture, CapturePlan, RecordOptions, SamplePlan
from cdviz.record.recorder import other_pieces, record_run
from cdviz.store import open_run
from tests.models.test_families import SIZES, TEXTS, _sharpen

pytestmark = pytest.mark.usefixtures("one_thread")

#: Families whose images come in several pieces at the sizes below: LLaVA-NeXT (base + stitched
#: crops with a newline per row), InternVL (tiles + thumbnail), Idefics3 (tiles + global view).
FAMILIES = ("llava_next", "internvl", "idefics3")
IMAGE_SIZE = 48  # shapes scenes over one tile / base view, so every family above cuts them


def _load(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "built without its video processor"
        return load_model(path)


def _eager(adapter, batch):
    """L x [B, H, T, T] eager attention probabilities; the model is left on SDPA."""
    adapter.model.set_attn_implementation("eager")
    with torch.no_grad():
        attentions = adapter.model(**batch.inputs, output_attentions=True).attentions
    adapter.model.set_attn_implementation("sdpa")
    return attentions


def _text_rows(batch, b):
    """Every real token of sample ``b`` outside its image's pieces."""
    inside = {i for p in batch.pieces[b][0] for i in range(*p.span)}
    return [i for i in range(int(batch.answer_pos[b]) + 1) if i not in inside]


def test_other_pieces_skip_the_primary_and_row_ends():
    from cdviz.models import Piece

    image = [Piece((10, 14), (2, 2), "base"), Piece((14, 26), (3, 3), "crop", row_end=1),
             Piece((30, 34), (2, 2), "tile", place=(0, 1, 1, 2))]
    keys, listed = other_pieces(image)
    assert keys == [14, 15, 16, 18, 19, 20, 22, 23, 24, 30, 31, 32, 33]  # 17, 21, 25: newlines
    assert listed == [{"role": "crop", "grid": [3, 3], "offset": 0},
                      {"role": "tile", "grid": [2, 2], "offset": 9, "place": [0, 1, 1, 2]}]
    assert other_pieces([Piece((3, 7), (2, 2))]) == ([], [])


@pytest.mark.parametrize("family", FAMILIES)
def test_capture_pieces_equal_eager(family, tmp_path):
    adapter = _load(build_tiny_family(family, tmp_path / family))
    _sharpen(adapter)
    images = [Image.new("RGB", SIZES[family][0], (255, 0, 0)), Image.new("RGB", SIZES[family][1], (0, 0, 255))]
    batch = adapter.build_batch(images, TEXTS)
    assert batch.inputs["attention_mask"].min() == 0, "the test needs a padded batch"
    eager = _eager(adapter, batch)
    layers = list(range(adapter.n_layers))
    keys = [other_pieces(batch.pieces[b][0])[0] for b in range(2)]
    assert keys[1], "the wide image needs a non-primary piece"  # InternVL's square one is a single piece
    plan = CapturePlan(layers, [SamplePlan(batch.image_spans[b][0], _text_rows(batch, b), piece_keys=keys[b])
                                for b in range(2)])
    with torch.no_grad(), Capture(adapter, plan) as cap:
        adapter.model(**batch.inputs)
    sharp = 0.0
    for layer in layers:
        for b in range(2):
            rows = plan.samples[b].query_rows
            want = eager[layer][b].float()[:, rows][:, :, keys[b]]  # [H, Q, M]
            sharp = max(sharp, float(want.max()) if want.numel() else 0.0)
            torch.testing.assert_close(cap.results[layer].t2i_pieces[b], want, atol=1e-5, rtol=0)
    assert sharp > 0.05, "the pieces' attention stayed near zero; the comparison would see nothing"


@pytest.fixture(scope="module")
def probes(tmp_path_factory):
    return make_shapes(tmp_path_factory.mktemp("pieces") / "probes", n=3, seed=4, image_size=IMAGE_SIZE).root


@pytest.mark.parametrize("family", ("llava_next", "internvl"))
def test_recorded_pieces_equal_eager(family, probes, tmp_path):
    teacher_dir, student_dir = build_tiny_family_pair(family, tmp_path / "pair")
    adapters = {"teacher": _load(teacher_dir), "student": _load(student_dir)}
    for a in adapters.values():
        _sharpen(a)
    ps = load_probeset(probes)
    run = record_run(adapters["teacher"], adapters["student"], ps, tmp_path / "run",
                     RecordOptions(pieces=True, batch_size=2))
    store = open_run(run)
    assert store.manifest["options"]["pieces"] is True
    for item in ps.items:
        row = store.row(item.uid)
        query = plan_queries(item, "letters")[0]
        image = Image.open(ps.image_path(item, query.image)).convert("RGB")
        for name, adapter in adapters.items():
            batch = adapter.build_batch([image], [query.text])  # alone: what a padded batch gives its real rows
            keys, listed = other_pieces(batch.pieces[0][0])
            assert listed and schema.row_pieces(row, name) == listed
            assert sum(p["grid"][0] * p["grid"][1] for p in listed) == len(keys)
            eager = _eager(adapter, batch)
            stored = store.get(item.uid, name, "t2i_pieces")  # [L, H, 1, M]
            want = torch.stack([eager[layer][0, :, [int(batch.answer_pos[0])]][:, :, keys].float()
                                for layer in store.layers(name)]).numpy()
            assert stored.shape == want.shape
            np.testing.assert_allclose(stored, want, atol=2e-3, rtol=0)  # fp16 storage
            assert want.max() > 0.01  # the pieces hold attention the comparison can see
            primary = primary_piece(batch.pieces[0][0])
            assert (int(row[f"{name}_grid_rows"]), int(row[f"{name}_grid_cols"])) == primary.token_grid


def test_run_without_pieces_has_none(probes, tmp_path):
    adapter = _load(build_tiny_family("llava_next", tmp_path / "model"))
    run = record_run(adapter, adapter, load_probeset(probes), tmp_path / "run", RecordOptions(batch_size=2))
    store = open_run(run)
    assert store.manifest["options"]["pieces"] is False
    assert set(store.index["teacher_pieces"]) == set(store.index["student_pieces"]) == {"[]"}
    for model in schema.MODELS:
        with safe_open(str(next((run / "shards" / model).glob("*.safetensors"))), "np") as f:
            assert {k.split("/", 1)[1] for k in f.keys()} == set(schema.RECORDED)
    # a run recorded before the column existed reads as one without pieces
    assert schema.row_pieces(store.row(store.index.uid[0]).drop("teacher_pieces"), "teacher") == []
