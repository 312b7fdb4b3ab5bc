"""The colour-binding diagnostic on a tiny real model: every colour question asked once, counted by scene size."""

from __future__ import annotations

import random

from typer.testing import CliRunner

from cdviz.diagnostics.binding import colour_binding
from cdviz.cli import app
from cdviz.models import load_model
from cdviz.models.tiny import build_tiny
from cdviz.probes.shapes import _questions
from cdviz.probes.shapes_scene import generate_scenes


def test_every_colour_question_is_asked_and_counted_by_objects(tmp_path):
    model = load_model(build_tiny("llava", tmp_path / "m", n_layers=1, hidden=32, image_size=32, patch_size=8))
    scenes = list(generate_scenes(0, 32, splits=("test",), n=6))
    expected: dict[int, int] = {}
    for scene in scenes:
        asked = sum(kind == "colour" for kind, *_ in _questions(scene, random.Random(1)))
        expected[len(scene.objects)] = expected.get(len(scene.objects), 0) + asked
    ticks = []
    got = colour_binding(model, scenes=6, image_size=32, progress=ticks.append)
    assert len(ticks) == 6
    assert {k: total for k, (_, total) in got["by_objects"].items()} == {k: v for k, v in expected.items() if v}
    assert got["n"] == sum(expected.values()) > 0
    assert got["right"] == sum(right for right, _ in got["by_objects"].values()) <= got["in_view"] <= got["n"]


def test_cli_prints_the_breakdown(tmp_path):
    build_tiny("llava", tmp_path / "m", n_layers=1, hidden=32, image_size=32, patch_size=8)
    result = CliRunner().invoke(app, ["zoo", "binding", "--model", str(tmp_path / "m"), "--scenes", "3",
                                      "--image-size", "32"])
    assert result.exit_code == 0, result.output
    assert "colour questions: right" in result.output and "object(s):" in result.output
    bad = CliRunner().invoke(app, ["zoo", "binding", "--model", str(tmp_path / "m"), "--scenes", "0"])
    assert bad.exit_code != 0 and "--scenes" in bad.output
