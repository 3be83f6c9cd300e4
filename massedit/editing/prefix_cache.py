"""The residual step's forward pass without the work δ cannot change (issue 3, item 2).

δ enters at block L's output at each row's subject-last position s_r, and the model is causal, so every
layer up to L, and every position before s_r in the later layers, is the same at every iteration. This
module computes those once per edit and then, per iteration, runs only layers L+1…N−1 on positions
s_r… of each row, attending to the cached keys and values of the positions before s_r, and applies the
final norm (the LM head follows in ``residual.score``) only at the scored positions.

It calls the model's own decoder layers and rotary embedding; the only stand-in is the object passed
as the layers' cache, whose ``update`` — the one method the attention modules call — prepends the cached
prefix keys and values. That contract holds for the Llama-style families listed in ``FAST_TYPES``;
``unsupported_reason`` names anything else, and the caller falls back to the full forward.
"""
from __future__ import annotations

import copy
from typing import Callable

import torch

from massedit.architectures import get_module
from massedit.editing import hooks

# Model types whose decoder layers take (hidden, attention_mask, position_embeddings, cache) and whose
# embedding is a plain lookup; each is checked against the full forward in tests/test_fast_residual.py.
FAST_TYPES = ("llama", "mistral", "qwen2", "gemma3_text")
_ATTENTION = ("eager", "sdpa")  # both take an additive float mask of shape (B, 1, Q, K)


def _base(model, arch) -> torch.nn.Module:
    """The decoder stack that owns the layers, the final norm and the rotary embedding."""
    return get_module(model, arch.layers.rpartition(".")[0])


def _sliding_windows(config) -> list[int]:
    n = config.num_hidden_layers
    window = getattr(config, "sliding_window", None)
    if window is None:
        return []
    types = getattr(config, "layer_types", None)
    if config.model_type == "mistral" or types is None:
        return [window] * n  # Mistral slides on every layer whenever a window is set
    return [window for t in types[:n] if t == "sliding_attention"]


def unsupported_reason(model, arch, width: int) -> str | None:
    """Why the fast path cannot reproduce the full forward for inputs ``width`` tokens wide, or None."""
    config = model.config
    if config.model_type not in FAST_TYPES:
        return f"model type {config.model_type!r} is not one of {', '.join(FAST_TYPES)}"
    impl = getattr(config, "_attn_implementation", None) or "eager"
    if impl not in _ATTENTION:
        return f"attention implementation {impl!r} (needs one of {', '.join(_ATTENTION)})"
    # A window only matters once a query can see past it; the masks built here are plain causal.
    if any(w < width for w in _sliding_windows(config)):
        return f"sliding-window attention narrower than the {width}-token inputs"
    # Gemma 3 keeps one RoPE per attention type (a dict); the others a single one.
    rope_type = str(getattr(_base(model, arch).rotary_emb, "rope_type", "default"))
    # These rescale with the longest position in the pass, which differs between the two paths.
    if "dynamic" in rope_type or rope_type == "longrope":
        return f"position-dependent RoPE scaling {rope_type!r}"
    if model.training:
        return "the model is in training mode (dropout)"
    return None


class _Record:
    """Cache stand-in for the prefix pass: keeps each layer's rotated keys and values, returns them as given."""

    def __init__(self):
        self.kv: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        self.kv[layer_idx] = (key_states, value_states)
        return key_states, value_states


class _Prepend:
    """Cache stand-in for the suffix pass: the attention sees the cached prefix, then the new positions."""

    def __init__(self, kv: dict[int, tuple[torch.Tensor, torch.Tensor]]):
        self.kv = kv

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        keys, values = self.kv[layer_idx]
        return torch.cat([keys, key_states], dim=2), torch.cat([values, value_states], dim=2)


def _additive(allowed: torch.Tensor, dtype) -> torch.Tensor:
    """Boolean (B, Q, K) visibility to the additive (B, 1, Q, K) mask the attention functions take."""
    mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return mask.masked_fill(~allowed, torch.finfo(dtype).min).unsqueeze(1)


class PrefixCachedForward:
    """``forward(delta) -> (target_logp (P, T), essence_logp (V,))`` for one edit, equal to
    ``residual.forward_with_delta`` but running layers L+1…N−1 on the suffix positions only.

    The constant part is computed on construction. ``delta`` keeps the hook's contract: it receives
    the clean block-L outputs at the subject positions (P + 1, d) and returns what to add there.

    ``inner`` names modules *inside* block L ("attn", "mlp") whose outputs receive additions instead
    (PMET, ROME): block L itself then runs in the suffix pass, with hooks at each row's first suffix
    column. ``prompts`` may also be a ``batch_forward.BatchPrompts`` (several edits' rows, rewriting rows
    first, then one essence row per edit); ``hidden_states`` serves that layout.
    """

    def __init__(self, model, arch, prompts, z_layer: int, inner: tuple[str, ...] = ()):
        self.model, self.prompts = model, prompts
        base = _base(model, arch)
        layers = get_module(model, arch.layers)
        self.norm = get_module(model, arch.final_norm)
        self.rotary = base.rotary_emb
        self.inner = {name: get_module(model, arch.name(name, z_layer)) for name in inner}
        first_late = z_layer if inner else z_layer + 1  # an inner addition changes block L's own output
        self.late = list(layers)[first_late:]
        embed = get_module(model, arch.embed)
        device = embed.weight.device
        self.device = device

        ids = prompts.input_ids.to(device)
        rows_n, width = ids.shape
        s = prompts.subject_cols.to(device)
        n_rw = prompts.n_rewrite
        # Scored positions per row: the targets of rewriting rows, the subject token of the essence row.
        tcols = prompts.target_cols.to(device)
        last = torch.cat([tcols.max(dim=1).values, s[n_rw:]])
        m = max(int((last - s + 1).max()), 1)  # suffix width: row r needs positions s_r … last_r
        p = int(s.max())  # prefix width: row r uses columns 0 … s_r − 1 of it
        self.rows, self.n_rw, self.m, self.p = torch.arange(rows_n, device=device), n_rw, m, p

        with torch.no_grad():
            hidden = embed(ids)
            positions = torch.arange(width, device=device).unsqueeze(0)
            causal = torch.tril(torch.ones(width, width, dtype=torch.bool, device=device)).unsqueeze(0)
            # Right padding never reaches a real token under a causal mask, so the padding mask is not needed.
            hidden = self._run(list(layers)[:first_late], hidden, _additive(causal, hidden.dtype), positions)
            # clean block-L output at the subject positions (the input of block L with inner additions)
            self.current = hidden[self.rows, s]
            j = torch.arange(m, device=device)
            self.suffix_pos = s.unsqueeze(1) + j  # absolute positions of the suffix batch
            self.suffix_in = hidden[self.rows.unsqueeze(1), self.suffix_pos.clamp(max=width - 1)]
            recorder = _Record()
            prefix = hidden[:, :p]
            if p > 0:
                prefix = self._run(self.late, prefix, _additive(causal[:, :p, :p], prefix.dtype), positions[:, :p],
                                   recorder)
            self.kv = recorder.kv
            # Visibility of the suffix batch: prefix columns before s_r, then causal within the suffix.
            see_prefix = (torch.arange(p, device=device) < s.unsqueeze(1)).unsqueeze(1).expand(rows_n, m, p)
            see_suffix = torch.tril(torch.ones(m, m, dtype=torch.bool, device=device)).expand(rows_n, m, m)
            self.mask = _additive(torch.cat([see_prefix, see_suffix], dim=2), hidden.dtype)
            # Target positions before s_r (possible only with prompt_build "string") are constant in δ.
            rw = self.rows[:n_rw].unsqueeze(1)
            self.in_suffix = tcols >= s[:n_rw].unsqueeze(1)
            self.suffix_idx = (tcols - s[:n_rw].unsqueeze(1)).clamp(min=0, max=m - 1)
            self.fixed = None
            if not bool(self.in_suffix.all()):
                self.fixed = self.norm(prefix[rw, tcols.clamp(max=p - 1)])

    def _run(self, layers, hidden, mask, positions, cache=None):
        """``layers`` in order on ``hidden`` (B, Q, d) at absolute ``positions`` (B or 1, Q)."""
        if not layers:
            return hidden
        # Gemma 3 rotates sliding and full attention layers with their own RoPE.
        types = [getattr(getattr(layer, "self_attn", None), "layer_type", None) for layer in layers]
        if isinstance(getattr(self.rotary, "rope_type", None), dict):
            tables = {t: self.rotary(hidden, positions, t) for t in set(types)}
        else:
            tables = dict.fromkeys(set(types), self.rotary(hidden, positions))
        for layer, layer_type in zip(layers, types):
            hidden = layer(hidden, attention_mask=mask, position_ids=positions,
                           position_embeddings=tables[layer_type], cache=cache)
            hidden = hidden[0] if isinstance(hidden, tuple) else hidden
        return hidden

    def hidden_states(self, delta: Callable | None = None, inner: dict[str, Callable] | None = None):
        """Final-norm hidden states at the scored positions: targets (rewriting rows, T, d) and the
        essence rows' subject positions (essence rows, d). ``delta`` adds at block L's output, ``inner``
        maps names given on construction to callbacks adding at those modules' outputs."""
        hidden = self.suffix_in
        if delta is not None:
            add = delta(self.current)
            first = hidden[:, 0] + add.to(device=self.device, dtype=hidden.dtype)
            hidden = torch.cat([first.unsqueeze(1), hidden[:, 1:]], dim=1)
        first_col = torch.zeros_like(self.rows)  # column 0 of the suffix batch is each row's s_r
        factories = [hooks.add_at_positions(self.inner[name], self.rows, first_col, fn)
                     for name, fn in (inner or {}).items()]
        with hooks.hooks(*factories):
            hidden = self._run(self.late, hidden, self.mask, self.suffix_pos, _Prepend(self.kv))
        n_rw = self.n_rw
        target_hidden = self.norm(hidden[self.rows[:n_rw].unsqueeze(1), self.suffix_idx])
        if self.fixed is not None:
            target_hidden = torch.where(self.in_suffix.unsqueeze(2), target_hidden, self.fixed)
        essence_hidden = self.norm(hidden[n_rw:, 0])  # essence rows are scored at s_r itself
        return target_hidden, essence_hidden

    def take(self, rows: torch.Tensor, n_rewrite: int) -> "PrefixCachedForward":
        """The same forward restricted to ``rows`` (rewriting rows first, ``n_rewrite`` of them): what a
        batch of edits keeps when some edits stop early. Nothing is recomputed."""
        rows = rows.to(self.device)
        rw = rows[:n_rewrite]
        out = copy.copy(self)
        out.prompts = None  # a subset is scored by its caller (batch_forward), not by __call__
        out.rows, out.n_rw = torch.arange(len(rows), device=self.device), n_rewrite
        out.current, out.suffix_pos, out.suffix_in = self.current[rows], self.suffix_pos[rows], self.suffix_in[rows]
        out.kv = {layer: (k[rows], v[rows]) for layer, (k, v) in self.kv.items()}
        out.mask = self.mask[rows]
        out.in_suffix, out.suffix_idx = self.in_suffix[rw], self.suffix_idx[rw]
        out.fixed = None if self.fixed is None else self.fixed[rw]
        return out

    def __call__(self, delta: Callable[[torch.Tensor], torch.Tensor]):
        from massedit.editing.residual import score

        target_hidden, essence_hidden = self.hidden_states(delta)
        return score(self.model, self.prompts, target_hidden, essence_hidden[0])
