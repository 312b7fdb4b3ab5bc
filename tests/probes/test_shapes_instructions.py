"""The shapes world's training texts with the probes' partial captions added (probe_captions)."""

from __future__ import annotations

import random
import re

from cdviz.probes.shapes import DESCRIBE_PROMPT, generate_scenes, instruction_samples
from cdviz.train.data import ShapesInstructions

OPTIONS = re.compile(r"^Which caption best describes the image\? \(A\) (.*) \(B\) (.*) Answer with")


def test_probe_captions_add_the_true_option_of_every_caption_item_and_nothing_else():
    for scene in generate_scenes(5, 48, splits=("train",), n=40):
        plain = instruction_samples(scene, random.Random(scene.index))
        extended = instruction_samples(scene, random.Random(scene.index), probe_captions=True)
        added = [s for s in extended if s not in plain]
        assert [s for s in extended if s in plain] == plain  # the same texts, same order
        truths = set()
        for s in plain:
            m = OPTIONS.match(s["prompt"])
            if m:
                truths.add(m.group(1 if s["answer"] == "A" else 2))
        assert {s["answer"] for s in added} == truths
        assert all(s["kind"] == "caption" and s["prompt"] == DESCRIBE_PROMPT for s in added)


def test_training_source_passes_the_option_through():
    plain = ShapesInstructions(n_scenes=10, seed=1, image_size=32)
    extended = ShapesInstructions(n_scenes=10, seed=1, image_size=32, probe_captions=True)
    assert len(extended) > len(plain)
    captions = lambda src: sum(s["kind"] == "caption" for _, s in src.samples)  # noqa: E731
    assert captions(extended) - captions(plain) == len(extended) - len(plain)
