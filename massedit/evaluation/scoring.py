"""Teacher-forced scoring of (prompt, target) pairs (reference evaluation.md §3.1).

Each input is ``bos_prefix ⊕ ids(prompt) ⊕ target_ids(prompt, target)`` built from ids (the clean rule of
``massedit.tokens``), right-padded; target token j is predicted at position ``len(prompt ids) + j − 1``.
Items are sorted by length before batching so padding stays small; causal attention means right padding
never reaches a real position, so results do not depend on the batch size beyond float rounding.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from massedit.architectures import input_device
from massedit.tokens import encode_plain, target_ids


@dataclass
class TargetScore:
    """Teacher-forced score of one target under one prompt.

    ``exact`` is practical correctness (every target token is the argmax, §3.2); ``nll`` is the
    length-normalised negative log-likelihood (§3.3) and ``prob`` = exp(−nll).
    """

    token_ids: list[int]
    logprobs: list[float]
    argmax_ids: list[int]
    argmax_correct: list[bool] = field(init=False)
    exact: bool = field(init=False)
    nll: float = field(init=False)
    prob: float = field(init=False)

    def __post_init__(self) -> None:
        self.argmax_correct = [a == t for a, t in zip(self.argmax_ids, self.token_ids)]
        self.exact = all(self.argmax_correct)
        self.nll = -sum(self.logprobs) / len(self.logprobs)
        self.prob = math.exp(-self.nll)


def pad_id(tokenizer) -> int:
    """Id used for padding: the tokenizer's pad token, else EOS, else 0 (padding is always masked)."""
    for tid in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if tid is not None:
            return tid
    return 0


def _length_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Index batches over items sorted by decreasing length; ties keep input order (stable sort)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def _right_padded(seqs: list[list[int]], pad: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, s in enumerate(seqs):
        ids[row, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[row, : len(s)] = 1
    return ids.to(device), mask.to(device)


SCORING_MODES = ("shared", "flat", "straightforward")


def score_targets(
    model, tokenizer, items: list[tuple[str, str]], add_bos: bool, batch_size: int = 32,
    groups: list | None = None, mode: str = "shared",
) -> list[TargetScore]:
    """Score every ``(prompt text, target string)`` pair; returns one TargetScore per item, in order.

    ``mode``: ``shared`` (default) computes each prompt once for all its targets and the common leading
    tokens of each ``groups`` entry once (``massedit.evaluation.shared_scoring``; models that are not
    Hugging Face causal LMs use ``flat``); ``flat`` runs every prompt ⊕ target as its own sequence,
    batched; ``straightforward`` is ``flat`` one item at a time with the LM head at every position, the
    reference the benchmark compares against.
    """
    if mode not in SCORING_MODES:
        raise ValueError(f"scoring mode must be one of {SCORING_MODES}, not {mode!r}")
    prompts, targets = [], []
    for prompt, target in items:
        p = encode_plain(tokenizer, prompt, add_bos).ids
        if not p:
            # Nothing would predict the first target token.
            raise ValueError(f"prompt {prompt!r} encodes to no tokens and add_bos is off")
        prompts.append(p)
        targets.append(target_ids(tokenizer, prompt, target))
    if not items:
        return []
    pad = pad_id(tokenizer)
    if mode == "shared":
        from massedit.evaluation import shared_scoring

        if shared_scoring.supported(model):
            lp, am = shared_scoring.score_shared(model, prompts, targets, groups, pad, batch_size)
            return [TargetScore(token_ids=list(t), logprobs=a, argmax_ids=b) for t, a, b in zip(targets, lp, am)]
    if mode == "straightforward":
        batch_size = 1
    return _score_flat(model, prompts, targets, pad, batch_size, full_logits=mode == "straightforward")


def _score_flat(model, prompts, targets, pad: int, batch_size: int, full_logits: bool) -> list[TargetScore]:
    seqs = [p + t for p, t in zip(prompts, targets)]
    model.eval()
    device = input_device(model)
    out: list[TargetScore | None] = [None] * len(seqs)
    with torch.no_grad():
        for batch in _length_batches([len(s) for s in seqs], batch_size):
            ids, mask = _right_padded([seqs[i] for i in batch], pad, device)
            logits = model(input_ids=ids, attention_mask=mask).logits
            # Row n_p−1+j predicts target token j; gather just those rows, one transfer per batch.
            rows, pos, tgt = [], [], []
            for row, i in enumerate(batch):
                n_p, t_ids = len(prompts[i]), targets[i]
                rows += [row] * len(t_ids)
                pos += range(n_p - 1, n_p - 1 + len(t_ids))
                tgt += t_ids
            # float32 for the softmax whatever the model's dtype; the straightforward path normalises
            # every position, as a plain implementation would.
            logp = (logits.float().log_softmax(-1)[rows, pos] if full_logits
                    else logits[rows, pos].float().log_softmax(-1))
            tgt_t = torch.tensor(tgt, dtype=torch.long, device=logp.device)
            lp = logp.gather(1, tgt_t[:, None])[:, 0].tolist()
            am = logp.argmax(-1).tolist()
            start = 0
            for i in batch:
                end = start + len(targets[i])
                out[i] = TargetScore(token_ids=list(targets[i]), logprobs=lp[start:end], argmax_ids=am[start:end])
                start = end
    return out  # type: ignore[return-value]


def next_token_argmax(model, tokenizer, prompts: list[str], add_bos: bool, batch_size: int = 32) -> list[int]:
    """Greedy next-token id after each prompt (token-level checks such as ZsRE's Spe., §3.5)."""
    seqs = [encode_plain(tokenizer, p, add_bos).ids for p in prompts]
    if any(not s for s in seqs):
        raise ValueError("a prompt encodes to no tokens and add_bos is off")
    model.eval()
    device = input_device(model)
    pad = pad_id(tokenizer)
    out = [0] * len(seqs)
    with torch.no_grad():
        for batch in _length_batches([len(s) for s in seqs], batch_size):
            ids, mask = _right_padded([seqs[i] for i in batch], pad, device)
            logits = model(input_ids=ids, attention_mask=mask).logits
            last = [len(seqs[i]) - 1 for i in batch]
            for i, tok in zip(batch, logits[list(range(len(batch))), last].argmax(-1).tolist()):
                out[i] = tok
    return out
