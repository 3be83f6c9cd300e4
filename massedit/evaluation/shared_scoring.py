"""Teacher-forced scoring that computes each shared token once (issue "Speed", item 3).

The evaluation scores many (prompt, target) pairs that overlap: the ten evaluation prefixes open most
prompts, and every prompt is scored against two targets (target_new and target_true). Under a causal
model a token's hidden states depend only on the tokens before it, so the work splits into three stages
that pass key/value caches forward:

1. **stems**: per group of prompts (the caller's grouping, e.g. by evaluation prefix), the longest common
   token prefix of the group, run once;
2. **bodies**: each distinct prompt's remaining tokens, attending to its stem's cache; the hidden state
   at the prompt's last token predicts every target's first token;
3. **tails**: each target's tokens but the last, attending to its prompt's cache.

The language-model head runs only at the scored positions. Caches of different lengths are right-padded
within a batch; the padding columns are masked out and position ids are given explicitly, so every real
token sees exactly the context it would see alone. The results equal ``scoring.score_flat`` up to float
rounding (tests/test_shared_scoring.py).
"""
from __future__ import annotations

from collections import defaultdict

import torch

from massedit.tokens import length_sorted_batches

# Rows per language-model head call: 128 rows × a 262k vocabulary is about 134 MB of fp32 logits.
HEAD_ROWS = 128


def supported(model) -> bool:
    """The cached stages need a Hugging Face causal LM (base model with a cache, output embeddings)."""
    from transformers import PreTrainedModel

    return isinstance(model, PreTrainedModel) and model.get_output_embeddings() is not None


def _common_prefix(seqs: list[list[int]]) -> int:
    first = seqs[0]
    n = min(len(s) for s in seqs)
    for k in range(n):
        if any(s[k] != first[k] for s in seqs[1:]):
            return k
    return n


def _stems(prompts: list[list[int]], groups: list) -> tuple[list[list[int]], list[int | None]]:
    """The stems and, per prompt, its stem index (None: no stem). A stem leaves at least one body token,
    and only groups of two or more prompts get one (a lone prompt gains nothing)."""
    members: dict = defaultdict(list)
    for u, g in enumerate(groups):
        if g is not None:
            members[g].append(u)
    stems: list[list[int]] = []
    stem_of: list[int | None] = [None] * len(prompts)
    for us in members.values():
        if len(us) < 2:
            continue
        seqs = [prompts[u] for u in us]
        k = min(_common_prefix(seqs), min(len(s) for s in seqs) - 1)
        if k <= 0:
            continue
        for u in us:
            stem_of[u] = len(stems)
        stems.append(seqs[0][:k])
    return stems, stem_of


class _Runner:
    """Forward passes over right-padded token blocks that continue right-padded caches."""

    def __init__(self, model, pad: int):
        self.model, self.pad = model, pad
        self.base = model.base_model
        self.device = model.get_input_embeddings().weight.device
        self.n_layers = model.config.get_text_config().num_hidden_layers

    def run(self, tokens: list[list[int]], starts: list[int], past: tuple | None):
        """Run ``tokens`` (one list per row) whose first token sits at absolute position ``starts[row]``.

        ``past`` is ``(keys, values, mask)``: per-layer (B, H, W, hd) tensors and the (B, W) 0/1 mask of
        the cache columns. Returns the hidden states (B, Wt, d) and the extended ``past``."""
        from transformers import DynamicCache

        width = max(len(t) for t in tokens)
        ids = torch.full((len(tokens), width), self.pad, dtype=torch.long)
        mask = torch.zeros((len(tokens), width), dtype=torch.long)
        for row, t in enumerate(tokens):
            ids[row, : len(t)] = torch.tensor(t, dtype=torch.long)
            mask[row, : len(t)] = 1
        positions = torch.tensor(starts, dtype=torch.long).unsqueeze(1) + torch.arange(width)
        cache = DynamicCache(config=self.model.config)
        if past is not None:
            keys, values, past_mask = past
            for layer in range(self.n_layers):
                cache.update(keys[layer], values[layer], layer)
            mask = torch.cat([past_mask, mask], dim=1)
        hidden = self.base(
            input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
            position_ids=positions.to(self.device), cache=cache, use_cache=True,
        ).last_hidden_state
        keys = [cache.layers[layer].keys for layer in range(self.n_layers)]
        values = [cache.layers[layer].values for layer in range(self.n_layers)]
        return hidden, (keys, values, mask)


def _select(past: tuple, rows: list[int], width: int | None = None) -> tuple:
    """Rows of a cache, optionally cut to its first ``width`` columns."""
    keys, values, mask = past
    idx = torch.tensor(rows, dtype=torch.long)
    cut = slice(None) if width is None else slice(0, width)
    k = [t[idx.to(t.device), :, cut] for t in keys]
    v = [t[idx.to(t.device), :, cut] for t in values]
    return k, v, mask[idx, cut]


def _stack_stems(stem_caches: list[tuple], which: list[int]) -> tuple:
    """The caches of stems ``which`` as one right-padded batch."""
    width = max(stem_caches[s][2].shape[1] for s in which)
    n_layers = len(stem_caches[which[0]][0])
    keys, values = [], []
    for layer in range(n_layers):
        parts_k, parts_v = [], []
        for s in which:
            k, v = stem_caches[s][0][layer], stem_caches[s][1][layer]
            gap = width - k.shape[2]
            parts_k.append(torch.nn.functional.pad(k, (0, 0, 0, gap)))
            parts_v.append(torch.nn.functional.pad(v, (0, 0, 0, gap)))
        keys.append(torch.cat(parts_k))
        values.append(torch.cat(parts_v))
    mask = torch.zeros((len(which), width), dtype=torch.long)
    for row, s in enumerate(which):
        mask[row, : stem_caches[s][2].shape[1]] = 1
    return keys, values, mask


@torch.no_grad()
def score_shared(model, prompts: list[list[int]], targets: list[list[int]], groups: list | None, pad: int,
                 batch_size: int = 32) -> tuple[list[list[float]], list[list[int]]]:
    """Per item, the target tokens' log-probabilities and the argmax ids at their positions.

    ``prompts[i]`` and ``targets[i]`` are token ids (BOS included in the prompt where the model uses it);
    items with equal prompts share the prompt's computation, and prompts in the same ``groups`` entry
    (None: no group) share their common leading tokens.
    """
    from massedit.editing.residual import output_logits

    model.eval()
    runner = _Runner(model, pad)
    # Distinct prompts, each with the items that score a target after it.
    index: dict[tuple, int] = {}
    uprompts: list[list[int]] = []
    ugroups: list = []
    items_of: list[list[int]] = []
    for i, p in enumerate(prompts):
        u = index.setdefault(tuple(p), len(uprompts))
        if u == len(uprompts):
            uprompts.append(p)
            ugroups.append(groups[i] if groups is not None else None)
            items_of.append([])
        items_of[u].append(i)

    # Stage 1: stems, each cache trimmed to the stem's own length.
    stems, stem_of = _stems(uprompts, ugroups)
    stem_caches: list[tuple] = [None] * len(stems)  # type: ignore[list-item]
    for batch in length_sorted_batches([len(s) for s in stems], batch_size):
        _, past = runner.run([stems[s] for s in batch], [0] * len(batch), None)
        for row, s in enumerate(batch):
            stem_caches[s] = _select(past, [row], len(stems[s]))

    # Stages 2 and 3; the hidden states to score are gathered per item and token.
    scored: list[list[torch.Tensor | None]] = [[None] * len(t) for t in targets]
    lengths = [len(p) for p in uprompts]
    for batch in length_sorted_batches(lengths, batch_size):
        with_stem = [u for u in batch if stem_of[u] is not None]
        # Rows with a stem first, so the stem caches stack without gaps; the others get an all-masked past.
        batch = with_stem + [u for u in batch if stem_of[u] is None]
        past = None
        if with_stem:
            stem_past = _stack_stems(stem_caches, [stem_of[u] for u in with_stem])
            past = _pad_rows(stem_past, len(batch))
        starts = [len(stems[stem_of[u]]) if stem_of[u] is not None else 0 for u in batch]
        bodies = [uprompts[u][s:] for u, s in zip(batch, starts)]
        hidden, prompt_past = runner.run(bodies, starts, past)
        pairs = []  # (row in batch, item) for targets longer than one token
        for row, u in enumerate(batch):
            last = hidden[row, len(bodies[row]) - 1]
            for i in items_of[u]:
                scored[i][0] = last
                if len(targets[i]) > 1:
                    pairs.append((row, i))
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start : start + batch_size]
            tails = [targets[i][:-1] for _, i in chunk]
            tail_hidden, _ = runner.run(tails, [len(prompts[i]) for _, i in chunk],
                                        _select(prompt_past, [row for row, _ in chunk]))
            for row, (_, i) in enumerate(chunk):
                for j in range(1, len(targets[i])):
                    scored[i][j] = tail_hidden[row, j - 1]

    # The LM head at the scored positions only, in fp32 for the softmax.
    flat = [h for per_item in scored for h in per_item]
    wanted = torch.tensor([t for per_item in targets for t in per_item], dtype=torch.long)
    logprobs: list[float] = []
    argmax: list[int] = []
    for start in range(0, len(flat), HEAD_ROWS):
        h = torch.stack(flat[start : start + HEAD_ROWS])
        logp = output_logits(model, h).float().log_softmax(-1)
        tgt = wanted[start : start + HEAD_ROWS].to(logp.device)
        logprobs += logp.gather(1, tgt[:, None])[:, 0].tolist()
        argmax += logp.argmax(-1).tolist()
    out_lp, out_am, k = [], [], 0
    for t in targets:
        out_lp.append(logprobs[k : k + len(t)])
        out_am.append(argmax[k : k + len(t)])
        k += len(t)
    return out_lp, out_am


def _pad_rows(past: tuple, rows: int) -> tuple:
    """Extend a cache batch with fully masked rows (prompts without a stem in a batch with stems)."""
    keys, values, mask = past
    extra = rows - mask.shape[0]
    if extra == 0:
        return past
    grow = lambda t: torch.cat([t, t.new_zeros((extra, *t.shape[1:]))])  # noqa: E731
    return [grow(t) for t in keys], [grow(t) for t in values], grow(mask)
