"""TAF: the teacher's connector + a linear, folded exactly into a plain LLaVA projector when it can be."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from transformers import AutoProcessor, LlavaForConditionalGeneration

from cdviz.models import load_model
from cdviz.models.tiny import llava_config, llava_processor
from cdviz.models.tokenizer import default_vocabulary
from cdviz.models.taf import TAFConnector, TAFError, connector, install_taf
from cdviz.train.taf import check_taf_pair, mark_unmerged, merged_projector, projector_keys, save_taf


def _logits(adapter):
    batch = adapter.build_batch([Image.new("RGB", (32, 32), (200, 30, 30))], ["Describe the image."])
    with torch.no_grad():
        return adapter.model(**batch.inputs).logits


def _with_taf(teacher_dir, student_dir, seed=0):
    teacher, student = load_model(teacher_dir), load_model(student_dir)
    torch.manual_seed(seed)
    module = install_taf(student, connector(teacher), int(teacher.text_config.hidden_size))
    with torch.no_grad():  # a non-trivial bias, so the fold is tested with it
        module.taf.bias.normal_()
    return teacher, student, module


def test_taf_replaces_the_connector_and_only_the_linear_trains(pair_dirs):
    teacher, student, module = _with_taf(*pair_dirs)
    assert isinstance(connector(student), TAFConnector)
    assert not any(p.requires_grad for p in module.teacher.parameters())
    assert all(p.requires_grad for p in module.taf.parameters())
    for a, b in zip(module.teacher.parameters(), connector(teacher).parameters()):
        assert torch.equal(a, b) and a.data_ptr() != b.data_ptr()  # a copy, not shared


@pytest.mark.parametrize("which", ["same", "wide"])
def test_merge_is_exact_and_saves_a_plain_llava(pair_dirs, wide_student_dir, tmp_path, which):
    student_dir = pair_dirs[1] if which == "same" else wide_student_dir
    _, student, module = _with_taf(pair_dirs[0], student_dir)
    before = _logits(student)
    assert save_taf(student, module, tmp_path)  # folded
    assert not isinstance(connector(student), TAFConnector)
    torch.testing.assert_close(_logits(student), before, atol=1e-5, rtol=0)
    student.model.save_pretrained(tmp_path)
    student.processor.save_pretrained(tmp_path)
    plain = LlavaForConditionalGeneration.from_pretrained(tmp_path)  # no cdviz involved
    AutoProcessor.from_pretrained(tmp_path)
    reloaded = load_model(tmp_path)
    assert type(connector(reloaded)).__name__ == "LlavaMultiModalProjector"
    torch.testing.assert_close(_logits(reloaded), before, atol=1e-5, rtol=0)
    assert plain.model.multi_modal_projector.linear_2.weight.shape == connector(reloaded).linear_2.weight.shape


def test_narrow_student_keeps_taf_and_the_loader_reattaches_it(pair_dirs, narrow_student_dir, tmp_path):
    _, student, module = _with_taf(pair_dirs[0], narrow_student_dir)
    before = _logits(student)
    assert merged_projector(student, module) is None  # 64-wide hidden layer cannot fit a 32-wide projector
    assert not save_taf(student, module, tmp_path)
    state = {k: v for k, v in student.model.state_dict().items() if k not in projector_keys(student.model)}
    student.model.save_pretrained(tmp_path, state_dict=state)
    mark_unmerged(tmp_path, 64, 32)
    student.processor.save_pretrained(tmp_path)
    reloaded = load_model(tmp_path)
    assert isinstance(connector(reloaded), TAFConnector)
    torch.testing.assert_close(_logits(reloaded), before, atol=1e-5, rtol=0)
    assert "taf.safetensors" in (tmp_path / "README.md").read_text()


def test_vision_feature_mismatch_is_a_clear_error(pair_dirs, tmp_path):
    processor = llava_processor(default_vocabulary(), 32, 8)
    cfg = llava_config(len(processor.tokenizer), processor.image_token_id, n_layers=2, vision_hidden=48)
    LlavaForConditionalGeneration(cfg).save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    with pytest.raises(TAFError, match="same vision features.*32-d.*48-d"):
        check_taf_pair(load_model(pair_dirs[0]), load_model(tmp_path))


def test_unsupported_connector_is_a_clear_error(tiny_model_dir):
    with pytest.raises(TAFError, match="taf = false"):
        connector(load_model(tiny_model_dir("qwen2vl")))
