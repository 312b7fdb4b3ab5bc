"""The prompt wording cdviz asks models with, in one place: evaluation, recording and the
shapes-world training data all use it, so a model is evaluated in the format it was trained on.

    format_choice_prompt("Which caption ...?", ["a red circle.", "a blue square."])
    -> "Which caption ...? (A) a red circle. (B) a blue square. Answer with the option's letter ..."
    match_texts(DEFAULT_QUESTION, ["a red circle.", "a blue square."])
    -> ['Does this image show "a red circle."? Answer yes or no.', 'Does this image show ...']
"""

from __future__ import annotations

from typing import Sequence

from cdviz.errors import CdvizError
from cdviz.types import DEFAULT_QUESTION

LETTERS = "ABCDEFGH"
ANSWER_INSTRUCTION = "Answer with the option's letter from the given choices directly."
CAPTION_PROMPT = "Describe the image."  # the caption request, in training data and likelihood scoring

# Image-text matching (VQAScore-style): one yes/no query per option. Captions are asked about
# directly; a question's option is asked about as a proposed answer; a yes/no question is asked
# as it stands, so its one answer decides between its two options.
MATCH_QUESTION = "Does this image show \"{caption}\"? Answer yes or no."
VERIFY_QUESTION = "{question} Is the answer \"{option}\"? Answer yes or no."
YES_NO = ("yes", "no")


class PromptError(CdvizError, ValueError):
    """A prompt that cannot be built (too many options)."""


def format_choice_prompt(question: str, options: Sequence[str]) -> str:
    """The paper's two-choice wording, generalised to N options: "Q (A) x (B) y Answer with ..."."""
    if len(options) > len(LETTERS):
        raise PromptError(f"{len(options)} options; at most {len(LETTERS)} are supported")
    opts = " ".join(f"({LETTERS[i]}) {o}" for i, o in enumerate(options))
    return f"{question} {opts} {ANSWER_INSTRUCTION}"


def is_yes_no(options: Sequence[str]) -> bool:
    """Whether the options are exactly yes and no (any case, any order)."""
    return sorted(o.strip().lower() for o in options) == sorted(YES_NO)


def match_texts(question: str, options: Sequence[str]) -> list[tuple[int, str]]:
    """(option index, yes/no query) pairs of the match protocol for one item.

    A yes/no question gives one pair with index -1: its "yes" probability scores the "yes"
    option and its "no" probability the "no" option.
    """
    if question == DEFAULT_QUESTION:
        return [(k, MATCH_QUESTION.format(caption=o)) for k, o in enumerate(options)]
    if is_yes_no(options):
        return [(-1, question)]
    return [(k, VERIFY_QUESTION.format(question=question, option=o)) for k, o in enumerate(options)]


def match_answer(question: str, options: Sequence[str], correct: int, index: int) -> str:
    """The right answer ("yes" / "no") to the match query of option ``index`` (-1: a yes/no question)."""
    if index == -1:
        return options[correct].strip().lower()
    return YES_NO[0] if index == correct else YES_NO[1]
