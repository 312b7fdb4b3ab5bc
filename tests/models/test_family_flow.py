"""The whole cdviz flow on a same-family tiny pair of every family: ``cdviz probes make``,
``eval``, ``record``, ``report`` and a 3-step ``finetune`` (DPT, DFT with VAT in the report's
layers, SFT) through the real CLI, and the training pieces that multi-piece images, Gemma 3's
bidirectional image mask and Pixtral's row-break tokens touch.

    pytest tests/models/test_family_flow.py
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from typer.testing import CliRunner

from cdviz.cli import app
from cdviz.conversation import Example, encode
from cdviz.models import load_model, load_pair, primary_piece
from cdviz.models.tiny_families import FAMILY_ARCHS, PAIR_TEACHER, build_tiny_family, build_tiny_family_pair
from cdviz.store import open_run

pytestmark = pytest.mark.usefixtures("one_thread")

runner = CliRunner()
N_ITEMS = 6
IMAGE_SIZE = 48  # over one tile / base view: tiles, crops and thumbnails show
#: Families whose connector is LLaVA's MLP (TAF joins the pair there); the others train with --no-taf.
TAF_FAMILIES = ("llava_next", "llava_onevision", "internvl", "mistral3")
#: The primary piece's token grid of a 48 px shapes image, as the store keeps it.
GRIDS = {"qwen3vl": (2, 2), "qwen3vl_moe": (2, 2), "llava_next": (4, 4), "llava_onevision": (4, 4),
         "gemma3": (4, 4), "idefics3": (4, 4), "smolvlm": (4, 4), "internvl": (4, 4),
         "mistral3": (4, 5)}  # Pixtral: 4 columns of patches + the [IMG_BREAK] / [IMG_END] column
#: How many pieces each family cuts a 48 px square image into.
N_PIECES = {"qwen3vl": 1, "qwen3vl_moe": 1, "llava_next": 2, "llava_onevision": 2, "gemma3": 1, "idefics3": 5,
            "smolvlm": 5, "internvl": 5, "mistral3": 1}


def invoke(*args):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "built without its video processor"
        result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="session")
def pair(tmp_path_factory):
    built = {}

    def get(arch: str) -> tuple[Path, Path]:
        if arch not in built:
            built[arch] = build_tiny_family_pair(arch, tmp_path_factory.mktemp(f"pair-{arch}"))
        return built[arch]

    return get


@pytest.fixture(scope="session")
def probes(tmp_path_factory):
    out = tmp_path_factory.mktemp("flow") / "probes"
    invoke("probes", "make", "shapes", "--n", N_ITEMS, "--image-size", IMAGE_SIZE, "--seed", 0, "--out", out)
    return out


def _load(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return load_model(path)


def _recipe(path: Path, teacher: Path, student: Path, out: Path) -> Path:
    """A tiny run: 4 shapes scenes, micro-batches of 2, no warm-up (a 1-step stage then trains)."""
    stages = "".join(f"[stage.{s}]\nwarmup_ratio = 0.0\n" for s in ("dpt", "dft", "sft"))
    path.write_text(f"teacher = '{teacher}'\nstudent = '{student}'\nout = '{out}'\nshapes_scenes = 4\n"
                    f"shapes_image_size = {IMAGE_SIZE}\nbatch_size = 2\nprogress = false\n{stages}")
    return path


def _decoder_layer(state: dict[str, torch.Tensor], layer: int) -> dict[str, torch.Tensor]:
    """The language model's tensors of decoder layer ``layer`` (vision tower layers left out)."""
    pattern = re.compile(rf"\.layers\.{layer}\.")
    return {k: v for k, v in state.items() if pattern.search(k) and "vision" not in k and "visual" not in k}


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILY_ARCHS)
def test_eval_record_report_finetune(family, pair, probes, tmp_path):
    teacher, student = pair(family)
    load_pair(teacher, student)  # the pair passes cdviz's checks (vocabulary, image token, letters)

    invoke("eval", "--model", student, "--probes", probes, "--out", tmp_path / "eval.parquet")
    summary = json.loads((tmp_path / "eval.summary.json").read_text())
    assert summary["n_items"] == N_ITEMS and not summary["skipped"]

    run = tmp_path / "run"
    invoke("record", "--teacher", teacher, "--student", student, "--probes", probes, "--out", run, "--device", "cpu")
    store = open_run(run)
    assert len(store.index) == N_ITEMS and (store.index.status == "ok").all()
    for model in ("teacher", "student"):
        for uid in store.index.uid:
            rows, cols = store.grid(uid, model)
            assert (rows, cols) == GRIDS[family]
            n_layers = store.get(uid, model, "i2i").shape[0]
            assert store.get(uid, model, "i2i").shape == (n_layers, store.n_heads(model), rows * cols)
            assert store.get(uid, model, "t2i").shape[-1] == rows * cols
    assert store.layers("teacher") == [0, 1, 2] and store.layers("student") == [0, 1]

    invoke("report", run, "--n-boot", 20, "--n-perm", 20)
    targets = json.loads((run / "report" / "summary.json").read_text())["recommended_targets"]
    assert targets["student_layers"]

    out = tmp_path / "ft"
    taf = [] if family in TAF_FAMILIES else ["--no-taf"]
    invoke("finetune", "--recipe", _recipe(tmp_path / "recipe.toml", teacher, student, out), "--stages",
           "dpt,dft,sft", "--steps", 1, "--from-report", run, *taf)
    rows = [json.loads(line) for s in ("dpt", "dft", "sft") for line in (out / s / "metrics.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in rows] == ["dpt", "dft", "sft"]
    assert all(r["lr"] > 0 for r in rows)
    assert "loss/vat" in rows[1] and torch.isfinite(torch.tensor(rows[1]["loss/vat"]))
    dft = json.loads((out / "dft" / "model" / "cdviz_stage.json").read_text())
    aligned = dft["layer_map"]["student_layers"]
    assert aligned == targets["student_layers"] and dft["layer_map"]["source"].startswith("report")

    before = load_file(str(student / "model.safetensors"))
    after = load_file(str(out / "model" / "model.safetensors"))
    for layer in aligned:
        old, new = _decoder_layer(before, layer), _decoder_layer(after, layer)
        assert old and set(old) <= set(new)
        assert any(not torch.equal(old[k], new[k]) for k in old), f"layer {layer} did not change"
    if family in TAF_FAMILIES:
        # 64-d teacher connector + TAF linear into 32 d: kept unmerged beside the model
        assert (out / "model" / "taf.safetensors").is_file()
    else:
        # --no-taf: DPT trained the student's own connector (patch mergers, projector, connector)
        dpt = load_file(str(out / "dpt" / "model" / "model.safetensors"))
        connector = [k for k in before if re.search(r"merger|multi_modal_projector|\.connector\.", k)]
        assert connector and any(not torch.equal(before[k], dpt[k]) for k in connector)

    final = _load(out / "model")
    assert final.n_layers == 2
    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), (200, 30, 30))
    batch = final.build_batch([image], ["a red circle ."])
    with torch.no_grad():
        assert torch.isfinite(final.model(**batch.inputs).logits).all()


# ---- what training reads of an image: the primary piece ---------------------------------------------

def _example(size=(IMAGE_SIZE, IMAGE_SIZE), regions=None) -> Example:
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what is red ?"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "a circle ."}]}]
    return Example("ex", messages, Image.new("RGB", size, (200, 30, 30)), regions)


@pytest.mark.parametrize("family", FAMILY_ARCHS)
def test_training_blocks_are_the_primary_piece(family, pair):
    """encode gives the primary piece's span and token grid (the tiles, crops and thumbnail of a
    multi-piece image are left out, Pixtral's row-end column kept), and the block VAT trains on
    equals eager attention's head-mean block there: Gemma 3's image tokens see later ones."""
    from cdviz.train.losses import TrainCapture

    adapter = _load(pair(family)[1])
    enc = encode(adapter, [_example(), _example((70, 30))])
    pieces = adapter.image_pieces(enc.inputs, [1, 1], ["a", "b"])
    assert len(pieces[0][0]) == N_PIECES[family]
    for b in range(2):
        main = primary_piece(pieces[b][0])
        assert enc.spans[b] == main.span and enc.grids[b] == main.token_grid
    assert enc.grids[0] == GRIDS[family]
    layers = list(range(adapter.n_layers))
    with TrainCapture(adapter, layers, enc.spans) as cap:
        adapter.model(**enc.inputs)
    adapter.model.set_attn_implementation("eager")
    with torch.no_grad():
        eager = adapter.model(**enc.inputs, output_attentions=True).attentions  # L x [B, H, T, T]
    adapter.model.set_attn_implementation("sdpa")
    for layer in layers:
        for b in range(2):
            start, end = enc.spans[b]
            block = cap.blocks[layer][b]  # [N, N]
            assert block.requires_grad
            torch.testing.assert_close(block.detach(), eager[layer][b, :, start:end, start:end].mean(0),
                                       atol=1e-5, rtol=0)
            above = float(block.detach().triu(1).sum())
            assert above > 0.1 if family == "gemma3" else above == 0.0


@pytest.mark.parametrize("family", ["llava_next", "internvl", "mistral3"])
def test_a_text_only_conversation_beside_an_image(family, pair):
    adapter = _load(pair(family)[1])
    text_only = _example()
    text_only.image, text_only.messages[0]["content"] = None, text_only.messages[0]["content"][1:]
    enc = encode(adapter, [_example(), text_only])
    assert enc.spans[1] is None and enc.grids[1] is None and enc.grids[0] == GRIDS[family]


def test_region_cover_has_zeros_on_row_end_tokens(pair):
    """Pixtral's span holds rows x (cols + 1) tokens; the grounding cover lines up with them."""
    adapter = _load(pair("mistral3")[1])
    left_half = [{"x": 0.0, "y": 0.0, "w": IMAGE_SIZE / 2, "h": float(IMAGE_SIZE)}]
    enc = encode(adapter, [_example(regions=left_half)])
    rows, cols = enc.grids[0]
    cover = enc.regions[0].view(rows, cols)
    assert cover.shape[0] * cover.shape[1] == enc.spans[0][1] - enc.spans[0][0]
    assert (cover[:, :2] > 0).all() and (cover[:, 2:] == 0).all()  # the last column: [IMG_BREAK] / [IMG_END]


# ---- TAF -------------------------------------------------------------------------------------------

def test_taf_is_refused_by_name_where_the_connector_is_not_llava_s(pair, probes, tmp_path):
    teacher, student = pair("gemma3")
    result = runner.invoke(app, ["finetune", "--recipe", str(_recipe(tmp_path / "r.toml", teacher, student,
                                                                      tmp_path / "ft")),
                                 "--stages", "dpt", "--steps", "1"])
    assert result.exit_code != 0
    assert "Gemma3ForConditionalGeneration" in result.output and "--no-taf" in result.output


@pytest.mark.parametrize("family", TAF_FAMILIES)
def test_taf_folds_only_a_plain_llava_mlp(family, pair, tmp_path):
    """A student as wide as its teacher gets a plain projector only where the connector is LLaVA's
    MLP; InternVL's layer norm and Mistral 3's patch merger keep the TAF connector unmerged, and
    its output is what the student computes (Mistral 3 passes image_sizes through it)."""
    from cdviz.models.taf import connector, install_taf, set_connector
    from cdviz.train.taf import merged_projector

    teacher = _load(pair(family)[0])
    wide = _load(build_tiny_family(family, tmp_path / "wide", **{**PAIR_TEACHER, "seed": 2}))
    module = install_taf(wide, connector(teacher), int(teacher.text_config.hidden_size))
    merged = merged_projector(wide, module)
    assert (merged is not None) == (family in ("llava_next", "llava_onevision"))
    pixels = {k: v for k, v in encode(wide, [_example()]).inputs.items() if k in ("pixel_values", "image_sizes")}
    with torch.no_grad():
        through_taf = _flat(wide.model.model.get_image_features(**pixels))
        assert through_taf.shape[-1] == int(wide.text_config.hidden_size)
        if merged is not None:
            set_connector(wide, merged)
            torch.testing.assert_close(_flat(wide.model.model.get_image_features(**pixels)), through_taf,
                                       atol=1e-5, rtol=1e-5)


def _flat(features) -> torch.Tensor:
    """get_image_features' output (a tensor, a list per image, or a model output) as one tensor."""
    if hasattr(features, "pooler_output"):
        features = features.pooler_output
    if isinstance(features, (list, tuple)):
        features = torch.cat([f.reshape(-1, f.shape[-1]) for f in features])
    return features.reshape(-1, features.shape[-1])
