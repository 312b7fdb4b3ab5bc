"""The text-only control for two-choice probe sets: how well the option texts alone predict the
answer, with no image at all.

A logistic regression on bag-of-words counts is fitted to the match queries of the training
items (cdviz.prompts.match_texts: one text per option, label "is this option true"), then each
test item is scored pairwise as the match protocol scores a model: the true option must get the
highest probability (a yes/no question: "yes" must be on the right side of one half). A probe
set without text shortcuts keeps this near 50% in every category.

    from cdviz.probes.text_baseline import text_only_pairwise
    text_only_pairwise(train_items, test_items)  -> {"replace_att": 49.0, ...}  (percent)
"""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import numpy as np

from cdviz.prompts import match_answer, match_texts
from cdviz.types import ProbeItem

TOKEN_PATTERN = r"[A-Za-z0-9]+|[^\sA-Za-z0-9]"  # words and single punctuation marks, as the tiny tokenizer splits


def _rows(item: ProbeItem) -> list[tuple[str, int, int]]:
    """(text, option index or -1, 1 if the right answer to it is yes) per match query of ``item``."""
    return [(text, k, int(match_answer(item.question, item.options, item.correct, k) == "yes"))
            for k, text in match_texts(item.question, item.options)]


def _win(a: float, b: float) -> float:
    """1 if a beats b, 0 if it loses, 1/2 on a tie (the same words in both options score the same)."""
    return 0.5 if abs(a - b) < 1e-9 else float(a > b)


def text_only_pairwise(train: Sequence[ProbeItem], test: Sequence[ProbeItem], *, c: float = 1.0) -> dict[str, float]:
    """Pairwise accuracy (percent) per category of a bag-of-words model fitted on ``train``."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression

    train_rows = [r for item in train if item.kind == "choice" for r in _rows(item)]
    if len({y for _, _, y in train_rows}) < 2:
        raise ValueError("the training items give only one kind of answer; the baseline needs both")
    vectorizer = CountVectorizer(token_pattern=TOKEN_PATTERN, lowercase=False)
    x = vectorizer.fit_transform([t for t, _, _ in train_rows])
    model = LogisticRegression(C=c, max_iter=2000).fit(x, [y for _, _, y in train_rows])
    hits: dict[str, list[float]] = defaultdict(list)
    for item in test:
        if item.kind != "choice":
            continue
        rows = _rows(item)
        p_yes = model.predict_proba(vectorizer.transform([t for t, _, _ in rows]))[:, 1]
        if rows[0][1] == -1:  # a yes/no question: one query decides
            right = _win(p_yes[0] if rows[0][2] else 1 - p_yes[0], 0.5)
        else:
            score = dict(zip((k for _, k, _ in rows), p_yes))
            right = _win(score[item.correct], max(v for k, v in score.items() if k != item.correct))
        hits[item.category].append(float(right))
    return {cat: 100 * float(np.mean(v)) for cat, v in sorted(hits.items())}
