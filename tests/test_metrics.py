"""Metrics on hand-worked numbers, the prefix protocol's item counts, and an end-to-end summary on a model
whose every score is known in closed form."""
import math
from types import SimpleNamespace

import pytest
import torch

from massedit.evaluation import metrics
from massedit.evaluation.counterfact import build_items, evaluate_records, known_mask
from massedit.evaluation.scoring import TargetScore

PREFIXES = [f"Prefix number {i} says. " for i in range(10)]

RECORD = {
    "case_id": 7, "subject": "France", "prompt": "The capital of {} is",
    "target_new": "Rome", "target_true": "Paris", "relation": "capital",
    "paraphrase_prompts": ["Tell me. France's capital city is", "Whatever. The capital city of France is"],
    "neighborhood": [
        {"prompt": "The capital of Italy is", "target": "Rome"},
        {"prompt": "The capital of Spain is", "target": "Madrid"},
        {"prompt": "The capital of Peru is", "target": "Lima"},
    ],
    "generation_prompts": ["France is known for"],
}


def test_practical_one_wrong_token_is_not_exact():
    right = TargetScore(token_ids=[3, 4], logprobs=[-0.1, -0.2], argmax_ids=[3, 4])
    one_wrong = TargetScore(token_ids=[3, 4], logprobs=[-0.1, -0.2], argmax_ids=[3, 9])
    assert metrics.practical([right, one_wrong]) == [True, False]


def test_lenient_comparisons():
    # Rewrite/paraphrase: new must be at least as likely; a tie is a success.
    assert metrics.lenient_rewrite(1.5, 1.5)
    assert metrics.lenient_rewrite(1.0, 2.0)
    assert not metrics.lenient_rewrite(2.0, 1.0)
    # Neighbourhood: strict, a tie is a failure.
    assert not metrics.lenient_neighborhood(1.5, 1.5)
    assert metrics.lenient_neighborhood(2.0, 1.0)
    assert not metrics.lenient_neighborhood(1.0, 2.0)


def test_magnitudes():
    # exp(-ln 2) - exp(-ln 4) = 1/2 - 1/4.
    assert metrics.magnitude_rewrite(math.log(2), math.log(4)) == pytest.approx(0.25)
    # Neighbourhood: p(ref) - p(new) = 1/2 - 1/4.
    assert metrics.magnitude_neighborhood(math.log(4), math.log(2)) == pytest.approx(0.25)


def test_mean_then_mean_over_records():
    # Records with 1/2 and 3/3 correct: (0.5 + 1.0) / 2 = 0.75, not the pooled 4/5.
    per_record = [metrics.mean([True, False]), metrics.mean([True, True, True])]
    assert metrics.aggregate(per_record, 100.0) == pytest.approx(75.0)
    # Records without the metric are left out rather than counted as zero.
    assert metrics.aggregate([0.5, None, float("nan")], 100.0) == pytest.approx(50.0)
    assert metrics.aggregate([None]) is None
    assert metrics.mean([]) is None


def test_prefix_protocol_counts():
    items, (plan,) = build_items([RECORD], PREFIXES)
    rewrite = [items[p][0] for p, _ in plan["rewrite"]]
    assert len(rewrite) == 10
    assert all(any(text == pre + "The capital of France is" for pre in PREFIXES) for text in rewrite)
    assert "The capital of France is" not in [prompt for prompt, _ in items]
    assert len(plan["neighborhood"]) == 10 * 3
    assert {items[p] for p, _ in plan["neighborhood"]} == {
        (pre + nb["prompt"], nb["target"]) for nb in RECORD["neighborhood"] for pre in PREFIXES
    }
    # Paraphrases are never prefixed.
    assert [items[p] for p, _ in plan["paraphrase"]] == [(q, "Rome") for q in RECORD["paraphrase_prompts"]]
    # Lenient comparisons: rewrite/paraphrase against target_true, neighbourhood against target_new.
    assert {items[c][1] for _, c in plan["rewrite"] + plan["paraphrase"]} == {"Paris"}
    assert {items[c][1] for _, c in plan["neighborhood"]} == {"Rome"}
    assert len(items) == 2 * (10 + 2 + 30)


def test_no_prefixes_scores_bare_prompts():
    items, (plan,) = build_items([RECORD], [])
    assert [items[p] for p, _ in plan["rewrite"]] == [("The capital of France is", "Rome")]
    assert len(plan["neighborhood"]) == 3


def test_no_target_true_no_lenient():
    rec = dict(RECORD, target_true=None)
    items, (plan,) = build_items([rec], PREFIXES)
    assert all(c is None for role in plan.values() for _, c in role)
    assert len(items) == 10 + 2 + 30


class Uniform(torch.nn.Module):
    """All-zero logits: every token has probability 1/V and the argmax is id 0 (padding, never a target)."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab = vocab
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask=None):
        return SimpleNamespace(logits=torch.zeros(*input_ids.shape, self.vocab))


class CharTokenizer:
    """One id per character (ids from 3), BOS 1, pad 0: enough for the scoring path."""

    bos_token_id, eos_token_id, pad_token_id, name_or_path = 1, 2, 0, "chars"

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [3 + ord(c) % 200 for c in text]}


def test_evaluate_records_closed_form():
    records = [RECORD, dict(RECORD, case_id=8, target_true=None, paraphrase_prompts=[])]
    rows, summary = evaluate_records(
        Uniform(203), CharTokenizer(), records, PREFIXES, add_bos=True, batch_size=16,
        fluency_max_new_tokens=0,
    )
    first, second = rows
    assert len(first["rewrite_prompts_correct"]) == 10
    assert len(first["neighborhood_prompts_correct"]) == 30
    assert len(first["paraphrase_prompts_correct"]) == 2
    # Uniform model: nothing is practically correct; every NLL is ln V, so rewrite/paraphrase ties succeed,
    # neighbourhood ties fail, and all magnitudes are 0.
    assert summary["rewrite_acc"] == summary["paraphrase_acc"] == summary["neighborhood_acc"] == 0.0
    assert summary["rewrite_lenient"] == summary["paraphrase_lenient"] == 100.0
    assert summary["neighborhood_lenient"] == 0.0
    assert summary["EM"] == pytest.approx(0.0) and summary["NM"] == pytest.approx(0.0)
    assert first["rewrite_prompts_probs"][0]["target_new"] == pytest.approx(math.log(203))
    # The second record has no target_true and no paraphrases: no lenient keys, means left as None.
    assert "rewrite_prompts_probs" not in second
    assert second["means"]["paraphrase_acc"] is None and second["means"]["EM"] is None
    assert second["generation_ngram_entropy"] is None and second["generated_texts"] == []
    assert summary["fluency"] is None
    assert summary["n_records"] == 2
    assert summary["n_scored_items"] == 2 * (10 + 2 + 30) + (10 + 30)
    assert summary["scoring_seconds"] >= 0 and summary["generation_seconds"] >= 0


class CharBigram(Uniform):
    """Character bigram model that continues "... is" with " Paris" and nothing else."""

    def __init__(self, tokenizer):
        super().__init__(203)
        text = "s Paris"
        ids = tokenizer(text)["input_ids"]
        self.next = dict(zip(ids[:-1], ids[1:]))

    def forward(self, input_ids, attention_mask=None):
        logits = torch.zeros(*input_ids.shape, self.vocab)
        for idx in torch.nonzero(torch.ones_like(input_ids)):
            nxt = self.next.get(int(input_ids[tuple(idx)]))
            if nxt is not None:
                logits[tuple(idx)][nxt] = 1.0
        return SimpleNamespace(logits=logits)


def test_known_mask_and_missing_true():
    tok = CharTokenizer()
    lyon = dict(RECORD, target_true="Lyon")
    assert known_mask(CharBigram(tok), tok, [RECORD, lyon], add_bos=False, batch_size=1) == [True, False]
    assert known_mask(Uniform(203), tok, [RECORD], add_bos=True) == [False]
    with pytest.raises(ValueError):
        known_mask(Uniform(203), CharTokenizer(), [dict(RECORD, target_true=None)], add_bos=True)
