"""Word-level tokenizers and chat templates for models cdviz builds itself (the shapes world,
tiny test models). Saved as standard HF files, so ``AutoTokenizer.from_pretrained`` and
``AutoProcessor.from_pretrained`` work on the bundled checkpoints without cdviz installed.

Text splits into words and single punctuation characters, the same rule the shapes world uses
to list its vocabulary (``WORD_PATTERN``).
"""

from __future__ import annotations

import re
from typing import Iterable

from tokenizers import Regex, Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

WORD_PATTERN = r"[A-Za-z0-9]+|[^\sA-Za-z0-9]"
BASE_SPECIALS = ("<pad>", "<unk>", "<s>", "</s>")

# A LLaVA-1.5 style template ("USER: <image>\n... ASSISTANT: ...</s>"): the generation prompt
# ends in "ASSISTANT:", so the answer letter is the next token.
LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: "
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}<image>\n{% else %}{{ c['text'] }}{% endif %}{% endfor %}"
    " {% else %}ASSISTANT: {% for c in message['content'] %}{{ c['text'] }}{% endfor %}</s>{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
LLAVA_TEMPLATE_WORDS = ("USER", "ASSISTANT", ":", "\n")

# The Qwen2-VL layout with role words instead of <|im_start|> markers.
QWEN2VL_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% else %}{{ c['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
QWEN2VL_SPECIALS = ("<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")
QWEN2VL_TEMPLATE_WORDS = ("user", "assistant", "system", "\n")


def words(text: str) -> list[str]:
    """Split ``text`` the way the word-level tokenizer does."""
    return re.findall(WORD_PATTERN, text)


def build_word_tokenizer(
    vocabulary: Iterable[str],
    *,
    specials: Iterable[str] = (),
    extra_special_tokens: dict[str, str] | None = None,
    chat_template: str | None = None,
) -> PreTrainedTokenizerFast:
    """A word-level HF tokenizer over ``vocabulary`` (order kept, duplicates dropped).

    Ids: the four base specials first (<pad>=0, <unk>=1, <s>=2, </s>=3), then ``specials``,
    then the words. Newline is a word of its own so chat templates round-trip.
    """
    tokens: list[str] = []
    for t in (*BASE_SPECIALS, *specials, "\n", *vocabulary):
        if t not in tokens:
            tokens.append(t)
    vocab = {t: i for i, t in enumerate(tokens)}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    # Newlines are kept as tokens; other whitespace only separates words.
    tk.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r"\n"), behavior="isolated"),
            pre_tokenizers.Split(Regex(r"[ \t\r]+"), behavior="removed"),
            pre_tokenizers.Split(Regex(r"[^\sA-Za-z0-9]"), behavior="isolated"),
        ]
    )
    special_list = [t for t in (*BASE_SPECIALS, *specials)]
    # Registered on the backend so they match before the pre-tokenizer splits their punctuation.
    tk.add_special_tokens(special_list)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk,
        unk_token="<unk>",
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        extra_special_tokens=extra_special_tokens or {},
    )
    tok.padding_side = "right"
    if chat_template is not None:
        tok.chat_template = chat_template
    return tok


def default_vocabulary() -> list[str]:
    """The shapes world's words plus every word of cdviz's own prompts and the option letters."""
    from cdviz.probes.shapes import VOCABULARY
    from cdviz.prompts import ANSWER_INSTRUCTION, LETTERS, MATCH_QUESTION, VERIFY_QUESTION
    from cdviz.types import DEFAULT_QUESTION

    prompt_words = words(" ".join([ANSWER_INSTRUCTION, MATCH_QUESTION, DEFAULT_QUESTION, "Yes No yes no"]))
    # New words go last, so the ids of models built before they were added stay valid.
    later = words(VERIFY_QUESTION.format(question="", option=""))
    return list(dict.fromkeys([*LETTERS, *prompt_words, *VOCABULARY, *later]))
