"""Pretraining the demo models' vision tower: our stand-in for a pretrained SigLIP.

The paper's teacher and students share a pretrained, frozen vision tower. The bundled demo
models have none to download, and a tower learned from scratch inside a tiny LLM never became
useful in our CPU budget (the teacher stayed at chance, see checkpoints/README.md). So the tower
is first trained on its own to name what each patch shows: for every patch of a shapes-world
image, the colour, shape and size of the object under the patch centre (or "background"), with
one linear head per attribute on top of the tower's last hidden state.

    pretrain_vision_tower(vision_model, image_size=48, patch_size=8, steps=300) -> held-out patch accuracy per attribute
                                                                    (all patches, and object patches only)
"""

from __future__ import annotations

import random

import numpy as np
import torch
from torch import nn

from cdviz.probes.shapes_scene import COLOURS, SHAPES, SIZES, generate_scenes, render_scene

ATTRIBUTE_CLASSES = {"colour": tuple(COLOURS), "shape": SHAPES, "size": SIZES}


MIN_PIXELS = 3  # fewer object pixels than this in a patch count as background


def object_map(scene, image: np.ndarray) -> np.ndarray:
    """Per pixel: 0 for background, k + 1 where object k is drawn (objects never overlap)."""
    ids = np.zeros(image.shape[:2], dtype=np.int64)
    foreground = (image != np.asarray(scene.background)).any(-1)
    for k, obj in enumerate(scene.objects):
        bx, by, bw, bh = obj.box
        ids[by:by + bh, bx:bx + bw][foreground[by:by + bh, bx:bx + bw]] = k + 1
    return ids


def patch_labels(scene, image: np.ndarray, patch_size: int) -> dict[str, np.ndarray]:
    """Per-patch class ids [rows * cols] per attribute; 0 = background, k + 1 = class k.

    A patch is labelled with the object that covers most of its pixels, if that is at least
    MIN_PIXELS. Labelling by the patch centre instead left 98% of the small objects and a quarter
    of the large ones without any labelled patch at 48 px: the tower never learned to show them,
    and the LLM on top could not bind what it could not see.
    """
    rows = cols = scene.image_size // patch_size
    ids = object_map(scene, image)[:rows * patch_size, :cols * patch_size]
    per_patch = ids.reshape(rows, patch_size, cols, patch_size).transpose(0, 2, 1, 3).reshape(rows * cols, -1)
    counts = np.stack([(per_patch == k + 1).sum(1) for k in range(len(scene.objects))], 1) \
        if scene.objects else np.zeros((rows * cols, 0), dtype=np.int64)
    out = {name: np.zeros(rows * cols, dtype=np.int64) for name in ATTRIBUTE_CLASSES}
    for patch in range(rows * cols):
        if counts.shape[1] == 0 or counts[patch].max() < MIN_PIXELS:
            continue
        obj = scene.objects[int(counts[patch].argmax())]
        for name, classes in ATTRIBUTE_CLASSES.items():
            out[name][patch] = classes.index(getattr(obj, name)) + 1
    return out


def _batches(image_processor, seed: int, image_size: int, patch_size: int, batch: int):
    scenes = generate_scenes(seed, image_size, splits=("train",))
    while True:
        images, labels = [], {k: [] for k in ATTRIBUTE_CLASSES}
        for _ in range(batch):
            scene = next(scenes)
            img = render_scene(scene)
            images.append(img)
            for k, v in patch_labels(scene, np.asarray(img), patch_size).items():
                labels[k].append(v)
        pixels = image_processor(images=images, return_tensors="pt")["pixel_values"]
        yield pixels, {k: torch.tensor(np.stack(v)) for k, v in labels.items()}


def pretrain_vision_tower(vision_model: nn.Module, image_processor, *, image_size: int, patch_size: int,
                          steps: int = 300, batch: int = 64, lr: float = 3e-3, seed: int = 0,
                          log=None) -> dict[str, float]:
    """Train ``vision_model`` (a SigLIP vision tower) in place; returns held-out patch accuracy."""
    torch.manual_seed(seed)
    random.seed(seed)
    hidden = vision_model.config.hidden_size
    heads = nn.ModuleDict({k: nn.Linear(hidden, len(v) + 1) for k, v in ATTRIBUTE_CLASSES.items()})
    params = [*vision_model.parameters(), *heads.parameters()]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)
    vision_model.train()
    data = _batches(image_processor, seed, image_size, patch_size, batch)
    for step in range(steps):
        pixels, labels = next(data)
        # LLaVA reads the last encoder layer (hidden_states[-1]), so that is what gets trained.
        feats = vision_model(pixel_values=pixels, output_hidden_states=True).hidden_states[-1]  # [B, N, hidden]
        loss = sum(nn.functional.cross_entropy(heads[k](feats).flatten(0, 1), labels[k].flatten())
                   for k in ATTRIBUTE_CLASSES)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if log and (step + 1) % 50 == 0:
            log(f"vision pretraining step {step + 1}/{steps}: loss {loss.item():.4f}")
    vision_model.eval()
    pixels, labels = next(_batches(image_processor, seed + 1000, image_size, patch_size, 256))
    with torch.no_grad():
        feats = vision_model(pixel_values=pixels, output_hidden_states=True).hidden_states[-1]
    # Most patches are background, so accuracy on object patches alone is the figure that matters.
    objects = labels["colour"] > 0
    acc = {}
    for k in ATTRIBUTE_CLASSES:
        right = heads[k](feats).argmax(-1) == labels[k]
        acc[k] = float(right.float().mean())
        acc[f"{k}_on_objects"] = float(right[objects].float().mean())
    return acc
