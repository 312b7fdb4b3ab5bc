"""The bundled demo models: files match the manifest, load as standard HF directories, and
re-evaluate to the accuracy the manifest reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cdviz.zoo import MODEL_FILES, MODELS, ZooSpec, heldout_probes, sha256

ROOT = Path(__file__).resolve().parents[1] / "checkpoints"
MANIFEST = json.loads((ROOT / "manifest.json").read_text())


@pytest.mark.parametrize("name", MODELS)
def test_weights_match_manifest(name):
    for f in MODEL_FILES:
        assert sha256(ROOT / name / f) == MANIFEST["models"][name]["sha256"][f], f"{name}/{f} changed"


@pytest.mark.parametrize("name", MODELS)
def test_loads_as_standard_hf_directory(name):
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    model = LlavaForConditionalGeneration.from_pretrained(ROOT / name)
    processor = AutoProcessor.from_pretrained(ROOT / name)
    assert processor.image_token_id == model.config.image_token_id
    assert model.config.text_config.num_hidden_layers == MANIFEST["models"][name]["config"]["layers"]


@pytest.fixture(scope="module")
def heldout(tmp_path_factory):
    spec = ZooSpec(**MANIFEST["spec"])
    return heldout_probes(tmp_path_factory.mktemp("heldout"), spec), spec


@pytest.mark.parametrize("name", MODELS)
def test_reevaluation_matches_manifest(name, heldout):
    from cdviz.evaluate import evaluate
    from cdviz.models import load_model
    from cdviz.probes.probeset import load_probeset

    probes, spec = heldout
    ps = load_probeset(probes)
    ps.items = ps.items[:spec.check_items]
    check = MANIFEST["models"][name]["metrics"]["check"]
    frame, skipped = evaluate(load_model(ROOT / name), ps, batch_size=32, protocol=check.get("protocol", "letters"))
    assert not skipped
    expected = check["accuracy"]
    assert abs(100 * frame.correct.mean() - expected) <= 1.0
