"""The residual step's forward pass for a block of independent edits at once (method.md §8.3: the
baselines' residual steps are independent per edit and can be batched).

Every edit's rows (its rewriting prompts, then its essence prompt) are stacked into one right-padded
batch: all rewriting rows first, edit by edit, then one essence row per edit. Edits differ in width and
in their number of target tokens T; target columns and ids are padded to the longest T and a mask says
which are real. Additions are made at named modules of the z-layer block ("block" for its output, or
"attn"/"mlp" inside it); each callback receives the clean outputs at every row's subject position,
(rows, d), and returns what to add there, so one δ per edit is broadcast with ``edit_of_row``.

Both the full forward and the prefix-cached one (``prefix_cache``) serve such a batch, and both can be
narrowed to a subset of the edits (``BatchForward.select``) when some of them stop early.
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, replace
from typing import Callable

import torch

from massedit.architectures import get_module
from massedit.editing import hooks
from massedit.editing.residual import EditPrompts, output_logits

log = logging.getLogger(__name__)

Adds = dict[str, Callable[[torch.Tensor], torch.Tensor]]  # module name ("block", "attn", "mlp") -> callback
_fallbacks_logged: set[str] = set()


@dataclass
class BatchPrompts:
    """Several edits' prompts in one batch (layout in the module docstring)."""

    input_ids: torch.Tensor  # (R, W), R = B·(P + 1)
    attention_mask: torch.Tensor
    subject_cols: torch.Tensor  # (R,)
    target_cols: torch.Tensor  # (B·P, T_max), padded by repeating the row's last real column
    target_ids: torch.Tensor  # (B·P, T_max), padded with 0
    target_mask: torch.Tensor  # (B·P, T_max) bool, True where the target token is real
    n_edits: int
    n_templates: int  # P

    @property
    def n_rewrite(self) -> int:
        return self.n_edits * self.n_templates

    @property
    def edit_of_row(self) -> torch.Tensor:
        """(R,) the edit each row belongs to."""
        b = torch.arange(self.n_edits)
        return torch.cat([b.repeat_interleave(self.n_templates), b])

    @property
    def bare_rows(self) -> torch.Tensor:
        """(B,) each edit's bare-prompt row (the first context template is the bare prompt)."""
        return torch.arange(self.n_edits) * self.n_templates

    def rows_of(self, edits: list[int]) -> torch.Tensor:
        """Row indices of ``edits`` in the layout: their rewriting rows, then their essence rows."""
        e = torch.as_tensor(edits, dtype=torch.long)
        rewrite = (e.unsqueeze(1) * self.n_templates + torch.arange(self.n_templates)).reshape(-1)
        return torch.cat([rewrite, self.n_rewrite + e])

    def select(self, edits: list[int]) -> "BatchPrompts":
        """The batch of ``edits`` only (in the given order), trimmed to its widest real row."""
        rows = self.rows_of(edits)
        rw = rows[: len(edits) * self.n_templates]
        mask = self.attention_mask[rows]
        width = int(mask.sum(dim=1).max())
        return replace(self, input_ids=self.input_ids[rows, :width], attention_mask=mask[:, :width],
                       subject_cols=self.subject_cols[rows], target_cols=self.target_cols[rw],
                       target_ids=self.target_ids[rw], target_mask=self.target_mask[rw], n_edits=len(edits))


def stack_prompts(prompts: list[EditPrompts], pad_id: int = 0) -> BatchPrompts:
    """One batch of several edits' prompts. Every edit must have the same number of context templates.
    The pad id only fills positions no real token attends to (right padding under a causal mask)."""
    n_templates = {p.n_rewrite for p in prompts}
    if len(n_templates) != 1:
        raise ValueError(f"edits with different numbers of templates cannot share a batch: {sorted(n_templates)}")
    P = n_templates.pop()
    width = max(p.input_ids.shape[1] for p in prompts)
    t_max = max(int(p.target_ids.numel()) for p in prompts)

    def widen(x: torch.Tensor, fill: int) -> torch.Tensor:
        return torch.nn.functional.pad(x, (0, width - x.shape[1]), value=fill)

    ids = [widen(p.input_ids, pad_id) for p in prompts]
    masks = [widen(p.attention_mask, 0) for p in prompts]
    rewrite = list(range(P))
    input_ids = torch.cat([x[rewrite] for x in ids] + [x[P:] for x in ids])
    attention_mask = torch.cat([x[rewrite] for x in masks] + [x[P:] for x in masks])
    subject_cols = torch.cat([p.subject_cols[:P] for p in prompts] + [p.subject_cols[P:] for p in prompts])
    cols, tids, tmask = [], [], []
    for p in prompts:
        t = int(p.target_ids.numel())
        pad = t_max - t
        cols.append(torch.cat([p.target_cols, p.target_cols[:, -1:].expand(P, pad)], dim=1))
        tids.append(torch.cat([p.target_ids, p.target_ids.new_zeros(pad)]).expand(P, t_max))
        tmask.append((torch.arange(t_max) < t).expand(P, t_max))
    return BatchPrompts(input_ids, attention_mask, subject_cols, torch.cat(cols), torch.cat(tids), torch.cat(tmask),
                        len(prompts), P)


@dataclass
class BatchScores:
    target_logp: torch.Tensor  # (B·P, T_max), 0 at padded targets
    target_is_argmax: torch.Tensor  # (B·P, T_max) bool, True at padded targets
    essence_logp: torch.Tensor  # (B, V)

    def nll(self, batch: BatchPrompts) -> torch.Tensor:
        """Eq. (2) per edit, (B,): mean over prompts of the per-prompt mean target NLL."""
        per_row = self.target_logp.sum(dim=1) / batch.target_mask.sum(dim=1).to(self.target_logp)
        return -per_row.view(batch.n_edits, batch.n_templates).mean(dim=1)

    def all_argmax(self, batch: BatchPrompts) -> torch.Tensor:
        """(B,) bool: the target token is the most likely one at every target position of every prompt."""
        return self.target_is_argmax.view(batch.n_edits, -1).all(dim=1)


def score_batch(model, batch: BatchPrompts, target_hidden: torch.Tensor, essence_hidden: torch.Tensor) -> BatchScores:
    """Log-probabilities from the final-norm hidden states at the scored positions; the LM head runs on
    real target positions only."""
    device = target_hidden.device
    valid = batch.target_mask.to(device)
    n_valid = int(valid.sum())
    hidden = torch.cat([target_hidden[valid], essence_hidden])
    logp = torch.log_softmax(output_logits(model, hidden).float(), dim=-1)
    target_part = logp[:n_valid]
    picked = target_part.gather(1, batch.target_ids.to(device)[valid].unsqueeze(1)).squeeze(1)
    is_max = picked == target_part.detach().max(dim=1).values
    target_logp = torch.zeros(valid.shape, dtype=picked.dtype, device=device).masked_scatter(valid, picked)
    argmax = torch.ones(valid.shape, dtype=torch.bool, device=device).masked_scatter(valid, is_max)
    return BatchScores(target_logp, argmax, logp[n_valid:])


def full_hidden_states(model, arch, batch: BatchPrompts, layer: int, adds: Adds):
    """The whole model on every position, with the additions hooked in at the subject positions."""
    rows = torch.arange(batch.input_ids.shape[0])
    factories = [hooks.add_at_positions(get_module(model, arch.name(name, layer)), rows, batch.subject_cols, fn)
                 for name, fn in adds.items()]
    device = get_module(model, arch.embed).weight.device
    with hooks.hooks(*factories):
        hidden = model.base_model(input_ids=batch.input_ids.to(device),
                                  attention_mask=batch.attention_mask.to(device)).last_hidden_state
    n_rw = batch.n_rewrite
    target_hidden = hidden[rows[:n_rw].unsqueeze(1).to(device), batch.target_cols.to(device)]
    essence_hidden = hidden[rows[n_rw:].to(device), batch.subject_cols[n_rw:].to(device)]
    return target_hidden, essence_hidden


class BatchForward:
    """``forward(adds) -> BatchScores`` for a block of edits, with ``mode`` "fast" (prefix cache, falling
    back to "full" where unsupported) or "full". ``modules`` are the addition sites it will be called
    with: ("block",) or modules inside block ``layer`` such as ("attn", "mlp")."""

    def __init__(self, model, arch, batch: BatchPrompts, layer: int, modules: tuple[str, ...], mode: str = "fast"):
        from massedit.editing import prefix_cache

        if "block" in modules and len(modules) > 1:
            raise ValueError("additions at the block output and inside the block cannot be combined")
        if mode not in ("fast", "full"):
            raise ValueError(f"forward must be 'fast' or 'full', not {mode!r}")
        self.model, self.arch, self.batch, self.layer, self.modules = model, arch, batch, layer, tuple(modules)
        self.fast = None
        if mode == "fast":
            reason = prefix_cache.unsupported_reason(model, arch, batch.input_ids.shape[1])
            if reason is None:
                inner = () if self.modules == ("block",) else self.modules
                self.fast = prefix_cache.PrefixCachedForward(model, arch, batch, layer, inner=inner)
            elif reason not in _fallbacks_logged:
                _fallbacks_logged.add(reason)
                log.info("batched residual forward: full path instead of the fast one: %s", reason)

    def __call__(self, adds: Adds) -> BatchScores:
        if set(adds) - set(self.modules):
            raise ValueError(f"additions at {sorted(adds)} but the forward was built for {self.modules}")
        if self.fast is None:
            target_hidden, essence_hidden = full_hidden_states(self.model, self.arch, self.batch, self.layer, adds)
        elif self.modules == ("block",):
            target_hidden, essence_hidden = self.fast.hidden_states(adds.get("block"))
        else:
            target_hidden, essence_hidden = self.fast.hidden_states(inner=adds)
        return score_batch(self.model, self.batch, target_hidden, essence_hidden)

    def select(self, edits: list[int]) -> "BatchForward":
        """The forward of a subset of the current edits, reusing everything already computed."""
        out = copy.copy(self)
        out.batch = self.batch.select(edits)
        if self.fast is not None:
            out.fast = self.fast.take(self.batch.rows_of(edits), out.batch.n_rewrite)
        return out
