"""Training data: conversations with an image, encoded for a student (and its teacher).

    source  ShapesInstructions (the shapes world's instruction texts, rendered on demand)
            JsonlConversations (LLaVA format, one record per line:
              {"image": "rel/path.jpg", "conversations": [{"from": "human", "value": "<image>\\n..."},
                                                        {"from": "gpt", "value": "..."}, ...]})
              (optional "regions": [{"x", "y", "w", "h"}, ...] pixel boxes of what the answers are
              about, for the grounding loss; optional "route_words": ["red", "circle", ...], the
              words of the question that name it, for the route loss; optional "absent": true when the
              answer says the named thing is not in the image, for the presence loss)
      -> Stream: example order for micro-batch m on this rank (a fresh permutation per epoch,
         a pure function of (seed, epoch), so resuming at step k needs no saved iterator)
      -> Collator: cdviz.conversation.encode (processor + chat template, right padding, labels only
         on answer tokens)
      -> TrainBatch(student: Encoded, teacher: Encoded | None)
"""

from __future__ import annotations

import functools
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence

import torch
from PIL import Image

from cdviz.conversation import DataError, Encoded, Example, encode


class Source(Protocol):
    def __len__(self) -> int: ...
    def __getitem__(self, i: int) -> Example: ...


def _turn(role: str, text: str, image: bool = False) -> dict[str, Any]:
    content = ([{"type": "image"}] if image else []) + [{"type": "text", "text": text}]
    return {"role": role, "content": content}


class ShapesInstructions:
    """Single-turn instruction examples from the first ``n_scenes`` training scenes of the shapes world."""

    def __init__(self, n_scenes: int = 1000, seed: int = 0, image_size: int = 64, split: str = "train",
                 probe_captions: bool = False, kinds: Sequence[str] | None = None):
        from cdviz.probes.shapes import sample_selected

        self.scenes = list(_scenes(n_scenes, seed, image_size, split))
        texts = _scene_texts(n_scenes, seed, image_size, split, probe_captions)
        presence = (_scene_presence(n_scenes, seed, image_size, split) if kinds is not None and "presence" in kinds
                    else ((),) * len(self.scenes))
        self.samples: list[tuple[int, dict[str, str]]] = []
        for k, (mine, more) in enumerate(zip(texts, presence)):
            self.samples.extend((k, s) for s in mine if sample_selected(s, kinds))
            self.samples.extend((k, s) for s in more)  # its own stream: the others stay as they were
        if not self.samples:
            raise DataError(f"no shapes-world training samples from {n_scenes} scenes; ask for more scenes")

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> Example:
        from cdviz.probes.shapes import render_scene

        k, s = self.samples[i]
        scene = self.scenes[k]
        messages = [_turn("user", s["prompt"], image=True), _turn("assistant", s["answer"])]
        regions = [dict(zip("xywh", map(float, scene.objects[j].box))) for j in s.get("objects", [])]
        return Example(f"shapes-{scene.seed}-{scene.index}-{i}", messages, render_scene(scene), regions,
                       naming_words(s), absent=bool(s.get("absent")))


@functools.lru_cache(maxsize=4)
def _scenes(n_scenes: int, seed: int, image_size: int, split: str) -> tuple:
    from cdviz.probes.shapes import generate_scenes

    return tuple(generate_scenes(seed, image_size, splits=(split,), n=n_scenes))


# Each stage of a build asks for the same world, and generating its texts takes about 17 s for
# 6000 scenes, so a process generates them once. Every sample comes from an RNG seeded by its scene
# alone, so the caches change nothing the samples hold or their order.
@functools.lru_cache(maxsize=4)
def _scene_texts(n_scenes: int, seed: int, image_size: int, split: str, probe_captions: bool) -> tuple:
    """Per scene, its instruction samples (cdviz.probes.shapes.instruction_samples)."""
    from cdviz.probes.shapes import instruction_samples

    return tuple(tuple(instruction_samples(scene, random.Random(f"cdviz-train:{seed}:{scene.index}"), probe_captions))
                 for scene in _scenes(n_scenes, seed, image_size, split))


@functools.lru_cache(maxsize=4)
def _scene_presence(n_scenes: int, seed: int, image_size: int, split: str) -> tuple:
    """Per scene, its two existence questions for the presence loss."""
    from cdviz.probes.shapes import presence_samples

    return tuple(tuple(presence_samples(scene, random.Random(f"cdviz-presence:{seed}:{scene.index}")))
                 for scene in _scenes(n_scenes, seed, image_size, split))


def naming_words(sample: dict[str, str]) -> list[str] | None:
    """The words of a short question or match query that name objects (attribute values and plural
    shapes); None for descriptions and two-choice items, whose prompts name every option's objects."""
    from cdviz.probes.shapes_scene import words

    if sample["kind"] not in ("qa", "match", "presence"):
        return None
    names = _object_words()
    found = [w for w in words(sample["prompt"]) if w in names]
    return found or None


@functools.cache
def _object_words() -> frozenset[str]:
    """Every word the shapes world names an object with: attribute values and plural shapes."""
    from cdviz.probes.shapes_scene import PLURALS, VALUES

    return frozenset({v for values in VALUES.values() for v in values} | set(PLURALS.values()))


ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


class JsonlConversations:
    """LLaVA-format conversations, one JSON record per line; images relative to ``image_root``
    (default: the file's folder). Lines are indexed by byte offset and parsed on demand."""

    def __init__(self, path: str | Path, image_root: str | Path | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(f"{self.path}: no such file; pass a JSONL of conversations or 'shapes'")
        self.image_root = Path(image_root) if image_root else self.path.parent
        self.offsets: list[int] = []
        with open(self.path, "rb") as f:
            pos = 0
            for line in f:
                if line.strip():
                    self.offsets.append(pos)
                pos += len(line)
        if not self.offsets:
            raise DataError(f"{self.path}: no records")

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, i: int) -> Example:
        with open(self.path, "rb") as f:
            f.seek(self.offsets[i])
            line = f.readline()
        where = f"{self.path} record {i + 1}"
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{where}: malformed JSON ({e.msg})") from e
        return parse_record(rec, where, self.image_root)


def parse_record(rec: dict, where: str, image_root: Path) -> Example:
    """A LLaVA-format record -> Example; the image goes where "<image>" stands in the first human turn."""
    convs = rec.get("conversations")
    if not isinstance(convs, list) or not convs:
        raise DataError(f"{where}: no 'conversations' list")
    image = None
    if rec.get("image") is not None:
        if not isinstance(rec["image"], str):
            raise DataError(f"{where}: 'image' must be one path (multi-image records are not supported)")
        path = image_root / rec["image"]
        try:
            with Image.open(path) as img:
                image = img.convert("RGB")
        except (FileNotFoundError, OSError) as e:
            raise DataError(f"{where}: image {path} cannot be read ({e}); fix the path or pass image_root") from e
    messages, placed = [], image is None
    for k, turn in enumerate(convs):
        role = ROLES.get(str(turn.get("from", "")).lower())
        if role is None:
            raise DataError(f"{where}: turn {k} has role {turn.get('from')!r}; use one of {sorted(ROLES)}")
        text = str(turn.get("value", ""))
        if "<image>" in text:
            if image is None or placed:
                raise DataError(f"{where}: '<image>' in turn {k} but {'no' if image is None else 'only one'} image")
            before, after = (part.strip() for part in text.split("<image>", 1))
            content = ([{"type": "text", "text": before}] if before else []) + [{"type": "image"}]
            content += [{"type": "text", "text": after}] if after else []
            messages.append({"role": role, "content": content})
            placed = True
        else:
            messages.append(_turn(role, text))
    if not placed:  # an image without a placeholder goes first in the first user turn
        first = next(m for m in messages if m["role"] == "user")
        first["content"].insert(0, {"type": "image"})
    if not any(m["role"] == "assistant" for m in messages):
        raise DataError(f"{where}: no assistant turn, nothing to learn")
    route = rec.get("route_words")
    if route is not None and (not isinstance(route, list) or not all(isinstance(w, str) and w.strip() for w in route)):
        raise DataError(f"{where}: 'route_words' must be a list of words from the prompt, e.g. [\"red\", \"circle\"]")
    absent = rec.get("absent", False)
    if not isinstance(absent, bool):
        raise DataError(f"{where}: 'absent' must be true or false (true: the answer says the named thing is not "
                        f"in the image), not {absent!r}")
    return Example(str(rec.get("id", where)), messages, image, _parse_regions(rec.get("regions"), where, image),
                   route or None, absent=absent)


def _parse_regions(raw: Any, where: str, image: Image.Image | None) -> list[dict[str, float]] | None:
    """Optional "regions": [{"x", "y", "w", "h"}, ...] in image pixels, what the answers are about."""
    if raw is None:
        return None
    if image is None:
        raise DataError(f"{where}: 'regions' given but no image; drop them or add the image")
    if not isinstance(raw, list):
        raise DataError(f"{where}: 'regions' must be a list of boxes {{\"x\", \"y\", \"w\", \"h\"}} in pixels")
    boxes = []
    for k, box in enumerate(raw):
        try:
            x, y, w, h = (float(box[c]) for c in "xywh")
        except (TypeError, KeyError, ValueError) as e:
            raise DataError(f"{where}: region {k} is {box!r}; give numbers x, y, w, h in pixels") from e
        if w <= 0 or h <= 0 or x + w <= 0 or y + h <= 0 or x >= image.width or y >= image.height:
            raise DataError(f"{where}: region {k} {box!r} lies outside the {image.width}x{image.height} image "
                            "or is empty; fix or drop it")
        boxes.append({"x": x, "y": y, "w": w, "h": h})
    return boxes


def make_source(data: str, *, image_root: str | None = None, shapes_scenes: int = 1000, shapes_seed: int = 0,
                shapes_image_size: int = 64, shapes_probe_captions: bool = False,
                shapes_kinds: Sequence[str] | None = None) -> Source:
    """'shapes' -> ShapesInstructions; a path -> JsonlConversations."""
    if data == "shapes":
        return ShapesInstructions(shapes_scenes, shapes_seed, shapes_image_size, probe_captions=shapes_probe_captions,
                                  kinds=shapes_kinds)
    return JsonlConversations(data, image_root)


class Stream:
    """Which examples form micro-batch ``m`` on this rank: global positions m*B*W + rank*B + j,
    position p is example perm[p // n][p % n] with a fresh permutation per epoch."""

    def __init__(self, source: Source, micro_batch: int, seed: int, rank: int = 0, world: int = 1):
        self.source, self.micro_batch, self.seed, self.rank, self.world = source, micro_batch, seed, rank, world
        self._perms: dict[int, list[int]] = {}

    def _perm(self, epoch: int) -> list[int]:
        if epoch not in self._perms:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perms = {epoch: torch.randperm(len(self.source), generator=g).tolist()}
        return self._perms[epoch]

    def epoch(self, m: int) -> float:
        return m * self.micro_batch * self.world / len(self.source)

    def examples(self, m: int) -> list[Example]:
        n = len(self.source)
        first = (m * self.world + self.rank) * self.micro_batch
        return [self.source[self._perm(p // n)[p % n]] for p in range(first, first + self.micro_batch)]


@dataclass
class TrainBatch:
    uids: list[str]
    student: Encoded
    teacher: Encoded | None = None


class Collator:
    """Examples -> TrainBatch, encoding for the student and (if given) the teacher."""

    def __init__(self, student, teacher=None, max_len: int | None = None):
        self.student, self.teacher, self.max_len = student, teacher, max_len

    def __call__(self, examples: Sequence[Example]) -> TrainBatch:
        s = encode(self.student, examples, self.max_len)
        t = encode(self.teacher, examples, self.max_len) if self.teacher is not None else None
        return TrainBatch([ex.uid for ex in examples], s, t)


class MicroBatches(torch.utils.data.Dataset):
    """Micro-batches start, start+1, ... of a Stream, collated (a DataLoader may run this in workers)."""

    def __init__(self, stream: Stream, collate: Collator, start: int, count: int):
        self.stream, self.collate, self.start, self.count = stream, collate, start, count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, k: int) -> TrainBatch:
        return self.collate(self.stream.examples(self.start + k))


def identity(x):
    return x
