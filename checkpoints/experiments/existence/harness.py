"""Can the demo teacher's decoder learn to read the image through yes/no questions? (checkpoints/DESIGNS.md, design 7)

A standalone loop, outside cdviz's trainer, on the zoo's initial teacher (vision tower pretrained
and frozen, decoder and connector from scratch): "Is there a COLOUR SHAPE in the image?" with
yes and no equally often, the loss on the answer token only, accuracy on 500 test-split scenes
every 100 steps. Run from the repository root after `cdviz zoo build` has made its init-teacher:

    python checkpoints/experiments/existence/harness.py --init checkpoints/.build/init-teacher --steps 600 \\
        [--neg hard|easy|text] [--route W] [--ground W] [--center S] [--lr LR]

--neg hard: the absent pair's colour and shape are both in view (needs binding); easy: its colour
is not in view; text: the answer is "yes" for red, green and blue whatever the image (no image
needed: the loop's own check that the decoder learns at all). --route supervises the answer
row's attention onto the question's colour and shape words (--route-layers), --ground onto the
named object's patches (--ground-layers, "yes" samples; as a share of the image attention, or with
--ground-row of the whole row). --sink (design 14) supervises presence instead: the whole row's
share on the named object for "yes" and its share off the image for "no", so where the row looks
says whether the object is there. --center subtracts each image's mean projected patch and scales
the rest by S.
"""

from __future__ import annotations

import argparse
import random
import time

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoProcessor, LlavaForConditionalGeneration

from cdviz.probes.shapes import CATEGORIES
from cdviz.probes.shapes_scene import COLOURS, SHAPES, generate_scenes, render_scene
from cdviz.prompts import match_answer, match_texts
from cdviz.zoo.vision import object_map

PATCH = 8
GRID = 6  # 48 px scenes, 8 px patches


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--init", default="checkpoints/.build/init-teacher")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--n", type=int, default=6000, help="training samples (batches of 32 drawn from them)")
    ap.add_argument("--neg", choices=("hard", "easy", "text"), default="hard")
    ap.add_argument("--task", choices=("exists", "colour", "match"), default="exists",
                    help="colour: \"What colour is the SHAPE?\" about an object whose shape is unique in its scene; "
                         "match: one option of a probe item of any category as a yes/no match query")
    ap.add_argument("--save", default=None, help="write the trained model and processor here")
    ap.add_argument("--route", type=float, default=0.0)
    ap.add_argument("--route-layers", default="0,1")
    ap.add_argument("--ground", type=float, default=0.0)
    ap.add_argument("--ground-layers", default="2,3")
    ap.add_argument("--ground-row", action="store_true",
                    help="the grounding share over the whole attention row, not renormalised over the image")
    ap.add_argument("--sink", type=float, default=0.0,
                    help="presence supervision (design 14): in --ground-layers the answer row's whole-row share on "
                         "the named object (\"yes\") or off the image (\"no\": nothing there to look at)")
    ap.add_argument("--center", type=float, default=0.0)
    ap.add_argument("--tag", default="run")
    return ap.parse_args()


def question(scene, rng: random.Random, neg: str, task: str = "exists") -> tuple[str, bool | str, np.ndarray] | None:
    """(question, answer is yes (exists) or the colour (colour), [GRID * GRID] patches of the named
    object) for one scene; None: the scene has no object to ask about."""
    image = np.asarray(render_scene(scene))
    per_patch = object_map(scene, image).reshape(GRID, PATCH, GRID, PATCH).transpose(0, 2, 1, 3)
    per_patch = per_patch.reshape(GRID * GRID, -1)  # [36, 64] object id per pixel
    if task == "colour":
        unique = [k for k, o in enumerate(scene.objects) if len(scene.find({"shape": o.shape})) == 1]
        if not unique:
            return None
        k = rng.choice(unique)
        return (f"What colour is the {scene.objects[k].shape}?", scene.objects[k].colour,
                (per_patch == k + 1).sum(1) >= 3)
    if task == "match":
        drafts = [build(scene, rng) for _, build in CATEGORIES.values()]
        drafts = [d for d in drafts if d is not None]
        if not drafts:
            return None
        d = rng.choice(drafts)
        index, text = rng.choice(match_texts(d.question, d.options))
        yes = match_answer(d.question, d.options, d.correct, index) == "yes"
        region = np.isin(per_patch, [k + 1 for k in d.named]).sum(1) >= 3 if yes else np.zeros(GRID * GRID, bool)
        return text, yes, region
    yes = rng.random() < 0.5
    if yes:
        k = rng.randrange(len(scene.objects))
        colour, shape = scene.objects[k].colour, scene.objects[k].shape
        region = (per_patch == k + 1).sum(1) >= 3
    else:
        colours = {o.colour for o in scene.objects}
        shapes = {o.shape for o in scene.objects}
        absent = [(c, s) for c in COLOURS for s in SHAPES if not scene.find({"colour": c, "shape": s})]
        if neg == "easy":
            pool = [(c, s) for c, s in absent if c not in colours]
        else:  # both words in view on different objects when the scene allows it
            pool = [(c, s) for c, s in absent if c in colours and s in shapes] or \
                   [(c, s) for c, s in absent if c in colours or s in shapes]
        colour, shape = rng.choice(pool)
        region = np.zeros(GRID * GRID, dtype=bool)
    if neg == "text":
        yes, region = colour in ("red", "green", "blue"), np.zeros(GRID * GRID, dtype=bool)
    return f"Is there a {colour} {shape} in the image?", yes, region


def batches(processor, split: str, n: int, seed: int, neg: str, size: int, task: str = "exists"
            ) -> list[tuple[dict, torch.Tensor, torch.Tensor]]:
    """Encoded batches of one split: (inputs, [B] answer token id, [B, 36] region)."""
    rng = random.Random(seed)
    samples = []
    for scene in generate_scenes(0, 48, splits=(split,)):
        if len(samples) == n:
            break
        asked = question(scene, rng, neg, task)
        if asked is None:
            continue
        text, answer, region = asked
        prompt = processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}], add_generation_prompt=True)
        answer = answer if isinstance(answer, str) else ("yes" if answer else "no")
        samples.append((render_scene(scene), prompt, processor.tokenizer.convert_tokens_to_ids(answer), region))
    out = []
    for i in range(0, len(samples), size):
        chunk = samples[i:i + size]  # exists / colour prompts have one length; match ones are padded (left)
        inputs = processor(images=[s[0] for s in chunk], text=[s[1] for s in chunk], return_tensors="pt",
                           padding=True, padding_side="left")
        out.append((inputs, torch.tensor([s[2] for s in chunk]), torch.tensor(np.stack([s[3] for s in chunk]))))
    return out


def main() -> None:
    a = parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    processor = AutoProcessor.from_pretrained(a.init)
    model = LlavaForConditionalGeneration.from_pretrained(a.init, attn_implementation="eager")
    model.model.vision_tower.requires_grad_(False)
    if a.center:
        model.model.multi_modal_projector.register_forward_hook(
            lambda module, args, out: (out - out.mean(dim=-2, keepdim=True)) * a.center)  # [B, 36, D]
    tok = processor.tokenizer
    content_ids = torch.tensor(tok.convert_tokens_to_ids([*COLOURS, *SHAPES]))
    train = batches(processor, "train", a.n, 1, a.neg, 32, a.task)
    test = batches(processor, "test", 500, 2, a.neg, 100, a.task)
    answer_ids = torch.tensor(tok.convert_tokens_to_ids(list(COLOURS) if a.task == "colour" else ["yes", "no"]))
    route_layers = [int(x) for x in a.route_layers.split(",")]
    ground_layers = [int(x) for x in a.ground_layers.split(",")]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=a.lr, weight_decay=0.0)

    def accuracy() -> float:
        model.eval()
        right = n = 0
        with torch.no_grad():
            for inputs, answer, _ in test:
                logits = model(**inputs).logits[:, -1, answer_ids]  # [B, answers] at the answer position
                right += (answer_ids[logits.argmax(-1)] == answer).sum().item()
                n += len(answer)
        model.train()
        return right / n

    rng, start = random.Random(0), time.time()
    for step in range(1, a.steps + 1):
        inputs, answer, region = train[rng.randrange(len(train))]
        image = inputs["input_ids"] == model.config.image_token_index  # [B, T], 36 per row (left padding moves them)
        out = model(**inputs, output_attentions=bool(a.route or a.ground or a.sink))
        loss = F.cross_entropy(out.logits[:, -1], answer)
        parts = {"ce": loss.item()}
        if a.route:
            words = torch.isin(inputs["input_ids"], content_ids).float()  # [B, T]
            rows = torch.stack([out.attentions[i][:, :, -1].mean(1) for i in route_layers])  # [L, B, T] head mean
            route = -(rows * words).sum(-1).clamp_min(1e-6).log().mean()
            loss, parts["route"] = loss + a.route * route, route.item()
        if a.ground and region.any():
            rows = torch.stack([out.attentions[i][:, :, -1].mean(1)[image].view(len(answer), -1)
                                for i in ground_layers])  # [L, B, 36]
            share = (rows * region.float()).sum(-1)  # [L, B]
            if not a.ground_row:
                share = share / rows.sum(-1).clamp_min(1e-6)
            ground = -share[:, region.any(1)].clamp_min(1e-6).log().mean()
            loss, parts["ground"] = loss + a.ground * ground, ground.item()
        if a.sink:
            rows = torch.stack([out.attentions[i][:, :, -1].mean(1) for i in ground_layers])  # [L, B, T] head mean
            on_image = rows[:, image].view(len(ground_layers), len(answer), -1)  # [L, B, 36]
            present = region.any(1)  # [B] the named object is in the image
            share = torch.where(present, (on_image * region.float()).sum(-1), 1 - on_image.sum(-1))  # [L, B]
            sink = -share.clamp_min(1e-6).log().mean()
            loss, parts["sink"] = loss + a.sink * sink, sink.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0:
            shown = {k: round(v, 3) for k, v in parts.items()}
            print(a.tag, step, shown, "test accuracy", round(accuracy(), 3), f"{time.time() - start:.0f}s", flush=True)
    if a.save:
        model.save_pretrained(a.save)
        processor.save_pretrained(a.save)


if __name__ == "__main__":
    main()
