"""Fluency: the word tokenizer, n-gram entropy on hand-computed text, greedy generation with left padding."""
import math

import pytest
import torch

from massedit.evaluation.counterfact import evaluate_records
from massedit.evaluation.fluency import generate_greedy, ngram_entropy, text_entropy, word_tokenize
from massedit.testing import tiny_model, tiny_tokenizer
from massedit.tokens import encode_plain

# (model type, tokenizer style, tokenizer has a pad token): rotary and absolute positions, both
# tokenizer conventions, and the EOS fallback when there is no pad token.
SETUPS = [("llama", "gpt2", True), ("llama", "llama", True), ("gpt2", "gpt2", False)]


@pytest.fixture(scope="module", params=SETUPS, ids=lambda s: "-".join(map(str, s)))
def lm(request):
    arch, style, with_pad = request.param
    tokenizer = tiny_tokenizer(style, with_pad=with_pad)
    return tiny_model(arch, tokenizer, seed=1), tokenizer


@pytest.mark.parametrize(
    "text, tokens",
    [
        ("I don't know.", ["I", "do", "n't", "know", "."]),
        ('He said, "It\'s 3.14!"', ["He", "said", ",", "``", "It", "'s", "3.14", "!", "''"]),
        ("We can't, won't, shouldn't.", ["We", "ca", "n't", ",", "wo", "n't", ",", "should", "n't", "."]),
        ("I cannot go -- (really) now?", ["I", "can", "not", "go", "--", "(", "really", ")", "now", "?"]),
        ("It cost $1,000: a well-known fact.", ["It", "cost", "$", "1,000", ":", "a", "well-known", "fact", "."]),
        # Sentence-internal periods split only at sentence ends; abbreviations and initials stay whole.
        ("Mr. Smith visited the U.S. in May. It rained.",
         ["Mr.", "Smith", "visited", "the", "U.S.", "in", "May", ".", "It", "rained", "."]),
        ("She'll say they're here...", ["She", "'ll", "say", "they", "'re", "here", "..."]),
        ("", []),
    ],
)
def test_word_tokenize(text, tokens):
    assert word_tokenize(text) == tokens


def test_ngram_entropy_hand_computed():
    tokens = word_tokenize("the cat the cat")
    assert tokens == ["the", "cat", "the", "cat"]
    # Bigrams: (the,cat) ×2, (cat,the) ×1 → f = 2/3, 1/3 → H_2 = log2(3) − 2/3 ≈ 0.918296.
    h2 = math.log2(3) - 2 / 3
    assert ngram_entropy(tokens, 2) == pytest.approx(h2)
    # Trigrams: (the,cat,the), (cat,the,cat), once each → H_3 = 1.
    assert ngram_entropy(tokens, 3) == pytest.approx(1.0)
    # Score = mean(2/3·H_2, 4/3·H_3) = H_2/3 + 2/3 ≈ 0.306099 + 0.666667 = 0.972766.
    assert text_entropy("the cat the cat") == pytest.approx(h2 / 3 + 2 / 3)
    assert text_entropy("the cat the cat") == pytest.approx(0.972766, abs=1e-6)


def test_ngram_entropy_degenerate():
    # One repeated bigram and trigram: zero entropy; too few tokens for any trigram: H_3 = 0.
    assert text_entropy("a a a a a") == 0.0
    assert ngram_entropy(["one", "two"], 3) == 0.0
    # Four distinct bigrams of "a b c d e": H_2 = 2; three distinct trigrams: H_3 = log2 3.
    assert text_entropy("a b c d e") == pytest.approx((2 / 3 * 2 + 4 / 3 * math.log2(3)) / 2)


PROMPTS = [
    "The capital of France is",
    "Rome",
    "Marie Curie was a citizen of Polish origin. She was born in",
    "Italy is",
]


def manual_greedy(model, ids, n, eos):
    ids = list(ids)
    for _ in range(n):
        with torch.no_grad():
            nxt = int(model(torch.tensor([ids])).logits[0, -1].argmax())
        ids.append(nxt)
        if nxt == eos:
            break
    return ids


@pytest.mark.parametrize("add_bos", [False, True])
def test_generate_left_padding_matches_unbatched(lm, add_bos):
    llama, tokenizer = lm
    batched = generate_greedy(llama, tokenizer, PROMPTS, add_bos, max_new_tokens=6, batch_size=4)
    single = [generate_greedy(llama, tokenizer, [p], add_bos, max_new_tokens=6)[0] for p in PROMPTS]
    assert batched == single
    for prompt, text in zip(PROMPTS, batched):
        ids = manual_greedy(llama, encode_plain(tokenizer, prompt, add_bos).ids, 6, tokenizer.eos_token_id)
        assert text == tokenizer.decode(ids, skip_special_tokens=True)
        assert text.startswith(prompt)


def test_generate_truncates_input(lm):
    llama, tokenizer = lm
    prompt = PROMPTS[2]
    ids = encode_plain(tokenizer, prompt, add_bos=False).ids
    assert len(ids) > 4
    (text,) = generate_greedy(llama, tokenizer, [prompt], add_bos=False, max_new_tokens=3, max_input_tokens=4)
    expected = manual_greedy(llama, ids[:4], 3, tokenizer.eos_token_id)
    assert text == tokenizer.decode(expected, skip_special_tokens=True)


def test_evaluate_records_fluency(lm):
    llama, tokenizer = lm
    base = {
        "subject": "France", "prompt": "The capital of {} is", "target_new": "Rome", "target_true": "Paris",
        "paraphrase_prompts": [], "neighborhood": [{"prompt": "Italy is", "target": "Europe"}],
    }
    records = [
        dict(base, case_id=0, generation_prompts=PROMPTS[:2]),
        dict(base, case_id=1, generation_prompts=PROMPTS[2:]),
        dict(base, case_id=2, generation_prompts=[]),
    ]
    rows, summary = evaluate_records(
        llama, tokenizer, records, ["It was. ", "He said. "], add_bos=True, batch_size=3,
        fluency_max_new_tokens=5,
    )
    per_record = []
    for row, rec in zip(rows[:2], records):
        assert len(row["generated_texts"]) == len(rec["generation_prompts"])
        expected = sum(text_entropy(t) for t in row["generated_texts"]) / len(row["generated_texts"])
        assert row["generation_ngram_entropy"] == pytest.approx(expected)
        per_record.append(expected)
    assert rows[2]["generation_ngram_entropy"] is None
    # Fluency: unscaled mean over the records that have generation prompts.
    assert summary["fluency"] == pytest.approx(sum(per_record) / 2)
    assert summary["n_generation_prompts"] == 4
    for row in rows:
        assert len(row["rewrite_prompts_correct"]) == 2 and len(row["neighborhood_prompts_correct"]) == 2
