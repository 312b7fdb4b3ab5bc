"""The shapes probes carry no text shortcut: each option's claim is true exactly for the true
option, add_att / add_obj options have as many words either way, the true count of a counting
item is the lower of its pair half the time, and a text-only bag-of-words model stays at chance
(50 +/- 5 %) in every category, while the same check flags a probe set built with a shortcut."""

from __future__ import annotations

import dataclasses
import itertools
import random
from collections import Counter

import pytest
from scipy.stats import binomtest

from cdviz.probes.shapes import claim_holds, generate_scenes, items_for_scene, make_shapes, words
from cdviz.probes.text_baseline import text_only_pairwise
from cdviz.types import DEFAULT_QUESTION, ProbeItem

SEEDS = (0, 1, 2)
CHANCE, BAND = 50.0, 5.0


def _scene_items(seed: int, n_scenes: int, categories=None, split: str = "test") -> list[ProbeItem]:
    """Items as make_shapes draws them (same per-scene rng), without rendering images."""
    items = []
    for scene in generate_scenes(seed, 48, splits=(split,), n=n_scenes):
        items += items_for_scene(scene, random.Random(f"shapes-items:{seed}:{scene.index}"), categories)
    return items


@pytest.fixture(scope="module")
def probe_items(tmp_path_factory) -> list[ProbeItem]:
    """A few hundred items of each seed, every category, from make_shapes itself."""
    items = []
    for seed in SEEDS:
        items += make_shapes(tmp_path_factory.mktemp(f"shapes{seed}"), n=300, seed=seed, image_size=48).items
    return items


# ------------------------------------------------------------------------ claims are exact

def test_claims_hold_exactly_for_the_true_option(probe_items):
    assert len(probe_items) == 300 * len(SEEDS)
    assert len({i.category for i in probe_items}) == 10
    for item in probe_items:
        meta = item.metadata
        assert len(meta["claims"]) == len(item.options)
        holds = [claim_holds(meta["scene"], c) for c in meta["claims"]]
        assert holds == [k == item.correct for k in range(len(item.options))], (item.uid, item.options, holds)


def test_claims_hold_on_more_scenes():
    """The same on unrendered items from other seeds and the train split (more scenes, cheaply)."""
    n = 0
    for seed, split in ((3, "train"), (4, "validation"), (5, "test")):
        for item in _scene_items(seed, 60, split=split):
            holds = [claim_holds(item.metadata["scene"], c) for c in item.metadata["claims"]]
            assert holds == [k == item.correct for k in range(len(item.options))], (item.uid, holds)
            n += 1
    assert n > 300


# --------------------------------------------------------------------- same number of words

@pytest.mark.parametrize("category", ["add_att", "add_obj"])
def test_add_options_have_equal_word_counts(probe_items, category):
    items = [i for i in probe_items if i.category == category]
    items += _scene_items(7, 300, [category])
    assert len(items) > 300
    for item in items:
        counts = [len(words(o)) for o in item.options]
        assert len(set(counts)) == 1, (item.uid, item.options)
    # the word counts vary across items, so the check is not trivially met by one template
    assert len({len(words(i.options[0])) for i in items}) > 1


# --------------------------------------------------------------- counting: no number prior

def _count_pairs(items: list[ProbeItem]) -> dict[tuple[int, int], list[bool]]:
    """{(k, k + 1): [true count is k, ...]} from the counting items' claims."""
    pairs: dict[tuple[int, int], list[bool]] = {}
    for item in items:
        claims = item.metadata["claims"]
        true = claims[item.correct]["counts"][0][1]
        false = claims[1 - item.correct]["counts"][0][1]
        assert abs(true - false) == 1 and min(true, false) >= 1, (item.uid, true, false)
        lo = min(true, false)
        pairs.setdefault((lo, lo + 1), []).append(true == lo)
    return pairs


@pytest.fixture(scope="module")
def counting_items() -> list[ProbeItem]:
    return list(itertools.chain.from_iterable(_scene_items(seed, 1500, ["counting"]) for seed in SEEDS))


def test_counting_true_count_is_lower_half_the_time(counting_items):
    pairs = _count_pairs(counting_items)
    tested = 0
    for pair, lower in sorted(pairs.items()):
        if len(lower) < 20:  # too few to test (the (3, 4) pair is rare: ~30 items)
            continue
        p = binomtest(sum(lower), len(lower), 0.5).pvalue
        assert p > 0.001, f"counts {pair}: the true one is the lower in {sum(lower)} of {len(lower)} items (p={p:.2g})"
        tested += 1
    assert tested >= 3, {k: len(v) for k, v in pairs.items()}
    assert sum(len(v) for v in pairs.values()) > 2000


def test_counting_binomial_check_can_fail(counting_items):
    """The same check on a biased version (the true count always the lower) is rejected."""
    pairs = _count_pairs(counting_items)
    pair, lower = max(pairs.items(), key=lambda kv: len(kv[1]))
    biased = [True] * len(lower)
    assert binomtest(sum(biased), len(biased), 0.5).pvalue < 0.001
    # and one 60/40 is rejected too at this sample size
    n = len(lower)
    assert n >= 1000 and binomtest(int(0.6 * n), n, 0.5).pvalue < 0.001


# ----------------------------------------------------------------- the text-only baseline

@pytest.fixture(scope="module")
def baseline_sets(tmp_path_factory) -> tuple[list[ProbeItem], list[ProbeItem]]:
    root = tmp_path_factory.mktemp("baseline")
    train = make_shapes(root / "train", n=8000, seed=0, image_size=48, splits=("train",)).items
    test = make_shapes(root / "test", n=4000, seed=0, image_size=48, splits=("test",)).items
    return train, test


def _outside(scores: dict[str, float]) -> dict[str, float]:
    return {c: s for c, s in scores.items() if abs(s - CHANCE) > BAND}


def test_text_only_baseline_at_chance(baseline_sets):
    train, test = baseline_sets
    assert {i.split for i in train} == {"train"} and {i.split for i in test} == {"test"}
    scores = text_only_pairwise(train, test)
    assert set(scores) == {i.category for i in test} and len(scores) == 10
    assert not _outside(scores), f"text alone predicts the answer: {scores}"


def _longer_false(item: ProbeItem) -> ProbeItem:
    """The caption item with its false option made longer (a shortcut SugarCrepe warns of)."""
    if item.question != DEFAULT_QUESTION:
        return item
    options = list(item.options)
    k = 1 - item.correct
    options[k] = options[k].rstrip(".") + " and a small object ."
    return dataclasses.replace(item, options=tuple(options))


def test_text_only_baseline_flags_a_biased_probe_set(baseline_sets):
    train, test = baseline_sets
    train, test = [_longer_false(i) for i in train[:3000]], [_longer_false(i) for i in test[:2000]]
    caption_cats = {i.category for i in test if i.question == DEFAULT_QUESTION}
    assert caption_cats and all(len(words(i.options[1 - i.correct])) > len(words(i.options[i.correct]))
                                for i in test if i.category in caption_cats)
    scores = text_only_pairwise(train, test)
    outside = _outside(scores)
    assert outside, f"the check missed a planted shortcut: {scores}"
    # every caption category is flagged, far above chance (the question categories are not
    # made longer; their scores may drift as the shared words' weights change)
    assert caption_cats <= set(outside) and all(scores[c] > 90 for c in caption_cats), scores


def test_text_only_baseline_by_hand():
    """A tiny hand-made case: the words alone decide, and ties score one half."""
    def item(uid, options, correct, cat):
        return ProbeItem(uid=uid, source="t", category=cat, images=("x.png",), options=options, correct=correct)

    train = [item(f"a{i}", ("red circle .", "blue circle ."), 0, "c") for i in range(20)]
    train += [item(f"b{i}", ("red square .", "blue square ."), 0, "c") for i in range(20)]
    test = [item("t0", ("red triangle .", "blue triangle ."), 0, "shortcut"),
            item("t1", ("blue triangle .", "red triangle ."), 1, "shortcut"),
            item("t2", ("a circle .", "a circle ."), 0, "tie")]
    assert text_only_pairwise(train, test) == {"shortcut": 100.0, "tie": 50.0}
    assert Counter(i.category for i in test) == {"shortcut": 2, "tie": 1}
