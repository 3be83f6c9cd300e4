"""Teacher-forced scoring: hand-computed scores on a bigram model, agreement with an unbatched forward
of a tiny random Llama, batch-size invariance."""
import math
from types import SimpleNamespace

import pytest
import torch

from massedit.evaluation.scoring import TargetScore, next_token_argmax, score_targets
from massedit.testing import tiny_model, tiny_tokenizer
from massedit.tokens import encode_plain, target_ids

@pytest.fixture(scope="module", params=["gpt2", "llama"])
def tokenizer(request):
    return tiny_tokenizer(request.param)


@pytest.fixture(scope="module")
def llama(tokenizer):
    return tiny_model("llama", tokenizer, seed=0)


class Bigram(torch.nn.Module):
    """logits[t] = table[input_ids[t]]: every score is a closed-form function of the table."""

    def __init__(self, vocab: int):
        super().__init__()
        self.table = torch.nn.Parameter(torch.zeros(vocab, vocab))

    def forward(self, input_ids, attention_mask=None):
        return SimpleNamespace(logits=self.table[input_ids])


ITEMS = [
    ("The capital of France is", "Paris"),
    ("The Eiffel Tower is located in", "Paris, France"),
    ("Danielle Darrieux speaks", "French and English"),
    ("Rome is the capital of", "Italy"),
    ("Toko Yasuda plays the", "guitar"),
    ("The capital of Italy is", "Rome"),
    ("Marie Curie was a citizen of", "Polish origin"),
    ("The", "piano and the guitar"),
    ("Paris is located in", "France"),
    ("Toko Yasuda", "plays the piano"),
]


def test_bigram_hand_computed(tokenizer):
    prompt, target = "The Eiffel Tower is located in", "Paris, France"
    p_ids = encode_plain(tokenizer, prompt, add_bos=False).ids
    t_ids = target_ids(tokenizer, prompt, target)
    assert len(t_ids) >= 2, t_ids
    V = len(tokenizer)
    model = Bigram(V)
    with torch.no_grad():
        # First target token: its predecessor (the prompt's last token) votes for it with logit 5.
        model.table[p_ids[-1], t_ids[0]] = 5.0
        # Second target token: its predecessor votes for some other token instead.
        wrong = (t_ids[1] + 1) % V
        model.table[t_ids[0], wrong] = 5.0
    (s,) = score_targets(model, tokenizer, [(prompt, target)], add_bos=False)
    assert s.token_ids == t_ids
    assert s.argmax_correct[:2] == [True, False]
    assert not s.exact
    # One logit of 5 among V zeros: p(voted) = e^5 / (e^5 + V - 1), any other token 1 / (e^5 + V - 1);
    # rows not touched above are uniform (1/V) unless a later predecessor repeats an earlier one.
    z = math.exp(5.0) + V - 1
    assert s.logprobs[0] == pytest.approx(5.0 - math.log(z), abs=1e-5)
    assert s.logprobs[1] == pytest.approx(-math.log(z), abs=1e-5)
    expected = []
    for j, prev in enumerate([p_ids[-1]] + t_ids[:-1]):
        row = model.table[prev].detach()
        expected.append(float(row[t_ids[j]] - torch.logsumexp(row, 0)))
    assert s.logprobs == pytest.approx(expected, abs=1e-5)
    assert s.nll == pytest.approx(-sum(expected) / len(expected), abs=1e-6)
    assert s.prob == pytest.approx(math.exp(-s.nll))


def test_all_tokens_right_is_exact(tokenizer):
    prompt, target = "Danielle Darrieux speaks", "French and English"
    p_ids = encode_plain(tokenizer, prompt, add_bos=True).ids
    t_ids = target_ids(tokenizer, prompt, target)
    model = Bigram(len(tokenizer))
    with torch.no_grad():
        for prev, nxt in zip([p_ids[-1]] + t_ids[:-1], t_ids):
            model.table[prev, nxt] += 3.0
    (s,) = score_targets(model, tokenizer, [(prompt, target)], add_bos=True)
    assert s.exact and all(s.argmax_correct)


def test_target_score_fields():
    s = TargetScore(token_ids=[5, 6, 7], logprobs=[-1.0, -2.0, -3.0], argmax_ids=[5, 9, 7])
    assert s.argmax_correct == [True, False, True]
    assert not s.exact
    assert s.nll == pytest.approx(2.0)
    assert s.prob == pytest.approx(math.exp(-2.0))


def manual_scores(model, tokenizer, prompt, target, add_bos):
    p_ids = encode_plain(tokenizer, prompt, add_bos).ids
    t_ids = target_ids(tokenizer, prompt, target)
    with torch.no_grad():
        logits = model(torch.tensor([p_ids + t_ids])).logits[0]
    logp = logits.float().log_softmax(-1)
    pos = [len(p_ids) + j - 1 for j in range(len(t_ids))]
    return t_ids, [float(logp[q, t]) for q, t in zip(pos, t_ids)], [int(logp[q].argmax()) for q in pos]


@pytest.mark.parametrize("add_bos", [False, True])
def test_llama_matches_unbatched_forward(tokenizer, llama, add_bos):
    scores = score_targets(llama, tokenizer, ITEMS, add_bos=add_bos, batch_size=4)
    for (prompt, target), s in zip(ITEMS, scores):
        t_ids, logprobs, argmax = manual_scores(llama, tokenizer, prompt, target, add_bos)
        assert s.token_ids == t_ids
        assert s.argmax_ids == argmax
        assert s.exact == all(a == t for a, t in zip(argmax, t_ids))
        assert s.logprobs == pytest.approx(logprobs, abs=1e-5)


def test_batch_size_invariance(tokenizer, llama):
    one = score_targets(llama, tokenizer, ITEMS, add_bos=True, batch_size=1)
    seven = score_targets(llama, tokenizer, ITEMS, add_bos=True, batch_size=7)
    for a, b in zip(one, seven):
        assert a.token_ids == b.token_ids
        assert a.argmax_ids == b.argmax_ids
        assert a.nll == pytest.approx(b.nll, abs=1e-5)


def test_empty_prompt_without_bos_rejected(tokenizer, llama):
    with pytest.raises(ValueError):
        score_targets(llama, tokenizer, [("", "Paris")], add_bos=False)


def test_next_token_argmax(tokenizer, llama):
    prompts = [p for p, _ in ITEMS]
    got = next_token_argmax(llama, tokenizer, prompts, add_bos=False, batch_size=3)
    for prompt, tok in zip(prompts, got):
        ids = encode_plain(tokenizer, prompt, add_bos=False).ids
        with torch.no_grad():
            assert tok == int(llama(torch.tensor([ids])).logits[0, -1].argmax())
