"""Answer tokens found through real tokenizers built offline: cdviz's word-level one, a
byte-level BPE (GPT-2 style, answers with a leading-space variant) and a SentencePiece-style
unigram, each under a template whose answer follows a space, a newline, or a trailing space."""

from __future__ import annotations

import string
from pathlib import Path
from types import SimpleNamespace

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PretrainedConfig, PreTrainedTokenizerFast

from cdviz.evaluate import no_token_id, yes_token_id
from cdviz.models import AdapterError, load_model
from cdviz.models.base import Adapter
from cdviz.models.tokenizer import (
    LLAVA_CHAT_TEMPLATE,
    QWEN2VL_CHAT_TEMPLATE,
    QWEN2VL_SPECIALS,
    build_word_tokenizer,
)

CHECKPOINTS = Path(__file__).resolve().parents[2] / "checkpoints"

# The answer follows "ASSISTANT:" and a space that belongs to the assistant turn (LLaVA-1.5).
AFTER_SPACE = LLAVA_CHAT_TEMPLATE
# The answer follows the generation prompt's newline (Qwen2-VL, ChatML).
AFTER_NEWLINE = QWEN2VL_CHAT_TEMPLATE
# The generation prompt itself ends in the space, so a BPE merges it into the answer's token.
AFTER_TRAILING_SPACE = AFTER_SPACE.replace("add_generation_prompt %}ASSISTANT:", "add_generation_prompt %}ASSISTANT: ")
TEMPLATES = {"space": AFTER_SPACE, "newline": AFTER_NEWLINE, "trailing_space": AFTER_TRAILING_SPACE}
SPECIALS = ["<pad>", "<unk>", "</s>", "<image>", *QWEN2VL_SPECIALS]


def adapter_for(tokenizer: PreTrainedTokenizerFast, template: str) -> Adapter:
    """An adapter over the tokenizer alone: answer lookup needs no weights."""
    tokenizer.chat_template = template
    adapter = Adapter(SimpleNamespace(config=PretrainedConfig()), tokenizer)
    adapter.source = "test-model"
    return adapter


def wrap(tk: Tokenizer) -> PreTrainedTokenizerFast:
    tk.add_special_tokens(SPECIALS)
    return PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", pad_token="<pad>", eos_token="</s>")


def word_level() -> PreTrainedTokenizerFast:
    return build_word_tokenizer(
        ["USER", "ASSISTANT", "user", "assistant", ":", "x", "Yes", "No", "A", "B", "a", "red", "circle"],
        specials=["<image>", *QWEN2VL_SPECIALS],
    )


def byte_bpe() -> PreTrainedTokenizerFast:
    """Byte-level BPE: every byte is a token, so any word can be written; a few merges make the
    usual whole-word tokens, with and without the leading space ("ĠYes" and "Yes")."""
    merges = [("e", "s"), ("Y", "es"), ("Ġ", "Yes"), ("N", "o"), ("Ġ", "No"), ("Ġ", "A"), ("Ġ", "B"),
              ("a", "y"), ("M", "ay"), ("Ġ", "May"), ("b", "e")]
    vocab = {t: i for i, t in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    for a, b in merges:
        vocab[a + b] = len(vocab)
    tk = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    return wrap(tk)


def sentencepiece() -> PreTrainedTokenizerFast:
    """A SentencePiece-style unigram: spaces become "▁" and belong to the next piece."""
    chars = sorted(set(string.ascii_letters + string.digits + string.punctuation)) + ["\n", "▁"]
    words = ["▁Yes", "Yes", "▁No", "No", "▁A", "▁B", "▁May"]
    pieces = [("<unk>", 0.0)] + [(c, -5.0) for c in chars] + [(w, -1.0) for w in words]
    tk = Tokenizer(models.Unigram(pieces, unk_id=0, byte_fallback=False))
    tk.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tk.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    return wrap(tk)


TOKENIZERS = {"word": word_level, "bpe": byte_bpe, "sentencepiece": sentencepiece}

# (tokenizer, template) -> the tokens of "Yes" as the model writes it after the prompt
EXPECTED_YES = {
    ("word", "space"): ["Yes"], ("word", "newline"): ["Yes"], ("word", "trailing_space"): ["Yes"],
    ("bpe", "space"): ["ĠYes"], ("bpe", "newline"): ["Yes"], ("bpe", "trailing_space"): ["Yes"],
    ("sentencepiece", "space"): ["▁Yes"], ("sentencepiece", "newline"): ["Yes"],
    ("sentencepiece", "trailing_space"): ["Yes"],
}


@pytest.mark.parametrize("tok_name,template", sorted(EXPECTED_YES))
def test_yes_is_the_whole_word_as_the_template_writes_it(tok_name, template):
    tok = TOKENIZERS[tok_name]()
    adapter = adapter_for(tok, TEMPLATES[template])
    ids = adapter.answer_token_ids("Yes")
    assert tok.convert_ids_to_tokens(ids) == EXPECTED_YES[tok_name, template]
    assert adapter.answer_token_id("Yes") == ids[0]
    assert yes_token_id(adapter) == ids[0]
    assert tok.decode([no_token_id(adapter)]).strip() == "No"


@pytest.mark.parametrize("tok_name", sorted(TOKENIZERS))
@pytest.mark.parametrize("template", ["space", "newline"])
def test_the_answer_tokens_continue_the_prompt(tok_name, template):
    # Appending the answer's tokens to the prompt's gives the finished exchange's tokens.
    tok = TOKENIZERS[tok_name]()
    adapter = adapter_for(tok, TEMPLATES[template])
    prompt, full = adapter._answer_context("Yes")
    prompt_ids = tok(prompt, add_special_tokens=False).input_ids
    full_ids = tok(full, add_special_tokens=False).input_ids
    ids = adapter.answer_token_ids("Yes")
    assert full_ids[:len(prompt_ids) + len(ids)] == prompt_ids + ids


@pytest.mark.parametrize("template", ["space", "newline"])
def test_multi_token_answer_scores_its_first_token(template):
    tok = byte_bpe()
    adapter = adapter_for(tok, TEMPLATES[template])
    tokens = tok.convert_ids_to_tokens(adapter.answer_token_ids("Maybe"))
    assert tokens == (["ĠMay", "be"] if template == "space" else ["May", "be"])
    assert tok.convert_ids_to_tokens(adapter.answer_token_id("Maybe")) == tokens[0]
    # no merges at all: every byte its own token, the space before the word is not the answer
    tokens = tok.convert_ids_to_tokens(adapter.answer_token_ids("Zq"))
    assert tokens == ["Z", "q"]


def test_multi_word_answer_on_word_level():
    tok = word_level()
    adapter = adapter_for(tok, AFTER_SPACE)
    assert tok.convert_ids_to_tokens(adapter.answer_token_ids("a red circle")) == ["a", "red", "circle"]


@pytest.mark.parametrize("tok_name,expected", [("word", ["A", "B"]), ("bpe", ["ĠA", "ĠB"]),
                                               ("sentencepiece", ["▁A", "▁B"])])
def test_letters_on_top_of_answer_tokens(tok_name, expected):
    tok = TOKENIZERS[tok_name]()
    adapter = adapter_for(tok, AFTER_SPACE)
    assert tok.convert_ids_to_tokens(adapter.letter_token_ids(2)) == expected


def test_refuses_only_a_word_the_tokenizer_cannot_write():
    adapter = adapter_for(word_level(), AFTER_SPACE)
    with pytest.raises(AdapterError, match=r"test-model.*'Maybe'"):
        adapter.answer_token_ids("Maybe")
    with pytest.raises(AdapterError, match=r"test-model.*'Maybe'/'maybe'"):
        adapter.answer_token_id("Maybe", "maybe")
    # a lower-case spelling is used when the capitalised one is missing
    tok = build_word_tokenizer(["USER", "ASSISTANT", ":", "x", "yes"], specials=["<image>"])
    adapter = adapter_for(tok, AFTER_SPACE)
    assert tok.convert_ids_to_tokens(yes_token_id(adapter)) == "yes"
    with pytest.raises(AdapterError, match=r"test-model.*'No'/'no'"):
        no_token_id(adapter)


def test_tiny_models_answer_yes_no_and_letters(tiny_model_dir, arch):
    adapter = load_model(tiny_model_dir(arch))
    tok = adapter.tokenizer
    assert tok.convert_ids_to_tokens([yes_token_id(adapter), no_token_id(adapter)]) == ["Yes", "No"]
    assert tok.convert_ids_to_tokens(adapter.letter_token_ids(4)) == ["A", "B", "C", "D"]


def test_bundled_teacher_answers_yes():
    adapter = load_model(CHECKPOINTS / "teacher")
    assert adapter.tokenizer.convert_ids_to_tokens(yes_token_id(adapter)) == "Yes"
    assert adapter.tokenizer.convert_ids_to_tokens(no_token_id(adapter)) == "No"
