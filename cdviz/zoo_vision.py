"""Pretraining the demo models' vision tower: our stand-in for a pretrained SigLIP.

The paper's teacher and students share a pretrained, frozen vision tower. The bundled demo
models have none to download, and a tower learned from scratch inside a tiny LLM never became
useful in our CPU budget (the teacher stayed at chance, see checkpoints/README.md). So the tower
is first trained on its own to name what each patch shows: for every patch of a shapes-world
image, the colour, shape and size of the object under the patch centre (or "background"), with
one linear head per attribute on top of the tower's last hidden state.

    pretrain_vision_tower(vision_model, image_size=48, patch_size=8, steps=300) -> per-attribute accuracy
"""

from __future__ import annotations

import random

import numpy as np
import torch
from torch import nn

from cdviz.probes.shapes_scene import COLOURS, SHAPES, SIZES, generate_scenes, render_scene

ATTRIBUTE_CLASSES = {"colour": tuple(COLOURS), "shape": SHAPES, "size": SIZES}


def patch_labels(scene, image: np.ndarray, patch_size: int) -> dict[str, np.ndarray]:
    """Per-patch class ids [rows * cols] per attribute; 0 = background, k + 1 = class k.

    A patch is labelled with the object whose box contains the patch centre and whose pixel
    there differs from the background (triangles and crosses do not fill their boxes).
    """
    rows = cols = scene.image_size // patch_size
    out = {name: np.zeros(rows * cols, dtype=np.int64) for name in ATTRIBUTE_CLASSES}
    for r in range(rows):
        for c in range(cols):
            y, x = r * patch_size + patch_size // 2, c * patch_size + patch_size // 2
            if (image[y, x] == scene.background).all():
                continue
            for obj in scene.objects:
                bx, by, bw, bh = obj.box
                if bx <= x < bx + bw and by <= y < by + bh:
                    for name, classes in ATTRIBUTE_CLASSES.items():
                        out[name][r * cols + c] = classes.index(getattr(obj, name)) + 1
                    break
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
    return {k: float((heads[k](feats).argmax(-1) == labels[k]).float().mean()) for k in ATTRIBUTE_CLASSES}
