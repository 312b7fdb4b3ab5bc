"""The shapes world as a probe set and as instruction data, every text drawn from a tiny vocabulary.

    python -m cdviz.probes.shapes --out probes/shapes --n 2000 [--seed 0] [--image-size 64] [--split test]

Each scene (cdviz/probes/shapes_scene.py) is rendered once and yields up to one two-choice item per
category. Caption items mirror SugarCrepe: option 0 is a true caption, option 1 a hard negative
made false by construction. Recognition items ask a question whose true option may be either one.
Every item keeps its scene graph and one structured claim per option in ``metadata``:

    metadata = {"scene_id": int, "scene": Scene.to_dict(), "claims": [claim of option k, ...],
                "named": [indices of the scene objects the true text refers to]}

so ``claim_holds(metadata["scene"], claims[k])`` is True exactly for ``k == item.correct``.
``item.boxes[i]`` is the box of scene object i (all objects, the named ones included).
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from cdviz.errors import OptionError
from cdviz.probes.probeset import ProbeSet, save_probeset
from cdviz.probes.shapes_scene import (
    ATTRIBUTES,
    COLOURS,
    DEFAULT_FRACTIONS,
    DESCRIBE_PROMPT,
    LETTERS,
    NUMBER_WORDS,
    POSITIONS,
    REL_ANSWER,
    RELATIONS,
    SHAPES,
    SIZES,
    SPLITS,
    VALUES,
    VOCABULARY,
    Scene,
    caption,
    choice_prompt,
    claim_holds,
    describe_scene,
    generate_scenes,
    noun_phrase,
    render_scene,
    words,
)
from cdviz.prompts import match_answer, match_texts
from cdviz.types import DEFAULT_QUESTION, Box, ProbeItem

__all__ = [  # the shapes world's public API, scene-level names included
    "CATEGORIES",
    "VOCABULARY",
    "Draft",
    "Scene",
    "caption",
    "claim_holds",
    "generate_scenes",
    "SAMPLE_KINDS",
    "instruction_samples",
    "sample_selected",
    "items_for_scene",
    "make_shapes",
    "render_scene",
    "words",
]


# --- item drafts, one builder per category --------------------------------------------------------


@dataclass
class Draft:
    subcategory: str
    options: tuple[str, ...]
    claims: list[dict[str, Any]]  # one per option
    named: list[int]
    correct: int = 0
    question: str = DEFAULT_QUESTION


def _shuffled(rng: random.Random, seq) -> list:
    out = list(seq)
    rng.shuffle(out)
    return out


def _mention(scene: Scene, i: int, rng: random.Random) -> dict[str, str]:
    """How a caption names object i: colour and shape, and a third of the time its size."""
    keys = ATTRIBUTES if rng.random() < 1 / 3 else ("colour", "shape")
    return scene.objects[i].describe(keys)


def _captions(scene: Scene, rng: random.Random, sub: str, i: int, pos: dict, neg: dict) -> Draft:
    """A caption pair about object i, half the time next to a mention of one other object."""
    pos_objects, neg_objects, named = [pos], [neg], [i]
    others = [j for j in range(len(scene.objects)) if j != i]
    if others and rng.random() < 0.5:
        j = rng.choice(others)
        other = _mention(scene, j, rng)
        at = rng.randrange(2)
        pos_objects.insert(at, other)
        neg_objects.insert(at, other)
        named.append(j)
    return _caption_draft(sub, {"objects": pos_objects}, {"objects": neg_objects}, named)


def _caption_draft(sub: str, pos: dict, neg: dict, named: list[int]) -> Draft:
    return Draft(sub, (caption(pos), caption(neg)), [pos, neg], sorted(named))


def _replace(scene: Scene, rng: random.Random, attrs: Sequence[str]) -> Draft | None:
    """Change one named attribute of one object to a value no object with the rest has."""
    for attr in _shuffled(rng, attrs):
        for i in _shuffled(rng, range(len(scene.objects))):
            desc = scene.objects[i].describe(ATTRIBUTES) if attr == "size" else _mention(scene, i, rng)
            free = [v for v in VALUES[attr] if v != desc[attr] and not scene.find({**desc, attr: v})]
            if free:
                return _captions(scene, rng, attr, i, desc, {**desc, attr: rng.choice(free)})
    return None


def replace_att(scene: Scene, rng: random.Random) -> Draft | None:
    return _replace(scene, rng, ("colour", "size"))


def replace_obj(scene: Scene, rng: random.Random) -> Draft | None:
    return _replace(scene, rng, ("shape",))


def swap_att(scene: Scene, rng: random.Random) -> Draft | None:
    """Exchange colours (or sizes) of two named objects; kept only if no object pair fits the swap."""
    n = len(scene.objects)
    for attr in _shuffled(rng, ("colour", "size")):
        keys = rng.choice(((attr, "shape"), ATTRIBUTES))
        for i, j in _shuffled(rng, [(i, j) for i in range(n) for j in range(i + 1, n)]):
            di, dj = scene.objects[i].describe(keys), scene.objects[j].describe(keys)
            if di[attr] == dj[attr]:
                continue
            si, sj = {**di, attr: dj[attr]}, {**dj, attr: di[attr]}
            if not scene.find(si) or not scene.find(sj):
                return _caption_draft(attr, {"objects": [di, dj]}, {"objects": [si, sj]}, [i, j])
    return None


def _related_pair(scene: Scene, rng: random.Random):
    n = len(scene.objects)
    for i, j in _shuffled(rng, [(i, j) for i in range(n) for j in range(n) if i != j]):
        di, dj = scene.unique(i), scene.unique(j)
        if di and dj:
            return i, j, di, dj, rng.choice(scene.relations(i, j))
    return None


def swap_obj(scene: Scene, rng: random.Random) -> Draft | None:
    """"X rel Y" against "Y rel X" for two uniquely named objects."""
    pair = _related_pair(scene, rng)
    if pair is None:
        return None
    i, j, di, dj, rel = pair
    pos = {"objects": [di, dj], "relations": [[0, rel, 1]]}
    return _caption_draft(rel, pos, {"objects": [dj, di], "relations": [[0, rel, 1]]}, [i, j])


def replace_rel(scene: Scene, rng: random.Random) -> Draft | None:
    """"X rel Y" against "X rel' Y" where rel' does not hold (the opposite, or across the axis)."""
    pair = _related_pair(scene, rng)
    if pair is None:
        return None
    i, j, di, dj, rel = pair
    false = [r for r in RELATIONS if r not in scene.relations(i, j)]
    pos = {"objects": [di, dj], "relations": [[0, rel, 1]]}
    neg = {"objects": [di, dj], "relations": [[0, rng.choice(false), 1]]}
    return _caption_draft(rel, pos, neg, [i, j])


def _absent_pairs(scene: Scene) -> list[dict[str, str]]:
    pairs = ({"colour": c, "shape": s} for c in COLOURS for s in SHAPES)
    return [d for d in pairs if not scene.find(d)]  # 24 pairs, at most 4 taken


def add_obj(scene: Scene, rng: random.Random) -> Draft | None:
    """A mention plus one more object: in the true option an object in view, in the false one a
    colour and shape pair that is not. Both name as many objects with as many words, so neither
    length nor word counts tell them apart (a scene of one object: that object against an absent one).
    """
    n = len(scene.objects)
    absent = rng.choice(_absent_pairs(scene))
    if n == 1:
        only = _mention(scene, 0, rng)
        fake = {**absent, "size": rng.choice(SIZES)} if "size" in only else absent
        return _caption_draft("object", {"objects": [only]}, {"objects": [fake]}, [0])
    i, j = rng.sample(range(n), 2)
    base, extra = _mention(scene, i, rng), _mention(scene, j, rng)
    fake = {**absent, "size": rng.choice(SIZES)} if "size" in extra else absent
    at = rng.randrange(2)
    pos, neg = [base], [base]
    pos.insert(at, extra)
    neg = neg[:at] + [fake] + neg[at:]
    return _caption_draft("object", {"objects": pos}, {"objects": neg}, sorted([i, j]))


def add_att(scene: Scene, rng: random.Random) -> Draft | None:
    """Two mentions, one given a colour (or size): in the true option an object's own, in the
    false one a value no object of that description has. Same words in the same number, so only
    the image tells which attribute belongs where."""
    n = len(scene.objects)
    for attr in _shuffled(rng, ("colour", "size")):
        keys = rng.choice((("shape",), tuple(a for a in ATTRIBUTES if a != attr)))
        for i, j in _shuffled(rng, [(i, j) for i in range(n) for j in range(n) if i != j]):
            bare_i, bare_j = scene.objects[i].describe(keys), scene.objects[j].describe(keys)
            free = [v for v in VALUES[attr] if not scene.find({**bare_i, attr: v})]
            if not free:
                continue
            true_j = scene.objects[j].describe((*keys, attr))
            false_i = {**bare_i, attr: rng.choice(free)}
            pos, neg = [bare_i, true_j], [false_i, bare_j]
            if rng.random() < 0.5:
                pos, neg = pos[::-1], neg[::-1]
            return _caption_draft(attr, {"objects": pos}, {"objects": neg}, sorted([i, j]))
    return None


def counting(scene: Scene, rng: random.Random) -> Draft | None:
    """"two red objects" against a neighbouring count. The pair of counts (k, k + 1) is drawn
    first and the true one is either with equal chance, so the number words alone say nothing;
    a scene needs descriptions with both counts."""
    by_count: dict[int, list[dict[str, str]]] = {}
    for attr in ("colour", "shape", "size"):
        for value in VALUES[attr]:
            k = len(scene.find({attr: value}))
            if 1 <= k < len(NUMBER_WORDS):
                by_count.setdefault(k, []).append({attr: value})
    lows = sorted(k for k in by_count if k + 1 in by_count)
    if not lows:
        return None
    low = rng.choice(lows)
    true = low + rng.randrange(2)
    desc = rng.choice(by_count[true])
    wrong = 2 * low + 1 - true
    return _caption_draft(next(iter(desc)), {"counts": [[desc, true]]}, {"counts": [[desc, wrong]]}, scene.find(desc))


def existence(scene: Scene, rng: random.Random) -> Draft | None:
    """"Is there a green triangle in the image?"; absent ones differ from a present object in one attribute."""
    o = rng.choice(scene.objects)
    desc = o.describe(("colour", "shape"))
    present = rng.random() < 0.5
    if not present:
        lures = [{**desc, a: v} for a in ("colour", "shape") for v in VALUES[a] if not scene.find({**desc, a: v})]
        desc = rng.choice(lures)  # never empty: 4 objects cannot use all 6 colours of one shape
    claims = [{"objects": [desc]}, {"counts": [[desc, 0]]}]
    question = f"Is there {noun_phrase(desc)} in the image?"
    named = scene.find(desc)
    return Draft("present" if present else "absent", ("yes", "no"), claims, named, int(not present), question)


def colour_question(scene: Scene, rng: random.Random) -> Draft | None:
    """"What colour is the square?" for a shape (or size and shape) that only one object has."""
    for i in _shuffled(rng, range(len(scene.objects))):
        ref = scene.unique(i, bases=(("shape",), ("size", "shape")))
        if ref is None:
            continue
        true = scene.objects[i].colour
        others = sorted({o.colour for o in scene.objects} - {true})  # a colour in view is the harder lure
        wrong = rng.choice(others or [c for c in COLOURS if c != true])
        options = _shuffled(rng, [true, wrong])
        claims = [{"objects": [{**ref, "colour": c}], "counts": [[ref, 1]]} for c in options]
        question = f"What colour is {noun_phrase(ref, article='the')}?"
        return Draft("+".join(ref), tuple(options), claims, [i], options.index(true), question)
    return None


Builder = Callable[[Scene, random.Random], Draft | None]
CATEGORIES: dict[str, tuple[str, Builder]] = {  # name -> (skill, builder)
    "replace_att": ("perception", replace_att),
    "replace_obj": ("perception", replace_obj),
    "replace_rel": ("perception", replace_rel),
    "swap_att": ("perception", swap_att),
    "swap_obj": ("perception", swap_obj),
    "add_att": ("perception", add_att),
    "add_obj": ("perception", add_obj),
    "counting": ("perception", counting),
    "existence": ("recognition", existence),
    "colour": ("recognition", colour_question),
}


def _check_categories(categories: Sequence[str] | None) -> list[str]:
    if categories is None:
        return list(CATEGORIES)
    unknown = [c for c in categories if c not in CATEGORIES]
    if unknown or not categories:
        raise OptionError(f"unknown or no categories {unknown}; choose from {', '.join(CATEGORIES)}")
    return list(dict.fromkeys(categories))


def image_path(scene: Scene) -> str:
    return f"images/{scene.index:06d}.png"


def items_for_scene(
    scene: Scene, rng: random.Random, categories: Sequence[str] | None = None, image: str | None = None
) -> list[ProbeItem]:
    """Up to one item per category (a category the scene cannot support gives none)."""
    image = image or image_path(scene)
    boxes = tuple(Box(o.phrase, *map(float, o.box)) for o in scene.objects)
    items = []
    for name in _check_categories(categories):
        skill, build = CATEGORIES[name]
        draft = build(scene, rng)
        if draft is None:
            continue
        items.append(
            ProbeItem(
                uid=f"shapes-{scene.seed}-{scene.index:06d}-{name}-0",
                source="shapes",
                category=name,
                subcategory=draft.subcategory,
                skill=skill,
                images=(image,),
                options=draft.options,
                correct=draft.correct,
                question=draft.question,
                boxes=boxes,
                split=scene.split,
                metadata={
                    "scene_id": scene.index,
                    "scene": scene.to_dict(),
                    "claims": draft.claims,
                    "named": draft.named,
                },
            )
        )
    return items


# instruction_samples' "kind"s, "qa:TYPE" for one type of short question, and "presence"
# (presence_samples: made only when asked for, so the default mix is what it always was)
SAMPLE_KINDS = ("caption", "choice", "match", "qa", "qa:colour", "qa:where", "qa:relation", "qa:exists", "qa:count",
                "presence")


def sample_selected(sample: dict, kinds) -> bool:
    """Whether ``sample`` is of one of ``kinds`` (SAMPLE_KINDS; None: every sample)."""
    return kinds is None or sample["kind"] in kinds or f"qa:{sample.get('question')}" in kinds


def instruction_samples(scene: Scene, rng: random.Random, probe_captions: bool = False) -> list[dict[str, str]]:
    """Training texts for one scene: its description, every item in both option orders and as
    yes/no match queries (one per option, cdviz.prompts.match_texts), short QA.

    ``probe_captions`` also teaches each caption item's true option as an answer to the caption
    prompt, so the partial captions the probes use ("a green circle to the left of a red square.")
    are in the model's caption distribution; generative scoring (``eval --protocol likelihood``)
    then compares options in a form the model has seen.
    """
    samples = [{"kind": "caption", "prompt": DESCRIBE_PROMPT, "answer": describe_scene(scene),
                "objects": list(range(len(scene.objects)))}]
    for _, build in CATEGORIES.values():
        draft = build(scene, rng)
        if draft is None:
            continue
        if probe_captions and draft.question == DEFAULT_QUESTION:
            samples.append({"kind": "caption", "prompt": DESCRIBE_PROMPT, "answer": draft.options[draft.correct],
                            "objects": list(draft.named)})
        for order in ((0, 1), (1, 0)):
            options = [draft.options[k] for k in order]
            answer = LETTERS[order.index(draft.correct)]
            samples.append({"kind": "choice", "prompt": choice_prompt(draft.question, options), "answer": answer,
                            "objects": list(draft.named)})
        for index, text in match_texts(draft.question, draft.options):
            answer = match_answer(draft.question, draft.options, draft.correct, index)
            samples.append({"kind": "match", "prompt": text, "objects": list(draft.named), "answer": answer,
                            "absent": answer == "no"})
    return samples + [{"kind": "qa", "question": t, "prompt": q, "answer": a, "objects": named,
                       "absent": t == "exists" and a == "no"}
                      for t, q, a, named in _questions(scene, rng)]


def presence_samples(scene: Scene, rng: random.Random) -> list[dict]:
    """Two existence questions for the presence loss (checkpoints/DESIGNS.md, design 14): a colour
    and shape pair in view ("yes", its object named) and one that is not ("no", ``absent``), its
    colour and its shape both in view on other objects when the scene allows, so that the answer
    needs the pair bound to one object rather than either word seen."""
    present = rng.choice(scene.objects).describe(("colour", "shape"))
    colours, shapes = {o.colour for o in scene.objects}, {o.shape for o in scene.objects}
    absent = _absent_pairs(scene)
    hard = ([d for d in absent if d["colour"] in colours and d["shape"] in shapes]
            or [d for d in absent if d["colour"] in colours or d["shape"] in shapes] or absent)
    missing = rng.choice(hard)
    return [{"kind": "presence", "question": "exists", "prompt": f"Is there {noun_phrase(d)} in the image?",
             "answer": a, "objects": scene.find(d), "absent": a == "no"}
            for d, a in ((present, "yes"), (missing, "no"))]


def _questions(scene: Scene, rng: random.Random) -> list[tuple[str, str, str, list[int]]]:
    """(type, question, answer, indices of the objects the answer is about) for one scene."""
    n = len(scene.objects)
    qa = []
    for i, o in enumerate(scene.objects):
        ref = scene.unique(i, bases=(("shape",), ("size", "shape")))
        if ref:
            qa.append(("colour", f"What colour is {noun_phrase(ref, article='the')}?", o.colour, [i]))
        ref = scene.unique(i)
        if ref:
            qa.append(("where", f"Where is {noun_phrase(ref, article='the')}?", POSITIONS[o.row, o.col], [i]))
    for i in range(n):
        for j in range(n):
            rels = scene.relations(i, j) if i != j else []
            di, dj = scene.unique(i), scene.unique(j)
            if len(rels) == 1 and di and dj:
                q = f"Where is {noun_phrase(di, article='the')} relative to {noun_phrase(dj, article='the')}?"
                qa.append(("relation", q, REL_ANSWER[rels[0]], [i, j]))
    present = rng.choice(scene.objects).describe(("colour", "shape"))
    absent = rng.choice(_absent_pairs(scene))
    qa += [("exists", f"Is there {noun_phrase(d)} in the image?", a, scene.find(d))
           for d, a in ((present, "yes"), (absent, "no"))]
    for attr in ("colour", "shape", "size"):
        desc = {attr: rng.choice(VALUES[attr])}  # absent values too: "zero" is an answer to learn
        found = scene.find(desc)
        qa.append(("count", f"How many {noun_phrase(desc, article='', plural=True)} are there?",
                   NUMBER_WORDS[len(found)], found))
    return qa


# --- the probe set on disk -----------------------------------------------------------------------


def make_shapes(
    out_dir: str | Path,
    n: int,
    seed: int = 0,
    image_size: int = 64,
    splits: Sequence[str] = SPLITS,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    categories: Sequence[str] | None = None,
    progress: Callable[[int], None] | None = None,
) -> ProbeSet:
    """Write exactly ``n`` items (``out_dir/items.jsonl``) and their images (``out_dir/images/``).

    Categories get equal quotas (the first ``n % C`` one more); a scene contributes one item to
    every category still under quota that it supports, so only the scenes of ``splits`` are drawn
    and a scene never straddles two splits. ``progress(k)`` is called with each scene's new item
    count (tqdm's ``update``).
    """
    cats = _check_categories(categories)
    if n < 1:
        raise OptionError(f"n={n}: ask for at least one item")
    unknown = set(splits) - set(SPLITS)
    weight = sum(f for name, f in zip(SPLITS, fractions) if name in splits)
    if unknown or weight <= 0:
        raise OptionError(
            f"splits {tuple(splits)} with fractions {tuple(fractions)} select no scene; use some of {SPLITS}"
        )
    quota = {c: n // len(cats) + (k < n % len(cats)) for k, c in enumerate(cats)}
    made = dict.fromkeys(cats, 0)
    root = Path(out_dir)
    (root / "images").mkdir(parents=True, exist_ok=True)
    items: list[ProbeItem] = []
    barren = 0  # consecutive scenes that gave nothing: guards against a quota no scene can fill
    for scene in generate_scenes(seed, image_size, fractions=fractions, splits=splits):
        wanted = [c for c in cats if made[c] < quota[c]]
        if not wanted:
            break
        new = items_for_scene(scene, random.Random(f"shapes-items:{seed}:{scene.index}"), wanted)
        if not new:
            barren += 1
            if barren > 10_000:
                raise RuntimeError(f"no scene supports categories {wanted} any more; ask for fewer items")
            continue
        barren = 0
        render_scene(scene).save(root / image_path(scene), format="PNG")
        for item in new:
            made[item.category] += 1
        items.extend(new)
        if progress is not None:
            progress(len(new))
    params = {
        "generator": "shapes",
        "n": n,
        "seed": seed,
        "image_size": image_size,
        "splits": list(splits),
        "fractions": list(fractions),
        "categories": cats,
    }
    save_probeset(items, root, name="shapes", params=params)
    meta = json.loads((root / "probeset.json").read_text(encoding="utf-8"))
    return ProbeSet(root=root, items=items, meta=meta)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cdviz.probes.shapes", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="directory for items.jsonl, probeset.json and images/")
    parser.add_argument("--n", type=int, default=2000, help="number of items")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=64, help="side in pixels")
    parser.add_argument("--split", choices=[*SPLITS, "all"], default="all", help="make only this split's scenes")
    parser.add_argument("--fractions", type=float, nargs=3, default=list(DEFAULT_FRACTIONS), metavar=SPLITS)
    parser.add_argument("--categories", nargs="+", choices=list(CATEGORIES), default=None)
    args = parser.parse_args(argv)
    splits = SPLITS if args.split == "all" else (args.split,)
    ps = make_shapes(args.out, args.n, args.seed, args.image_size, splits, args.fractions, args.categories)
    print(f"{len(ps)} items in {ps.root}: " + ", ".join(f"{k} {v}" for k, v in sorted(ps.counts()["category"].items())))


if __name__ == "__main__":
    main()
