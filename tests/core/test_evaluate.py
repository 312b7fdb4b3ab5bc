"""Scoring checked against hand-computed values, and `eval` end to end on tiny checkpoints."""

from __future__ import annotations

import math

import numpy as np

import pandas as pd
import pytest
import torch

from cdviz.evaluate import evaluate, item_outcomes, plan_queries, score_queries, summarize
from cdviz.models import load_model
from cdviz.types import ProbeItem


def _item(uid="x", options=("right", "wrong"), correct=0, **kw):
    return ProbeItem(uid=uid, source="t", category=kw.pop("category", "swap_att"), images=("a.png",),
                     options=options, correct=correct, **kw)


def test_plan_both_orders_and_rotations():
    qs = plan_queries(_item(options=("p", "n")))
    assert [q.order for q in qs] == [(0, 1), (1, 0)]
    assert [q.correct_letter for q in qs] == [0, 1]
    assert "(A) p (B) n" in qs[0].text and "(A) n (B) p" in qs[1].text
    qs = plan_queries(_item(options=("w", "x", "y", "z"), correct=2))
    assert [q.correct_letter for q in qs] == [2, 1, 0, 3]


def test_score_choice_by_letter_logits(tiny_model_dir):
    adapter = load_model(tiny_model_dir("llava"))
    a, b = adapter.letter_token_ids(2)
    qs = plan_queries(_item(options=("p", "n")))
    logits = torch.zeros(2, adapter.vocab_size)
    logits[0, a], logits[0, b] = 2.0, 0.5   # order (p, n): picks A = p -> right, margin 1.5
    logits[1, a], logits[1, b] = 1.0, 0.0   # order (n, p): picks A = n -> wrong, margin -1
    rows = score_queries(adapter, qs, logits)
    assert [r["correct"] for r in rows] == [True, False]
    assert [r["chosen"] for r in rows] == [0, 1]
    assert [r["margin"] for r in rows] == [1.5, -1.0]
    assert [r["order"] for r in rows] == ["01", "10"]


def test_both_order_accuracy_and_consistency_hand_computed():
    # item p1: right in both orders; p2: right only in order 01; p3: wrong in both.
    rows = [("p1", "01", True), ("p1", "10", True), ("p2", "01", True), ("p2", "10", False),
            ("p3", "01", False), ("p3", "10", False)]
    frame = pd.DataFrame([{"uid": u, "category": "swap_att", "skill": "perception", "kind": "choice", "order": o,
                           "chosen": 0, "correct": c, "margin": 1.0, "caption": -1, "image": 0,
                           "score": math.nan} for u, o, c in rows])
    s = summarize(frame)["by_category"]["swap_att"]
    assert s["accuracy_per_order"] == {"01": pytest.approx(200 / 3), "10": pytest.approx(100 / 3)}
    assert s["accuracy"] == pytest.approx(50.0)
    assert s["consistent"] == pytest.approx(100 / 3)
    assert s["n"] == 3


def _match_rows(uid, s):
    return [{"uid": uid, "category": "Object", "skill": "perception", "kind": "match2x2", "order": "", "chosen": -1,
             "correct": False, "margin": math.nan, "caption": c, "image": i, "score": s[c][i]}
            for c in range(2) for i in range(2)]


def test_winoground_scores_hand_computed():
    # s[c][i]
    both = [[-1.0, -3.0], [-2.0, -0.5]]        # text: -1>-2 and -0.5>-3; image: -1>-3 and -0.5>-2
    text_only = [[-1.0, -0.2], [-2.0, -0.1]]   # text: -1>-2, -0.1>-0.2; image: -1>-0.2 false
    image_only = [[-1.0, -3.0], [-0.5, -0.4]]  # text: -1>-0.5 false; image: -1>-3, -0.4>-0.5
    frame = pd.DataFrame(_match_rows("w1", both) + _match_rows("w2", text_only) + _match_rows("w3", image_only))
    items = item_outcomes(frame).set_index("uid")
    assert items.loc["w1", ["text", "image", "group"]].tolist() == [True, True, True]
    assert items.loc["w2", ["text", "image", "group"]].tolist() == [True, False, False]
    assert items.loc["w3", ["text", "image", "group"]].tolist() == [False, True, False]
    w = summarize(frame)["winoground"]
    assert (w["text"], w["image"], w["group"]) == (pytest.approx(200 / 3), pytest.approx(200 / 3), pytest.approx(100 / 3))


def test_eval_end_to_end_every_arch(tiny_model_dir, arch, shapes_probes):
    adapter = load_model(tiny_model_dir(arch))
    frame, skipped = evaluate(adapter, shapes_probes, batch_size=7)
    assert skipped == []
    assert set(frame.uid) == {i.uid for i in shapes_probes}
    n_queries = sum(len(plan_queries(i)) for i in shapes_probes)
    assert len(frame) == n_queries
    # batching must not change the answers
    frame1, _ = evaluate(adapter, shapes_probes, batch_size=1)
    pd.testing.assert_series_equal(frame.margin, frame1.margin, atol=1e-4, rtol=1e-4)
    summary = summarize(frame)
    assert set(summary["by_skill"]) == {"recognition", "perception"}


def test_flat_image_keeps_size_and_mean_colour():
    from PIL import Image

    from cdviz.evaluate import flat_image

    img = Image.new("RGB", (4, 2), (0, 0, 0))
    img.paste((200, 100, 40), (0, 0, 2, 2))  # left half coloured
    flat = flat_image(img)
    assert flat.size == (4, 2)
    assert {tuple(px) for px in np.asarray(flat).reshape(-1, 3)} == {(100, 50, 20)}


def test_blind_eval_sees_no_image_content(tiny_model_dir, shapes_probes):
    """Blind scores differ from seeing ones, and depend on nothing but the text and the mean colour:
    flattening the images beforehand changes no margin."""
    adapter = load_model(tiny_model_dir("llava"))
    frame, _ = evaluate(adapter, shapes_probes, batch_size=8, blind=True)
    seeing, _ = evaluate(adapter, shapes_probes, batch_size=8)
    assert len(frame) == len(seeing)
    assert not frame.margin.equals(seeing.margin)
    # Blind: the score depends on the text and the image's mean colour only. Re-running with each
    # image replaced by a different picture of the same mean gives identical margins.
    from cdviz.evaluate import flat_image
    import cdviz.evaluate as ev

    original = ev.load_image
    ev.load_image = lambda probes, item, k: flat_image(original(probes, item, k))
    try:
        flattened_first, _ = evaluate(adapter, shapes_probes, batch_size=8, blind=True)
    finally:
        ev.load_image = original
    pd.testing.assert_series_equal(frame.margin, flattened_first.margin, atol=1e-6, rtol=1e-6)


def _loglik_one_token_at_a_time(adapter, image, prompt, answer):
    """Independent reference: the eval prompt path, extended by one answer token per forward."""
    batch = adapter.build_batch([image], [prompt])
    ids, mask = batch.inputs["input_ids"], batch.inputs["attention_mask"]
    tokens = adapter.tokenizer(answer, add_special_tokens=False).input_ids
    total = 0.0
    for t in tokens:
        inputs = dict(batch.inputs, input_ids=ids, attention_mask=mask)
        with torch.no_grad():
            logits = adapter.model(**inputs, use_cache=False).logits[0, -1].float()
        total += float(torch.log_softmax(logits, -1)[t])
        ids = torch.cat([ids, torch.tensor([[t]])], 1)
        mask = torch.cat([mask, torch.ones(1, 1, dtype=mask.dtype)], 1)
    return total


def test_answer_loglik_equals_token_by_token_scoring(tiny_model_dir, shapes_probes):
    from cdviz.evaluate import answer_loglik, load_image

    adapter = load_model(tiny_model_dir("llava"))
    items = [i for i in shapes_probes if i.kind == "choice"][:3]
    images = [load_image(shapes_probes, i, 0) for i in items for _ in i.options]
    answers = [o for i in items for o in i.options]
    prompts = ["Describe the image."] * len(answers)
    batched = answer_loglik(adapter, images, prompts, answers)  # padded: options differ in length
    for img, p, a, got in zip(images, prompts, answers, batched):
        assert got == pytest.approx(_loglik_one_token_at_a_time(adapter, img, p, a), abs=1e-4)


def test_likelihood_protocol_one_row_per_choice_item(tiny_model_dir, shapes_probes):
    adapter = load_model(tiny_model_dir("llava"))
    frame, skipped = evaluate(adapter, shapes_probes, batch_size=8, protocol="likelihood")
    choice = [i for i in shapes_probes if i.kind == "choice"]
    assert len(frame) == len(choice) and set(frame.order) == {"likelihood"}
    assert {s.where for s in skipped} == {i.uid for i in shapes_probes if i.kind != "choice"}
    assert (frame.correct == (frame.margin > 0)).all()
    summary = summarize(frame)
    for cat in summary["by_category"].values():
        assert cat["consistent"] == pytest.approx(cat["accuracy"])  # one query per item


def test_unknown_protocol_is_named():
    from cdviz.errors import OptionError

    with pytest.raises(OptionError, match="--protocol 'votes'"):
        evaluate(None, [], protocol="votes")
