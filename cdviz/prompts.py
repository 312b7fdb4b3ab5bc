"""The prompt wording cdviz asks models with, in one place: evaluation, recording and the
shapes-world training data all use it, so a model is evaluated in the format it was trained on.

    format_choice_prompt("Which caption ...?", ["a red circle.", "a blue square."])
    -> "Which caption ...? (A) a red circle. (B) a blue square. Answer with the option's letter ..."
"""

from __future__ import annotations

from typing import Sequence

from cdviz.errors import CdvizError

LETTERS = "ABCDEFGH"
ANSWER_INSTRUCTION = "Answer with the option's letter from the given choices directly."
CAPTION_PROMPT = "Describe the image."  # the caption request, in training data and likelihood scoring


class PromptError(CdvizError, ValueError):
    """A prompt that cannot be built (too many options)."""


def format_choice_prompt(question: str, options: Sequence[str]) -> str:
    """The paper's two-choice wording, generalised to N options: "Q (A) x (B) y Answer with ..."."""
    if len(options) > len(LETTERS):
        raise PromptError(f"{len(options)} options; at most {len(LETTERS)} are supported")
    opts = " ".join(f"({LETTERS[i]}) {o}" for i, o in enumerate(options))
    return f"{question} {opts} {ANSWER_INSTRUCTION}"
