"""The "match" protocol (image-text matching, VQAScore-style): its plan, its scores against a hand
computation from a plain forward, pairwise / strict per item, summaries, and the recorder.

    s(option) = log(P(Yes) + P(yes)) - log(P(No) + P(no))  at the answer position
    pairwise  = the true option's s beats every false option's
    strict    = the true option judged yes (s > 0) and every false one no
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from cdviz.evaluate import (
    PROTOCOLS,
    Query,
    evaluate,
    flat_image,
    item_outcomes,
    load_image,
    plan_queries,
    score_queries,
    summarize,
    yes_no_log_odds,
)
from cdviz.models import load_model
from cdviz.models.tiny import build_tiny
from cdviz.probes.probeset import ProbeSet
from cdviz.probes.shapes import make_shapes
from cdviz.prompts import MATCH_QUESTION, VERIFY_QUESTION, match_answer, match_texts
from cdviz.record import RecordOptions, record_run
from cdviz.store import StoreError, open_run
from cdviz.types import DEFAULT_QUESTION, ProbeItem

TINY = dict(n_layers=2, n_heads=2, n_kv_heads=2, intermediate=64, seed=0, image_size=48, patch_size=8,
            vision_hidden=32, vision_layers=1, hidden=64)
YES, NO = ("Yes", "yes"), ("No", "no")
# Batched (right-padded) and single forwards differ by ~5e-7 in the log-odds; outcomes are compared
# only where every decision is further than this from a tie.
NEAR_TIE = 2e-5


# ------------------------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("match")
    teacher = load_model(build_tiny("llava", root / "teacher", **TINY))
    student = load_model(build_tiny("llava", root / "student", **{**TINY, "n_layers": 1, "seed": 1}))
    probes = make_shapes(root / "probes", n=30, seed=0, image_size=48, splits=("test",))
    _spread_yes_no(teacher, probes)
    _spread_yes_no(student, probes)
    return teacher, student, probes


@pytest.fixture(scope="module")
def match_frame(tiny):
    teacher, _, probes = tiny
    frame, skipped = evaluate(teacher, probes, protocol="match", batch_size=5)
    assert not skipped
    return frame


def _spread_yes_no(adapter, probes: ProbeSet, scale: float = 1.0) -> None:
    """Make the random model's yes/no log-odds depend on the input, with both signs: the "Yes"
    ("yes") output row becomes the "No" ("no") row plus a random direction orthogonal to the mean
    answer-position state of some match queries. A random tiny model otherwise says "no" a little
    to everything, and strict would always be False."""
    head = adapter.model.get_output_embeddings()
    states = []
    hook = head.register_forward_hook(lambda _m, args, _out: states.append(args[0][0, -1].detach()))
    try:
        for item in probes.items[:8]:
            image = load_image(probes, item, 0)
            for _, text in match_texts(item.question, item.options):
                with torch.no_grad():
                    adapter.model(**adapter.build_batch([image], [text]).inputs, use_cache=False)
    finally:
        hook.remove()
    h = torch.stack(states)  # [S, D]
    mean = h.mean(0)
    gen = torch.Generator().manual_seed(0)
    tok = adapter.tokenizer
    with torch.no_grad():
        for y, n in (("Yes", "No"), ("yes", "no")):
            r = torch.randn(h.shape[1], generator=gen)
            r -= (r @ mean) / (mean @ mean) * mean
            r *= scale / float((h @ r).std())  # log-odds spread ~ scale
            yi, ni = tok.convert_tokens_to_ids(y), tok.convert_tokens_to_ids(n)
            head.weight[yi] = head.weight[ni] + r


def _item(uid="u", options=("a red circle.", "a blue square."), correct=0, question=DEFAULT_QUESTION,
          category="replace_att", skill="perception") -> ProbeItem:
    return ProbeItem(uid=uid, source="test", category=category, images=("x.png",), options=tuple(options),
                     correct=correct, question=question, skill=skill)


# ------------------------------------------------------------------------------------ the plan

def test_protocols():
    assert set(PROTOCOLS) == {"letters", "likelihood", "match"}


@pytest.mark.parametrize("correct", [0, 1, 2])
def test_plan_caption_item_one_query_per_option_true_first(correct):
    options = ("a red circle.", "a blue square.", "a green triangle.")
    item = _item(options=options, correct=correct)
    qs = plan_queries(item, "match")
    assert len(qs) == 3 and all(q.kind == "match" and q.image == 0 and q.uid == "u" for q in qs)
    assert qs[0].caption == correct and qs[0].expect_yes
    assert sorted(q.caption for q in qs) == [0, 1, 2]
    for q in qs:
        assert q.text == MATCH_QUESTION.format(caption=options[q.caption])
        assert q.text == f'Does this image show "{options[q.caption]}"? Answer yes or no.'
        assert q.expect_yes == (q.caption == correct)
        assert q.order == () and q.correct_letter == -1
    # the false options keep their original order after the true one
    assert [q.caption for q in qs[1:]] == [k for k in range(3) if k != correct]


@pytest.mark.parametrize("options,correct,expect_yes", [
    (("yes", "no"), 0, True), (("yes", "no"), 1, False), (("No", "Yes"), 0, False), (("No", "Yes"), 1, True),
    ((" YES ", "no"), 0, True),
])
def test_plan_yes_no_question_one_query(options, correct, expect_yes):
    item = _item(options=options, correct=correct, question="Is there a red circle in the image?",
                 category="existence", skill="recognition")
    qs = plan_queries(item, "match")
    assert len(qs) == 1
    q = qs[0]
    assert q.caption == -1 and q.text == "Is there a red circle in the image?"  # asked as it stands
    assert q.expect_yes is expect_yes


@pytest.mark.parametrize("correct", [0, 1])
def test_plan_other_question_uses_verify(correct):
    question = "What colour is the square?"
    item = _item(options=("red", "blue"), correct=correct, question=question, category="colour",
                 skill="recognition")
    qs = plan_queries(item, "match")
    assert [q.caption for q in qs] == [correct, 1 - correct]
    for q in qs:
        opt = item.options[q.caption]
        assert q.text == VERIFY_QUESTION.format(question=question, option=opt)
        assert q.text == f'{question} Is the answer "{opt}"? Answer yes or no.'
        assert q.expect_yes == (q.caption == correct)


def test_match_texts_and_answers_agree_with_plan():
    for question, options, correct in [(DEFAULT_QUESTION, ("a", "b"), 0), ("Is it?", ("yes", "no"), 1),
                                       ("What colour?", ("red", "blue"), 1)]:
        item = _item(options=options, correct=correct, question=question)
        pairs = match_texts(question, options)
        qs = plan_queries(item, "match")
        assert sorted((q.caption, q.text) for q in qs) == sorted(pairs)
        for q in qs:
            assert q.expect_yes == (match_answer(question, options, correct, q.caption) == "yes")


def test_plan_shapes_items(tiny):
    _, _, probes = tiny
    kinds = set()
    for item in probes:
        qs = plan_queries(item, "match")
        if item.category == "existence":
            assert len(qs) == 1 and qs[0].caption == -1
            assert qs[0].expect_yes == (item.options[item.correct] == "yes")
            kinds.add("yes/no")
        else:
            assert len(qs) == len(item.options) and qs[0].caption == item.correct and qs[0].expect_yes
            assert sum(q.expect_yes for q in qs) == 1
            template = MATCH_QUESTION if item.question == DEFAULT_QUESTION else VERIFY_QUESTION
            assert all(q.text.startswith(template.split("{")[0]) for q in qs)
            kinds.add("caption" if item.question == DEFAULT_QUESTION else "verify")
    assert kinds == {"yes/no", "caption", "verify"}


# ----------------------------------------------------------- scores against a hand computation

def _hand_scores(adapter, probes: ProbeSet, blind: bool = False) -> dict[tuple[str, int], float]:
    """{(uid, option index or -1): log(P(Yes)+P(yes)) - log(P(No)+P(no))}, one sample per forward,
    token ids read from the vocabulary, float64 softmax."""
    tok = adapter.tokenizer
    yes = tok.convert_tokens_to_ids(list(YES))
    no = tok.convert_tokens_to_ids(list(NO))
    assert tok.unk_token_id not in yes + no and len(set(yes + no)) == 4
    out = {}
    for item in probes:
        image = load_image(probes, item, 0)
        if blind:
            image = flat_image(image)
        for k, text in match_texts(item.question, item.options):
            batch = adapter.build_batch([image], [text])
            with torch.no_grad():
                logits = adapter.model(**batch.inputs, use_cache=False).logits
            assert int(batch.answer_pos[0]) == batch.inputs["input_ids"].shape[1] - 1  # unpadded: the last token
            p = torch.softmax(logits[0, -1].double(), -1)
            out[item.uid, k] = math.log(float(p[yes].sum())) - math.log(float(p[no].sum()))
    return out


def _hand_outcomes(item: ProbeItem, s: dict[tuple[str, int], float]) -> tuple[bool, bool]:
    """(pairwise, strict) of one item from its hand scores."""
    if (item.uid, -1) in s:
        yes_right = item.options[item.correct].strip().lower() == "yes"
        right = s[item.uid, -1] > 0 if yes_right else s[item.uid, -1] <= 0
        return right, right
    true = s[item.uid, item.correct]
    false = [s[item.uid, k] for k in range(len(item.options)) if k != item.correct]
    return true > max(false), true > 0 and all(v <= 0 for v in false)


def test_scores_equal_hand_computation(tiny, match_frame):
    teacher, _, probes = tiny
    hand = _hand_scores(teacher, probes)
    assert len(match_frame) == len(hand)
    assert set(match_frame.kind) == {"match"} and set(match_frame.order) == {"match"}
    for r in match_frame.itertuples():
        want = hand[r.uid, int(r.caption)]
        assert r.score == pytest.approx(want, abs=1e-5), (r.uid, r.caption)
        assert r.chosen == int(r.score > 0)
    # the scores are not all ~0: the comparisons decide something
    assert np.abs(match_frame.score).min() > 100 * NEAR_TIE


def test_pairwise_and_strict_from_hand_scores(tiny, match_frame):
    teacher, _, probes = tiny
    hand = _hand_scores(teacher, probes)
    items = item_outcomes(match_frame).set_index("uid")
    assert len(items) == len(probes) and set(items.kind) == {"match"}
    checked = 0
    for item in probes:
        pairwise, strict = _hand_outcomes(item, hand)
        vals = [v for (u, _), v in hand.items() if u == item.uid]
        margin = (abs(vals[0]) if len(vals) == 1 else abs(hand[item.uid, item.correct] - max(
            v for (u, k), v in hand.items() if u == item.uid and k != item.correct)))
        if margin < NEAR_TIE or min(abs(v) for v in vals) < NEAR_TIE:
            continue  # too close to a tie for float noise between batched and single forwards
        row = items.loc[item.uid]
        assert bool(row.pairwise) == pairwise, item.uid
        assert bool(row.strict) == strict, item.uid
        assert row.accuracy == float(pairwise)
        checked += 1
    assert checked >= 0.8 * len(probes)
    # the model gives both outcomes of each measure, so the comparison above can fail
    assert set(items.pairwise.astype(bool)) == {True, False}
    assert set(items.strict.astype(bool)) == {True, False}


def test_summary_percentages(tiny, match_frame):
    _, _, probes = tiny
    items = item_outcomes(match_frame)
    summary = summarize(match_frame)
    assert summary["protocol"] == "match" and summary["n_items"] == len(probes)
    for key in ("category", "skill"):
        table = summary[f"by_{key}"]
        assert set(table) == set(items[key])
        for name, g in items.groupby(key):
            pw = 100 * np.mean([bool(v) for v in g.pairwise])
            st = 100 * np.mean([bool(v) for v in g.strict])
            assert table[name]["n"] == len(g)
            assert table[name]["pairwise"] == pytest.approx(pw)
            assert table[name]["strict"] == pytest.approx(st)
            assert table[name]["accuracy"] == pytest.approx(pw)
    perception = items[items.skill == "perception"]
    for measure in ("pairwise", "strict"):
        per_cat = [100 * np.mean([bool(v) for v in g[measure]]) for _, g in perception.groupby("category")]
        assert summary[f"{measure}_mean_over_categories"] == pytest.approx(np.mean(per_cat))


# -------------------------------------------------------------------------- planted logits

def _logits(adapter, scores: list[float], split: float = 0.3) -> torch.Tensor:
    """[Q, V] logits whose yes/no log-odds are ``scores``: "Yes" and "yes" share the yes mass
    unevenly (so summing the spellings matters), the rest of the vocabulary gets some mass too."""
    tok = adapter.tokenizer
    v = adapter.model.config.text_config.vocab_size
    ids = {w: tok.convert_tokens_to_ids(w) for w in (*YES, *NO)}
    out = torch.full((len(scores), v), -1.0)
    for q, s in enumerate(scores):
        # log(e^(s/2) (1 + split)) - log(e^(-s/2) (split + 1)) = s
        out[q, ids["Yes"]] = s / 2
        out[q, ids["yes"]] = s / 2 + math.log(split)
        out[q, ids["No"]] = -s / 2 + math.log(split)
        out[q, ids["no"]] = -s / 2
    return out


def _frame(rows: list[dict], items: list[ProbeItem]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    meta = {i.uid: i for i in items}
    frame.insert(1, "category", [meta[u].category for u in frame.uid])
    frame.insert(2, "skill", [meta[u].skill for u in frame.uid])
    return frame


def test_yes_no_log_odds_sums_spellings(tiny):
    teacher = tiny[0]
    scores = [2.0, -1.5, 0.0, 7.0]
    got = yes_no_log_odds(teacher, _logits(teacher, scores))
    torch.testing.assert_close(got, torch.tensor(scores), atol=1e-5, rtol=0)
    # the yes mass mostly on the lower-case spelling: the sum over spellings, by hand
    tok = teacher.tokenizer
    lg = _logits(teacher, [0.0], split=0.01)
    lg[0, tok.convert_tokens_to_ids("yes")] = 5.0  # all the yes mass on the lower-case spelling
    p = torch.softmax(lg[0].double(), -1)
    y = p[tok.convert_tokens_to_ids("Yes")] + p[tok.convert_tokens_to_ids("yes")]
    n = p[tok.convert_tokens_to_ids("No")] + p[tok.convert_tokens_to_ids("no")]
    assert float(yes_no_log_odds(teacher, lg)[0]) == pytest.approx(float(torch.log(y / n)), abs=1e-5)


# (name, options, correct, question, {option or -1: score}, pairwise, strict)
PLANTED = [
    ("both_yes", ("t.", "f."), 0, DEFAULT_QUESTION, {0: 2.0, 1: 1.0}, True, False),   # right order, f judged yes
    ("both_no", ("t.", "f."), 0, DEFAULT_QUESTION, {0: -1.0, 1: -3.0}, True, False),  # right order, t judged no
    ("clean", ("t.", "f."), 0, DEFAULT_QUESTION, {0: 2.0, 1: -2.0}, True, True),
    ("inverted", ("t.", "f."), 0, DEFAULT_QUESTION, {0: 1.0, 1: 2.0}, False, False),
    ("inverted_no", ("f.", "t."), 1, DEFAULT_QUESTION, {0: -0.5, 1: -1.0}, False, False),
    ("three", ("f.", "t.", "g."), 1, DEFAULT_QUESTION, {0: 0.5, 1: 1.0, 2: -2.0}, True, False),
    ("three_clean", ("f.", "t.", "g."), 1, DEFAULT_QUESTION, {0: -0.5, 1: 1.0, 2: -2.0}, True, True),
    ("three_beaten", ("f.", "t.", "g."), 1, DEFAULT_QUESTION, {0: -0.5, 1: 1.0, 2: 1.5}, False, False),
    ("verify", ("red", "blue"), 1, "What colour is it?", {0: -1.0, 1: 0.5}, True, True),
    ("yn_yes_right", ("yes", "no"), 0, "Is there a cat?", {-1: 1.0}, True, True),
    ("yn_yes_wrong", ("yes", "no"), 0, "Is there a cat?", {-1: -1.0}, False, False),
    ("yn_no_right", ("yes", "no"), 1, "Is there a cat?", {-1: -2.0}, True, True),
    ("yn_no_wrong", ("yes", "no"), 1, "Is there a cat?", {-1: 0.5}, False, False),
]


def test_planted_outcomes(tiny):
    teacher = tiny[0]
    items, rows = [], []
    for name, options, correct, question, scores, _, _ in PLANTED:
        cat, skill = ("yn", "recognition") if -1 in scores else (f"c{len(options)}", "perception")
        item = _item(uid=name, options=options, correct=correct, question=question, category=cat, skill=skill)
        items.append(item)
        qs = plan_queries(item, "match")
        assert sorted(q.caption for q in qs) == sorted(scores)
        item_rows = score_queries(teacher, qs, _logits(teacher, [scores[q.caption] for q in qs]))
        for q, r in zip(qs, item_rows):
            s = scores[q.caption]
            assert r["score"] == pytest.approx(s, abs=1e-5)
            assert r["chosen"] == int(s > 0) and r["caption"] == q.caption
            assert r["correct"] == ((s > 0) == q.expect_yes)
            assert r["margin"] == pytest.approx(s if q.expect_yes else -s, abs=1e-5)
        rows += item_rows
    frame = _frame(rows, items)
    out = item_outcomes(frame).set_index("uid")
    for name, options, correct, question, scores, pairwise, strict in PLANTED:
        assert bool(out.loc[name].pairwise) is pairwise, name
        assert bool(out.loc[name].strict) is strict, name
        assert out.loc[name].accuracy == float(pairwise)
        if -1 in scores:
            want = scores[-1] if options[correct] == "yes" else -scores[-1]
        else:
            want = scores[correct] - max(v for k, v in scores.items() if k != correct)
        assert out.loc[name].margin == pytest.approx(want, abs=1e-5), name
    # summarize over the planted set: per category and the perception mean over categories
    summary = summarize(frame)
    table = summary["by_category"]
    assert table["c2"]["pairwise"] == pytest.approx(100 * 4 / 6) and table["c2"]["strict"] == pytest.approx(100 * 2 / 6)
    assert table["c3"]["pairwise"] == pytest.approx(100 * 2 / 3) and table["c3"]["strict"] == pytest.approx(100 / 3)
    assert table["yn"]["pairwise"] == 50.0 and table["yn"]["strict"] == 50.0 and table["yn"]["n"] == 4
    assert summary["pairwise_mean_over_categories"] == pytest.approx((400 / 6 + 200 / 3) / 2)
    assert summary["strict_mean_over_categories"] == pytest.approx((100 * 2 / 6 + 100 / 3) / 2)
    assert summary["by_skill"]["recognition"]["pairwise"] == 50.0


def test_match_outcomes_do_not_depend_on_row_order(tiny):
    """The true option's row is found from the rows, not assumed to come first."""
    teacher = tiny[0]
    item = _item(uid="x", options=("f.", "t.", "g."), correct=1)
    qs = plan_queries(item, "match")
    rows = score_queries(teacher, qs, _logits(teacher, [{0: 0.5, 1: 1.0, 2: -2.0}[q.caption] for q in qs]))
    a = item_outcomes(_frame(rows, [item])).iloc[0]
    b = item_outcomes(_frame(rows[::-1], [item])).iloc[0]
    assert (a.pairwise, a.strict, a.margin) == (b.pairwise, b.strict, b.margin) == (True, False, pytest.approx(0.5))


# ------------------------------------------------------------------- blind, likelihood, letters

def test_blind_match(tiny, match_frame):
    teacher, _, probes = tiny
    blind, skipped = evaluate(teacher, probes, protocol="match", blind=True, batch_size=7)
    assert not skipped
    key = ["uid", "caption"]
    a = match_frame.sort_values(key).reset_index(drop=True)
    b = blind.sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(a[key + ["kind", "category"]], b[key + ["kind", "category"]])
    assert np.isfinite(b.score).all()
    assert not np.allclose(a.score, b.score, atol=1e-4)  # the images mattered
    some = ProbeSet(probes.root, probes.items[:4], probes.meta)
    hand = _hand_scores(teacher, some, blind=True)
    for r in blind[blind.uid.isin({i.uid for i in some})].itertuples():
        assert r.score == pytest.approx(hand[r.uid, int(r.caption)], abs=1e-4)
    assert summarize(blind)["protocol"] == "match"


def test_letters_unchanged(tiny):
    teacher, _, probes = tiny
    default, _ = evaluate(teacher, probes, batch_size=6)
    letters, _ = evaluate(teacher, probes, protocol="letters", batch_size=6)
    pd.testing.assert_frame_equal(default, letters)
    assert set(letters.kind) == {"choice"} and set(letters.order) == {"01", "10"}
    assert len(letters) == 2 * len(probes)
    assert [q.kind for q in plan_queries(probes.items[0])] == ["choice", "choice"]
    summary = summarize(letters)
    assert "protocol" not in summary and "pairwise_mean_over_categories" not in summary
    items = item_outcomes(letters)
    assert items.pairwise.isna().all() and items.strict.isna().all()


def test_likelihood_unchanged(tiny):
    teacher, _, probes = tiny
    frame, skipped = evaluate(teacher, probes, protocol="likelihood", batch_size=6)
    assert not skipped and len(frame) == len(probes)
    assert set(frame.order) == {"likelihood"} and set(frame.kind) == {"choice"}
    assert (frame.chosen.isin([0, 1])).all() and np.isfinite(frame.score).all()
    assert "protocol" not in summarize(frame)


# ------------------------------------------------------------------------------------- record

def test_record_match_protocol(tiny, match_frame, tmp_path):
    teacher, student, probes = tiny
    run = record_run(teacher, student, probes, tmp_path / "run",
                     RecordOptions(protocol="match", shard_size=16, batch_size=4))
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["options"]["protocol"] == "match"
    store = open_run(run)
    assert store.complete and len(store.index) == len(probes)
    index = store.index.set_index("uid")
    assert set(store.outcomes.kind) == {"match"}

    want = item_outcomes(match_frame).set_index("uid")
    student_frame, _ = evaluate(student, probes, protocol="match", batch_size=5)
    want_student = item_outcomes(student_frame).set_index("uid")
    for name, ref in (("teacher", want), ("student", want_student)):
        assert f"{name}_strict" in index.columns
        checked = 0
        for uid, r in ref.iterrows():
            assert index.loc[uid, f"{name}_margin"] == pytest.approx(r.margin, abs=1e-4), (name, uid)
            if abs(r.margin) < NEAR_TIE:
                continue  # a near tie: batched float noise may flip it
            assert bool(index.loc[uid, f"{name}_correct"]) == bool(r.pairwise), (name, uid)
            assert bool(index.loc[uid, f"{name}_strict"]) == bool(r.strict), (name, uid)
            checked += 1
        assert checked >= 0.8 * len(ref)
    # the recorded outcome rows are the evaluate rows
    rec = store.outcomes[store.outcomes.model == "teacher"].sort_values(["uid", "caption"]).reset_index(drop=True)
    ev = match_frame.sort_values(["uid", "caption"]).reset_index(drop=True)
    assert list(rec.uid) == list(ev.uid) and list(rec.caption) == list(ev.caption)
    np.testing.assert_allclose(rec.score, ev.score, atol=1e-4)


def test_match_record_all_keeps_every_option_as_if_it_were_the_true_one(tiny, tmp_path):
    """Each option's maps under --match-record all equal the maps recorded for an item whose true
    option is that one (a path that never asks for another option), and nothing else changes."""
    from dataclasses import replace

    from cdviz.errors import OptionError

    teacher, student, probes = tiny
    some = ProbeSet(probes.root, [i for i in probes.items if i.kind == "choice"][:6], probes.meta)
    every = open_run(record_run(teacher, student, some, tmp_path / "all",
                                RecordOptions(protocol="match", match_record="all", batch_size=4)))
    true_only = open_run(record_run(teacher, student, some, tmp_path / "true",
                                    RecordOptions(protocol="match", batch_size=4)))
    def rows(store):  # the same rows; only the order they were scored in differs
        return store.outcomes.sort_values(["model", "uid", "caption"]).reset_index(drop=True)

    pd.testing.assert_frame_equal(rows(every), rows(true_only), atol=1e-5)
    flipped = ProbeSet(probes.root, [replace(i, correct=1 - i.correct) for i in some.items], probes.meta)
    other = open_run(record_run(teacher, student, flipped, tmp_path / "flipped",
                                RecordOptions(protocol="match", batch_size=4)))
    for item in some.items:
        for model in ("teacher", "student"):
            for field in ("t2i", "i2i", "mass"):
                np.testing.assert_allclose(every.get(item.uid, model, field), true_only.get(item.uid, model, field),
                                           atol=2e-3)
                np.testing.assert_allclose(every.get(item.uid, model, field, option=1 - item.correct),
                                           other.get(item.uid, model, field), atol=2e-3)
        with pytest.raises(StoreError, match="--match-record all"):
            true_only.get(item.uid, "teacher", "t2i", option=1 - item.correct)
    with pytest.raises(OptionError, match="needs --protocol match"):
        record_run(teacher, student, some, tmp_path / "bad", RecordOptions(match_record="all"))


def test_record_letters_has_no_strict(tiny, tmp_path):
    teacher, student, probes = tiny
    some = ProbeSet(probes.root, probes.items[:6], probes.meta)
    run = record_run(teacher, student, some, tmp_path / "run", RecordOptions(batch_size=4))
    assert json.loads((run / "manifest.json").read_text())["options"]["protocol"] == "letters"
    index = open_run(run).index
    assert index.teacher_strict.isna().all() and index.teacher_correct.notna().all()
