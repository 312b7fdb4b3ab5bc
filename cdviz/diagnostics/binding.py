"""Does a model bind colour to the named object? A shapes-world diagnostic.

    cdviz zoo binding --model checkpoints/teacher [--scenes 60]

For every held-out scene and every object whose shape (or size and shape) is unique in it, ask
"What colour is the SHAPE?" and take the colour word with the highest answer log-likelihood
(``cdviz.evaluate.answer_loglik``). A model that reads colours off the image without selecting
the named object still answers with a colour in view, and its accuracy falls with the number of
objects; a model that binds stays right at every count.
"""

from __future__ import annotations

import random
from typing import Callable

from cdviz.evaluate import answer_loglik
from cdviz.probes.shapes import _questions
from cdviz.probes.shapes_scene import COLOURS, generate_scenes, render_scene


def colour_binding(adapter, *, scenes: int = 60, seed: int = 0, image_size: int = 48,
                   progress: Callable[[int], None] | None = None) -> dict:
    """Colour-question outcomes on the first ``scenes`` test-split scenes of ``seed``.

    Returns:
        {"n": questions, "right": right answers, "in_view": answers naming a colour some object
        in the scene has, "by_objects": {objects in the scene: [right, questions]}}.
    """
    colours = list(COLOURS)
    out = {"n": 0, "right": 0, "in_view": 0, "by_objects": {}}
    rng = random.Random(seed)  # colour questions do not draw from it; the other question types do
    for scene in generate_scenes(seed, image_size, splits=("test",), n=scenes):
        image = render_scene(scene)
        in_view = {o.colour for o in scene.objects}
        for kind, question, answer, _ in _questions(scene, rng):
            if kind != "colour":
                continue
            scores = answer_loglik(adapter, [image] * len(colours), [question] * len(colours), colours)
            chosen = colours[max(range(len(colours)), key=scores.__getitem__)]
            counts = out["by_objects"].setdefault(len(scene.objects), [0, 0])
            counts[0] += chosen == answer
            counts[1] += 1
            out["n"] += 1
            out["right"] += chosen == answer
            out["in_view"] += chosen in in_view
        if progress:
            progress(1)
    out["by_objects"] = dict(sorted(out["by_objects"].items()))
    return out
