"""The generic fallback adapter (``--adapter generic``): image spans from runs of the image token,
grids inferred or given by --grid, one warning saying what was assumed, and cdviz's capture through
it equal to eager ``output_attentions`` on a padded batch of 2."""

from __future__ import annotations

import json
import shutil
import warnings

import pytest
import torch
from PIL import Image
from test_families import TEXTS, _sharpen, _text_rows  # the exactness helpers of the family parity test
from typer.testing import CliRunner

from cdviz.models import AdapterError, load_model
from cdviz.models.generic import GenericAdapter, infer_grid, parse_grid
from cdviz.record import Capture, CapturePlan, SamplePlan

IMAGES = [Image.new("RGB", (32, 32), (255, 0, 0)), Image.new("RGB", (40, 32), (0, 0, 255))]


@pytest.fixture(scope="module")
def generic(tiny_model_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_model(tiny_model_dir("llava"), adapter="generic")


def test_finds_the_token_and_the_layers(generic, tiny_model_dir):
    own = load_model(tiny_model_dir("llava"))
    assert isinstance(generic, GenericAdapter)
    assert generic.image_token_id == own.image_token_id
    assert generic.layers_path == "model.language_model.layers"
    assert [id(m) for m in generic.attention_modules()] != []
    assert len(generic.attention_modules()) == own.n_layers
    batch, want = generic.build_batch(IMAGES, TEXTS), own.build_batch(IMAGES, TEXTS)
    assert batch.image_spans == want.image_spans and batch.grids == want.grids


def test_capture_matches_eager(generic):
    adapter = generic
    _sharpen(adapter)
    batch = adapter.build_batch(IMAGES, TEXTS)
    assert batch.inputs["attention_mask"].min() == 0, "the test needs a padded batch"
    adapter.model.set_attn_implementation("eager")
    with torch.no_grad():
        eager = adapter.model(**batch.inputs, output_attentions=True).attentions  # L x [B, H, T, T]
    adapter.model.set_attn_implementation("sdpa")
    layers = list(range(adapter.n_layers))
    spans = [s[0] for s in batch.image_spans]
    plan = CapturePlan(layers, [SamplePlan(spans[b], _text_rows(batch, b, spans[b])) for b in range(2)],
                       store_block=True)
    with torch.no_grad(), Capture(adapter, plan) as cap:
        adapter.model(**batch.inputs)
    sharp = 0.0
    for layer in layers:
        res = cap.results[layer]
        for b in range(2):
            start, end = spans[b]
            rows = _text_rows(batch, b, spans[b])
            full = eager[layer][b].float()
            sharp = max(sharp, float(full[:, rows].max()))
            torch.testing.assert_close(res.t2i[b], full[:, rows, start:end], atol=1e-5, rtol=0)  # text -> image
            block = full[:, start:end, start:end]
            torch.testing.assert_close(res.i2i[b], block.mean(1), atol=1e-5, rtol=0)  # image -> image
            torch.testing.assert_close(res.i2i_block[b], block.mean(0), atol=1e-5, rtol=0)
    assert sharp > 0.3


def test_one_warning_says_what_was_assumed(tiny_model_dir):
    adapter = load_model(tiny_model_dir("llava"), adapter="generic")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        adapter.build_batch(IMAGES, TEXTS)
        adapter.build_batch(IMAGES, TEXTS)
    said = [str(w.message) for w in caught if "--adapter generic" in str(w.message)]
    assert len(said) == 1, said
    assert f"image token id {adapter.image_token_id}" in said[0]
    assert "4x4, a square of 16 tokens" in said[0]
    assert "2 decoder layers at model.language_model.layers" in said[0]


def test_wrong_grid_product_names_both_numbers(tiny_model_dir):
    adapter = load_model(tiny_model_dir("llava"), adapter="generic", grid="3x5")
    with pytest.raises(AdapterError, match="--grid 3x5 holds 15 tokens but the image has 16 image tokens"):
        adapter.build_batch(IMAGES, TEXTS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        given = load_model(tiny_model_dir("llava"), adapter="generic", grid="2x8")
        assert given.build_batch(IMAGES, TEXTS).grids == [[(2, 8)], [(2, 8)]]


def test_a_count_that_is_not_a_square_asks_for_grid(generic):
    ids = torch.tensor([[1, 2, *[generic.image_token_id] * 12, 3]])
    with pytest.raises(AdapterError, match="12 image tokens are not a square.*--grid RxC"):
        generic.image_pieces({"input_ids": ids}, [1], ["x"])
    assert infer_grid(12, aspect=4 / 3) == ((3, 4), "the factorisation of 12 tokens closest to the image's aspect "
                                                    "ratio 1.33")
    with pytest.raises(AdapterError, match="closest factorisation 1x17 is far"):
        infer_grid(17, aspect=1.0)
    assert parse_grid("24x24") == (24, 24)
    with pytest.raises(AdapterError, match="rows x columns"):
        parse_grid("24")


def test_unknown_architecture_points_to_generic(tiny_model_dir, tmp_path):
    copy = shutil.copytree(tiny_model_dir("llava"), tmp_path / "mystery")
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "architectures": ["MysteryVLM"]}))
    with pytest.raises(AdapterError, match="'MysteryVLM' has no cdviz adapter.*--adapter generic.*--grid"):
        load_model(copy)
    with pytest.raises(AdapterError, match="--grid is read by the generic adapter only"):
        load_model(tiny_model_dir("llava"), grid="4x4")


def test_cli_eval_takes_adapter_and_grid(tiny_model_dir, shapes_probes, tmp_path):
    from cdviz.cli import app

    out = tmp_path / "eval.parquet"
    result = CliRunner().invoke(app, ["eval", "--model", str(tiny_model_dir("llava")), "--probes",
                                      str(shapes_probes.root), "--out", str(out), "--adapter", "generic",
                                      "--grid", "4x4"])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(app, ["eval", "--model", str(tiny_model_dir("llava")), "--probes",
                                      str(shapes_probes.root), "--out", str(out), "--adapter", "generic",
                                      "--grid", "3x5"])
    assert result.exit_code == 2 and "15 tokens but the image has 16" in result.output


def test_pair_check_names_differing_chat_templates(tiny_model_dir, tmp_path):
    """Two tiny models of different families render the same conversation differently."""
    from cdviz.models import check_pair
    from cdviz.models.loading import chat_template_difference

    llava = load_model(tiny_model_dir("llava"))
    assert chat_template_difference(llava, llava) is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qwen = load_model(tiny_model_dir("qwen2vl"))
    report = check_pair(llava, qwen)
    said = [w for w in report.warnings if w.startswith("chat template check failed")]
    assert len(said) == 1, report.warnings
    assert "first difference at character 0: teacher 'USER: " in said[0] and "student '<|im_start|>" in said[0]
