"""Compositional evaluation by answer-letter logits, never by parsing generated text.

    item ──plan_queries──> queries (one prompt each) ──forward──> logits at the answer position
         ──score_queries──> one outcome row per query ──summarize──> accuracy tables

choice items:   asked once per cyclic rotation of the options (two options: both orders); the
                chosen option is the letter with the highest logit among the item's letters;
                margin = logit(correct letter) - max logit(other letters); "consistent" means
                right in every order.
match2x2 items: s(caption c, image i) = log P(yes) for "Does this image show '<c>'? Answer yes
                or no."; text = s00 > s10 and s11 > s01, image = s00 > s01 and s11 > s10,
                group = text and image (Winoground).

protocol="match" (image-text matching, VQAScore-style) asks one yes/no query per option
                (cdviz.prompts.match_texts: 'Does this image show "<caption>"? Answer yes or no.';
                a question's option as a proposed answer; a yes/no question as it stands) and
                scores it by s = log P(yes) - log P(no) at the answer position (each summed over
                the spellings the model has, "Yes" and "yes"). Per item: pairwise = the true
                option's s is the highest (chance 50% with two options); strict = the true option
                judged yes (s > 0) and every false one no. No letters, so no order bias. The
                true option's query comes first: it is the one ``cdviz record`` captures.

protocol="likelihood" (generative scoring) instead scores each option of a choice item by the
summed log-probability of its tokens as the model's answer: to "Describe the image." for caption
items (question = DEFAULT_QUESTION), to the item's question otherwise. One query per item, no
letters, so no order bias; it needs a chat template. Sums favour shorter options: compare with
the ``blind`` control, which the same protocol supports.

``cdviz record`` runs the same plan and scoring on its own forward, so both agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch
from PIL import Image

from cdviz.conversation import IGNORE, DataError, Example, encode
from cdviz.errors import OptionError
from cdviz.models.base import Adapter, AdapterError, format_choice_prompt
from cdviz.probes.probeset import ProbeSet, Skip
from cdviz.prompts import CAPTION_PROMPT, MATCH_QUESTION, match_answer, match_texts
from cdviz.types import DEFAULT_QUESTION, ProbeError, ProbeItem

PROTOCOLS = ("letters", "likelihood", "match")



@dataclass(frozen=True)
class Query:
    """One prompt to the model. For choice items ``order`` lists the original option index shown
    at each letter; for match2x2 items ``caption`` / ``image`` name the pair being scored."""

    uid: str
    kind: str
    image: int
    text: str
    order: tuple[int, ...] = ()
    caption: int = -1
    correct_letter: int = -1
    expect_yes: bool = False  # match queries: whether "yes" is the right answer


def plan_queries(item: ProbeItem, protocol: str = "letters") -> list[Query]:
    """The queries one item is asked (see the module docstring); the first is the recorded one."""
    if item.kind == "choice" and protocol == "match":
        queries = [Query(item.uid, "match", 0, text, caption=k,
                         expect_yes=match_answer(item.question, item.options, item.correct, k) == "yes")
                   for k, text in match_texts(item.question, item.options)]
        return sorted(queries, key=lambda q: q.caption != item.correct)  # the true option's query first
    if item.kind == "choice":
        n = len(item.options)
        queries = []
        for shift in range(n):
            order = tuple((shift + k) % n for k in range(n))  # letter k shows option order[k]
            shown = [item.options[j] for j in order]
            queries.append(
                Query(item.uid, "choice", 0, format_choice_prompt(item.question, shown), order,
                      correct_letter=order.index(item.correct))
            )
        return queries
    return [
        Query(item.uid, "match2x2", i, MATCH_QUESTION.format(caption=item.options[c]), caption=c)
        for i in range(2)
        for c in range(2)
    ]


def load_image(probes: ProbeSet, item: ProbeItem, index: int) -> Image.Image:
    path = probes.image_path(item, index)
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except FileNotFoundError as e:
        raise ProbeError(f"probe item {item.uid!r}: image {path} not found; restore it or pass --skip-bad") from e
    except OSError as e:
        raise ProbeError(f"probe item {item.uid!r}: image {path} is unreadable ({e}); replace it or pass --skip-bad") from e


def yes_token_id(adapter: Adapter) -> int:
    """The first token of the model's "Yes" answer ("yes" when it cannot write "Yes")."""
    return adapter.answer_token_id("Yes", "yes")


def no_token_id(adapter: Adapter) -> int:
    """The first token of the model's "No" answer ("no" when it cannot write "No")."""
    return adapter.answer_token_id("No", "no")


def _spelling_ids(adapter: Adapter, words: Sequence[str]) -> list[int]:
    """First answer tokens of the spellings of one answer the model can write (distinct ids)."""
    ids = []
    for w in words:
        try:
            ids.append(adapter.answer_token_id(w))
        except AdapterError:
            continue
    if not ids:
        raise AdapterError(f"the tokenizer can write none of {', '.join(map(repr, words))} as an answer; "
                           "the match protocol cannot score this model (use --protocol letters)")
    return list(dict.fromkeys(ids))


def yes_no_log_odds(adapter: Adapter, logits: torch.Tensor) -> torch.Tensor:
    """[Q] log P(yes) - log P(no) from answer-position logits [Q, V], each summed over spellings."""
    yes = _spelling_ids(adapter, ("Yes", "yes"))
    no = _spelling_ids(adapter, ("No", "no"))
    logp = torch.log_softmax(logits.float(), -1)
    return torch.logsumexp(logp[:, yes], -1) - torch.logsumexp(logp[:, no], -1)


def score_queries(adapter: Adapter, queries: Sequence[Query], answer_logits: torch.Tensor) -> list[dict]:
    """Outcome rows from the logits at each query's answer position ([Q, V]).

    match rows: score = log-odds of yes, chosen = 1 if judged yes, correct = judged right,
    margin = the log-odds towards the right answer, caption = the option (-1: a yes/no question).
    """
    logits = answer_logits.float()
    rows = []
    yes_id = None
    match = [k for k, q in enumerate(queries) if q.kind == "match"]
    odds = dict(zip(match, yes_no_log_odds(adapter, logits[match]).tolist())) if match else {}
    for k, (q, lg) in enumerate(zip(queries, logits)):
        if q.kind == "match":
            s = odds[k]
            rows.append({
                "uid": q.uid, "kind": q.kind, "order": "match", "chosen": int(s > 0),
                "correct": (s > 0) == q.expect_yes, "margin": s if q.expect_yes else -s,
                "caption": q.caption, "image": q.image, "score": s,
            })
        elif q.kind == "choice":
            n = len(q.order)
            letter_logits = lg[adapter.letter_token_ids(n)]  # [n]
            chosen_letter = int(letter_logits.argmax())
            others = torch.cat([letter_logits[: q.correct_letter], letter_logits[q.correct_letter + 1:]])
            rows.append({
                "uid": q.uid, "kind": q.kind, "order": _order_name(q.order),
                "chosen": q.order[chosen_letter], "correct": chosen_letter == q.correct_letter,
                "margin": float(letter_logits[q.correct_letter] - others.max()),
                "caption": -1, "image": q.image, "score": float("nan"),
            })
        else:
            yes_id = yes_token_id(adapter) if yes_id is None else yes_id
            rows.append({
                "uid": q.uid, "kind": q.kind, "order": "", "chosen": -1, "correct": False, "margin": float("nan"),
                "caption": q.caption, "image": q.image, "score": float(torch.log_softmax(lg, -1)[yes_id]),
            })
    return rows


def _order_name(order: tuple[int, ...]) -> str:
    """"01" for the original order, "10" for two options swapped, "1230" etc. for rotations."""
    return "".join(str(j) for j in order)


@torch.no_grad()
def flat_image(image: Image.Image) -> Image.Image:
    """An image of ``image``'s size filled with its mean colour."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.float64).reshape(-1, 3)
    mean = tuple(int(round(v)) for v in pixels.mean(0)) if len(pixels) else (0, 0, 0)
    return Image.new("RGB", image.size, mean)


@torch.inference_mode()  # scoring only: no autograd graph, less memory
def answer_logits(adapter: Adapter, images: list[Image.Image], texts: list[str], uids: list[str]) -> torch.Tensor:
    """[B, V] logits at each sample's answer position from one SDPA forward."""
    batch = adapter.build_batch(images, texts, uids).to(adapter.model.device, adapter.model.dtype)
    out = adapter.model(**batch.inputs, use_cache=False)
    pos = batch.answer_pos
    logits = out.logits[torch.arange(len(pos), device=pos.device), pos].float().cpu()
    check_finite(adapter, logits, uids)
    return logits


def model_name(adapter: Adapter) -> str:
    """The model a message is about: its local directory, else its class."""
    return getattr(adapter, "source", "") or adapter.model.__class__.__name__


def check_finite(adapter: Adapter, values: torch.Tensor, uids: Sequence[str], what: str = "answer logits") -> None:
    """AdapterError naming the model and the items whose rows of ``values`` hold NaN or inf."""
    ok = torch.isfinite(values.reshape(len(uids), -1)).all(-1).tolist()
    bad = list(dict.fromkeys(u for u, fine in zip(uids, ok) if not fine))
    if bad:
        raise AdapterError(f"model {model_name(adapter)}: item(s) {', '.join(map(repr, bad))}: the {what} have NaN or "
                           "inf values, so no answer can be scored (broken weights or inputs?); fix or re-export the "
                           "model, or pass --skip-bad to record such items as skips")


def evaluate(
    adapter: Adapter,
    probes: ProbeSet,
    *,
    batch_size: int = 8,
    skip_bad: bool = False,
    blind: bool = False,
    protocol: str = "letters",
    progress: Callable[[int], None] | None = None,
) -> tuple[pd.DataFrame, list[Skip]]:
    """Outcome rows (one per query) for every item, and the items skipped with their reasons.

    ``blind`` is the text-only control: every image becomes a flat image of its own mean colour
    (same size, no objects), so any accuracy above chance comes from the texts alone, e.g. a
    negative caption that is always the longer one.
    """
    if protocol not in PROTOCOLS:
        raise OptionError(f"--protocol {protocol!r}: choose one of {', '.join(PROTOCOLS)}")
    if protocol == "likelihood":
        return _evaluate_likelihood(adapter, probes, batch_size=batch_size, skip_bad=skip_bad, blind=blind,
                                    progress=progress)
    rows: list[dict] = []
    skipped: list[Skip] = []
    pending: list[tuple[Query, Image.Image]] = []

    def score(batch: list[tuple[Query, Image.Image]]) -> list[dict]:
        qs = [q for q, _ in batch]
        return score_queries(adapter, qs, answer_logits(adapter, [img for _, img in batch], [q.text for q in qs],
                                                        [q.uid for q in qs]))

    def flush() -> None:
        rows.extend(_score_or_skip(score, pending, lambda one: one[0].uid, skip_bad, skipped))
        pending.clear()

    for item in probes:
        try:
            images = _item_images(probes, item, blind)
        except ProbeError as e:
            if not skip_bad:
                raise
            skipped.append(Skip(where=item.uid, reason=str(e)))
            if progress:
                progress(1)
            continue
        for q in plan_queries(item, protocol):
            pending.append((q, images[q.image]))
            if len(pending) >= batch_size:
                flush()
        if progress:
            progress(1)
    flush()
    return _frame(rows, probes, skipped), skipped


def _item_images(probes: ProbeSet, item: ProbeItem, blind: bool) -> list[Image.Image]:
    images = [load_image(probes, item, k) for k in range(len(item.images))]
    return [flat_image(img) for img in images] if blind else images


def _score_or_skip(score: Callable[[list], list[dict]], batch: list, uid: Callable[[Any], str], skip_bad: bool,
                   skipped: list[Skip]) -> list[dict]:
    """``score(batch)``; if a bad sample breaks the batch and ``skip_bad`` is set, the samples are
    scored one by one so the rest of the batch still counts, and the bad ones become skips."""
    if not batch:
        return []
    try:
        return score(batch)
    except AdapterError:
        if not skip_bad:
            raise
    rows: list[dict] = []
    for one in batch:
        if any(s.where == uid(one) for s in skipped):
            continue  # another query of this item failed already: one skip per item
        try:
            rows.extend(score([one]))
        except AdapterError as e:
            skipped.append(Skip(where=uid(one), reason=str(e)))
    return rows


def _frame(rows: list[dict], probes: ProbeSet, skipped: list[Skip]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=_COLUMNS)
    bad_uids = {s.where for s in skipped}
    frame = frame[~frame.uid.isin(bad_uids)].reset_index(drop=True)
    meta = {i.uid: i for i in probes}
    frame.insert(1, "category", [meta[u].category for u in frame.uid])
    frame.insert(2, "skill", [meta[u].skill for u in frame.uid])
    return frame


@torch.no_grad()
@torch.inference_mode()  # scoring only: no autograd graph, less memory
def answer_loglik(adapter: Adapter, images: list[Image.Image], prompts: list[str], answers: list[str]) -> list[float]:
    """Summed log-probability of each answer's tokens (special tokens such as EOS excluded) after
    its image and prompt, in the model's chat format."""
    examples = [Example(f"q{k}", [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": p}]},
                                  {"role": "assistant", "content": [{"type": "text", "text": a}]}], img)
                for k, (img, p, a) in enumerate(zip(images, prompts, answers))]
    try:
        enc = encode(adapter, examples).to(adapter.model.device, adapter.model.dtype)
    except DataError as e:
        raise AdapterError(f"the likelihood protocol cannot score this model's answers: {e}") from e
    logits = adapter.model(**enc.inputs, use_cache=False).logits.float()
    logp = torch.log_softmax(logits[:, :-1], -1)
    labels = enc.labels[:, 1:].clone()
    special = torch.tensor(sorted(adapter.tokenizer.all_special_ids), device=labels.device)
    labels[torch.isin(labels, special)] = IGNORE
    keep = labels != IGNORE
    picked = logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * keep).sum(-1).cpu().tolist()


def _evaluate_likelihood(adapter: Adapter, probes: ProbeSet, *, batch_size: int, skip_bad: bool, blind: bool,
                         progress: Callable[[int], None] | None) -> tuple[pd.DataFrame, list[Skip]]:
    """One outcome row per choice item: the option with the highest answer log-likelihood is chosen."""
    rows: list[dict] = []
    skipped: list[Skip] = []
    pending: list[tuple[ProbeItem, Image.Image]] = []

    def score(batch: list[tuple[ProbeItem, Image.Image]]) -> list[dict]:
        images, prompts, answers = [], [], []
        for item, img in batch:
            prompt = CAPTION_PROMPT if item.question == DEFAULT_QUESTION else item.question
            images += [img] * len(item.options)
            prompts += [prompt] * len(item.options)
            answers += list(item.options)
        scores = answer_loglik(adapter, images, prompts, answers)
        check_finite(adapter, torch.tensor(scores, dtype=torch.float32),
                     [item.uid for item, _ in batch for _ in item.options], "answer log-likelihoods")
        out, k = [], 0
        for item, _ in batch:
            s = torch.tensor(scores[k:k + len(item.options)])
            k += len(item.options)
            others = torch.cat([s[:item.correct], s[item.correct + 1:]])
            chosen = int(s.argmax())
            out.append({"uid": item.uid, "kind": "choice", "order": "likelihood", "chosen": chosen,
                        "correct": chosen == item.correct, "margin": float(s[item.correct] - others.max()),
                        "caption": -1, "image": 0, "score": float(s[item.correct])})
        return out

    def flush() -> None:
        rows.extend(_score_or_skip(score, pending, lambda one: one[0].uid, skip_bad, skipped))
        pending.clear()

    for item in probes:
        if item.kind != "choice":
            skipped.append(Skip(where=item.uid, reason=f"{item.kind} items have no likelihood protocol; "
                                "evaluate them with --protocol letters"))
        else:
            try:
                pending.append((item, _item_images(probes, item, blind)[0]))
            except ProbeError as e:
                if not skip_bad:
                    raise
                skipped.append(Skip(where=item.uid, reason=str(e)))
            if sum(len(i.options) for i, _ in pending) >= batch_size:
                flush()
        if progress:
            progress(1)
    flush()
    return _frame(rows, probes, skipped), skipped


_COLUMNS = ["uid", "kind", "order", "chosen", "correct", "margin", "caption", "image", "score"]


def item_outcomes(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per item: choice items get accuracy over orders and ``consistent``; match items
    ``pairwise`` and ``strict`` (accuracy = pairwise); match2x2 items Winoground text / image / group."""
    out = []
    blank = {"pairwise": None, "strict": None}
    for uid, g in frame.groupby("uid", sort=False):
        first = g.iloc[0]
        if first.kind == "match":
            pairwise, margin = _match_item(g)
            out.append({"uid": uid, "category": first.category, "skill": first.skill, "kind": "match",
                        "accuracy": float(pairwise), "consistent": None, "correct_first_order": None,
                        "margin": margin, "text": None, "image": None, "group": None,
                        "pairwise": pairwise, "strict": bool(g.correct.all())})
        elif first.kind == "choice":
            first_order = g[g.order == g.order.min()].iloc[0]
            out.append({"uid": uid, "category": first.category, "skill": first.skill, "kind": "choice",
                        "accuracy": float(g.correct.mean()), "consistent": bool(g.correct.all()),
                        "correct_first_order": bool(first_order.correct), "margin": float(g.margin.mean()),
                        "text": None, "image": None, "group": None, **blank})
        else:
            s = {(int(r.caption), int(r.image)): r.score for r in g.itertuples()}
            text = s[0, 0] > s[1, 0] and s[1, 1] > s[0, 1]
            image = s[0, 0] > s[0, 1] and s[1, 1] > s[1, 0]
            out.append({"uid": uid, "category": first.category, "skill": first.skill, "kind": "match2x2",
                        "accuracy": float("nan"), "consistent": None, "correct_first_order": None,
                        "margin": float("nan"), "text": bool(text), "image": bool(image), "group": bool(text and image),
                        **blank})
    return pd.DataFrame(out)


def _match_item(g: pd.DataFrame) -> tuple[bool, float]:
    """(pairwise, margin) of one item's match rows: the true option's log-odds against the best
    false one's. A yes/no question has one row whose two options score s and -s."""
    if len(g) == 1 and int(g.caption.iloc[0]) == -1:
        return bool(g.correct.iloc[0]), float(g.margin.iloc[0])
    expect_yes = (g.chosen == 1) == g.correct
    true, false = g.score[expect_yes], g.score[~expect_yes]
    if len(true) != 1 or not len(false):
        raise ValueError(f"item {g.uid.iloc[0]}: match rows need one true and some false options")
    margin = float(true.iloc[0] - false.max())
    return margin > 0, margin


def summarize(frame: pd.DataFrame) -> dict:
    """Accuracy tables by category and skill (percent), plus Winoground scores where present."""
    items = item_outcomes(frame)
    summary: dict = {"n_items": int(len(items))}
    choice_q = frame[frame.kind == "choice"]
    choice_i = items[items.kind == "choice"]
    for key in ("category", "skill"):
        table = {}
        for name, g in choice_q.groupby(key):
            per_order = {o: 100 * float(go.correct.mean()) for o, go in g.groupby("order")}
            gi = choice_i[choice_i[key] == name]
            table[name] = {
                "n": int(len(gi)),
                "accuracy_per_order": per_order,
                "accuracy": 100 * float(g.correct.mean()),
                "consistent": 100 * float(gi.consistent.mean()),
            }
        summary[f"by_{key}"] = table
    if len(choice_i):
        perception = choice_i[choice_i.skill == "perception"]
        summary["consistent_mean_over_categories"] = (
            float(pd.Series({c: v["consistent"] for c, v in summary["by_category"].items()
                             if c in set(perception.category)}).mean()) if len(perception) else None
        )
    matched = items[items.kind == "match"]
    if len(matched):
        summary["protocol"] = "match"
        for key in ("category", "skill"):
            summary[f"by_{key}"] = {**summary.get(f"by_{key}", {}), **{
                name: {"n": int(len(g)), "pairwise": 100 * float(g.pairwise.astype(bool).mean()),
                       "strict": 100 * float(g.strict.astype(bool).mean()),
                       "accuracy": 100 * float(g.pairwise.astype(bool).mean())}
                for name, g in matched.groupby(key)}}
        perception = matched[matched.skill == "perception"]
        for measure in ("pairwise", "strict"):
            summary[f"{measure}_mean_over_categories"] = (
                float(perception.groupby("category")[measure].apply(lambda v: 100 * v.astype(bool).mean()).mean())
                if len(perception) else None)
    match_i = items[items.kind == "match2x2"]
    if len(match_i):
        summary["winoground"] = {
            "n": int(len(match_i)),
            **{k: 100 * float(match_i[k].astype(bool).mean()) for k in ("text", "image", "group")},
        }
    return summary
