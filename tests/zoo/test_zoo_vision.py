"""Patch labels for the demo vision tower's pretraining: every drawn object must be visible in them."""

from __future__ import annotations

import numpy as np
import pytest

from cdviz.probes.shapes_scene import generate_scenes, render_scene
from cdviz.zoo.vision import ATTRIBUTE_CLASSES, MIN_PIXELS, object_map, patch_labels


@pytest.mark.parametrize("image_size", [48, 64])
def test_every_object_labels_at_least_one_patch(image_size):
    for scene in generate_scenes(3, image_size, splits=("train",), n=200):
        labels = patch_labels(scene, np.asarray(render_scene(scene)), patch_size=8)
        seen = set(zip(*(labels[k].tolist() for k in ATTRIBUTE_CLASSES)))
        for obj in scene.objects:
            ids = tuple(ATTRIBUTE_CLASSES[k].index(getattr(obj, k)) + 1 for k in ATTRIBUTE_CLASSES)
            assert ids in seen, f"scene {scene.index}: {obj.phrase} has no labelled patch"


def test_patch_takes_the_object_covering_most_of_it():
    scene = next(iter(generate_scenes(0, 48, splits=("train",), n=1)))
    image = np.asarray(render_scene(scene))
    ids = object_map(scene, image)
    labels = patch_labels(scene, image, patch_size=8)
    for patch in range(36):
        r, c = divmod(patch, 6)
        block = ids[r * 8:(r + 1) * 8, c * 8:(c + 1) * 8]
        counts = np.bincount(block.ravel(), minlength=len(scene.objects) + 1)[1:]
        if counts.size == 0 or counts.max() < MIN_PIXELS:
            assert labels["colour"][patch] == 0
        else:
            obj = scene.objects[int(counts.argmax())]
            assert labels["shape"][patch] == ATTRIBUTE_CLASSES["shape"].index(obj.shape) + 1
            assert labels["colour"][patch] == ATTRIBUTE_CLASSES["colour"].index(obj.colour) + 1


def test_background_pixels_belong_to_no_object():
    for scene in generate_scenes(1, 48, splits=("train",), n=20):
        image = np.asarray(render_scene(scene))
        ids = object_map(scene, image)
        assert ((ids == 0) == (image == np.asarray(scene.background)).all(-1)).all()
        assert set(np.unique(ids)) <= set(range(len(scene.objects) + 1))
