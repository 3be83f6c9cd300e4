"""Subject's last-token index and target ids for a GPT-2-style and a Llama-style tokenizer (method.md §6)."""
import pytest

from massedit.testing import tiny_tokenizer
from massedit.tokens import authors_subject_last, encode_prompt, encode_text, fill, target_ids

CASES = [
    ("The capital of {} is", "France"),
    ("{} is located in the continent of", "Italy"),
    ("The official language of {} is", "Germany"),
    ("What is the capital of {}?", "New Zealand"),
    ("{} plays", "Serena Williams"),
]


@pytest.mark.parametrize("style", ["gpt2", "llama"])
@pytest.mark.parametrize("template,subject", CASES)
def test_subject_last_token_covers_the_subject_end(style, template, subject):
    tok = tiny_tokenizer(style)
    enc = encode_prompt(tok, template, subject, add_bos=False)
    text, (start, end) = fill(template, subject)
    offsets = tok(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    a, b = offsets[enc.subject_last]
    assert a < end <= b or (a < end and b >= end - 1)  # the token reaches the subject's last character
    # every later token starts at or after the subject's end
    assert all(o[0] >= end - (1 if style == "llama" else 0) for o in offsets[enc.subject_last + 1 :])


@pytest.mark.parametrize("style,llama_class", [("gpt2", False), ("llama", True)])
@pytest.mark.parametrize("template,subject", CASES)
def test_offset_rule_agrees_with_authors_rule(style, llama_class, template, subject):
    tok = tiny_tokenizer(style)
    enc = encode_prompt(tok, template, subject, add_bos=False)
    assert enc.subject_last == authors_subject_last(tok, template, subject, llama_class=llama_class)


@pytest.mark.parametrize("style", ["gpt2", "llama"])
def test_bos_shifts_the_index_by_one(style):
    tok = tiny_tokenizer(style)
    without = encode_prompt(tok, "The capital of {} is", "France", add_bos=False)
    with_bos = encode_prompt(tok, "The capital of {} is", "France", add_bos=True)
    assert with_bos.ids[0] == tok.bos_token_id
    assert with_bos.ids[1:] == without.ids
    assert with_bos.subject_last == without.subject_last + 1


@pytest.mark.parametrize("style", ["gpt2", "llama"])
def test_target_ids_continue_the_prompt(style):
    tok = tiny_tokenizer(style)
    prompt = "The capital of France is"
    ids = target_ids(tok, prompt, "Paris")
    assert encode_text(tok, prompt) + ids == encode_text(tok, prompt + " Paris")
    assert tok.decode(ids).strip() == "Paris"
    assert target_ids(tok, prompt, " Paris") == ids  # a leading space in the data changes nothing


def test_template_needs_exactly_one_slot():
    with pytest.raises(ValueError, match="exactly one"):
        fill("{} and {}", "x")
