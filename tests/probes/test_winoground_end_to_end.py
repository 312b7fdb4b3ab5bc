"""Winoground in its native format, imported and scored end to end through real tokenizers: the
bundled teacher and a tiny model of every supported family. Each s(caption, image) must equal
log P("Yes") read from a plain forward of the same prompt, and text / image / group follow from
those scores."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from cdviz.cli import app
from cdviz.models import load_model
from cdviz.models.tiny import TINY_ARCHS
from cdviz.probes.probeset import load_probeset
from tests.probes.fixtures import write_winoground_fixture

runner = CliRunner()
BUNDLED = Path(__file__).resolve().parents[2] / "checkpoints" / "teacher"


@pytest.fixture(scope="module")
def winoground(tmp_path_factory):
    root = tmp_path_factory.mktemp("wg")
    out = root / "probes"
    result = runner.invoke(app, ["probes", "import", "winoground", str(write_winoground_fixture(root)), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def _yes_logprob(adapter, image, text) -> float:
    batch = adapter.build_batch([image], [text])
    with torch.no_grad():
        logits = adapter.model(**batch.inputs).logits[0, int(batch.answer_pos[0])]
    yes = adapter.tokenizer.convert_tokens_to_ids("Yes")
    assert yes != adapter.tokenizer.unk_token_id
    return float(torch.log_softmax(logits.float(), -1)[yes])


@pytest.mark.parametrize("model", ["bundled", *TINY_ARCHS])
def test_winoground_imported_and_scored_end_to_end(model, winoground, tiny_model_dir, tmp_path):
    model_dir = BUNDLED if model == "bundled" else tiny_model_dir(model)
    out = tmp_path / "wg.parquet"
    result = runner.invoke(app, ["eval", "--model", str(model_dir), "--probes", str(winoground), "--out", str(out),
                                 "--batch-size", "3"])
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(out)
    summary = json.loads(out.with_suffix(".summary.json").read_text())
    ps = load_probeset(winoground)
    assert summary["winoground"]["n"] == len(ps) == 3 and not summary["skipped"]
    adapter = load_model(model_dir)
    from cdviz.evaluate import load_image

    groups = []
    for item in ps:
        images = [load_image(ps, item, k) for k in range(2)]
        s = {}
        for row in frame[frame.uid == item.uid].itertuples():
            expected = _yes_logprob(adapter, images[row.image], f'Does this image show "{item.options[row.caption]}"? '
                                                                 "Answer yes or no.")
            assert row.score == pytest.approx(expected, abs=1e-4)
            s[row.caption, row.image] = row.score
        text = s[0, 0] > s[1, 0] and s[1, 1] > s[0, 1]
        image = s[0, 0] > s[0, 1] and s[1, 1] > s[1, 0]
        groups.append((text, image, text and image))
    for k, name in enumerate(("text", "image", "group")):
        assert summary["winoground"][name] == pytest.approx(100 * sum(g[k] for g in groups) / len(groups))
