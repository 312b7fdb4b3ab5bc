"""Probe lines the loader leaves out under --skip-bad are listed in the run's manifest, as
`cdviz eval` lists them in its summary, instead of vanishing."""

from __future__ import annotations

import json

from cdviz.probes.shapes import make_shapes
from cdviz.record import RecordOptions, record


def test_loader_skips_are_in_the_manifest(tiny_model_dir, tmp_path):
    probes = make_shapes(tmp_path / "probes", n=3, seed=2, image_size=32).root
    items = probes / "items.jsonl"
    lost = {**json.loads(items.read_text().splitlines()[0]), "uid": "lost", "images": ["gone.png"]}
    with open(items, "a", encoding="utf-8") as f:
        f.write("{not json\n" + json.dumps(lost) + "\n")
    model = tiny_model_dir("llava")
    run = record(model, model, probes, tmp_path / "run", RecordOptions(shard_size=2, batch_size=2), skip_bad=True)
    skipped = json.loads((run / "manifest.json").read_text())["skipped"]
    assert [s["where"] for s in skipped] == [f"{items}:4", f"{items}:5"]
    assert "malformed JSON" in skipped[0]["reason"] and "gone.png" in skipped[1]["reason"]
