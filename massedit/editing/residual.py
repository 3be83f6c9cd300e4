"""What every residual step shares (method.md §2.4): the edit's prompts, the forward pass with δ added
at the subject's last token of the z-layer block output, and the NLL and essence-KL terms."""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Callable

import torch

from massedit.architectures import get_module, input_device
from massedit.editing import hooks
from massedit.editing.keys import compose, flat_templates
from massedit.tokens import bos_prefix, encode_prompt, encode_text, fill, pad_right, target_ids

log = logging.getLogger(__name__)


@dataclass
class EditPrompts:
    """One edit's rewriting prompts (one per context template, bare prompt first) plus the essence prompt."""

    input_ids: torch.Tensor  # (P + 1, W), right padded; the essence prompt is the last row
    attention_mask: torch.Tensor
    subject_cols: torch.Tensor  # (P + 1,) subject's last token in each row
    target_cols: torch.Tensor  # (P, T) positions whose next-token prediction is target token t
    target_ids: torch.Tensor  # (T,)

    @property
    def n_rewrite(self) -> int:
        return self.target_cols.shape[0]


def build_edit_prompts(
    tokenizer,
    groups: list[list[str]],
    record: dict,
    add_bos: bool,
    essence_template: str = "{} is a",
    prompt_build: str = "ids",
) -> EditPrompts:
    """Rewriting inputs are prompt ⊕ target[:-1]; ``prompt_build="string"`` re-tokenises the decoded
    target text appended to the prompt instead, as the authors do (method.md §7 quirk 8)."""
    prompt_text, _ = fill(record["prompt"], record["subject"])
    tids = target_ids(tokenizer, prompt_text, record["target_new"])
    n_t = len(tids)
    sequences, subject_cols, target_cols = [], [], []
    for context in flat_templates(groups):
        enc = encode_prompt(tokenizer, compose(context, record["prompt"]), record["subject"], add_bos)
        if prompt_build == "ids":
            seq = enc.ids + tids[:-1]
            start = len(enc.ids) - 1
        elif prompt_build == "string":
            text, _ = fill(compose(context, record["prompt"]), record["subject"])
            seq = bos_prefix(tokenizer, add_bos) + encode_text(tokenizer, text + tokenizer.decode(tids[:-1]))
            start = len(seq) - n_t  # the authors count target positions back from the end
        else:
            raise ValueError(f"prompt_build must be 'ids' or 'string', not {prompt_build!r}")
        sequences.append(seq)
        subject_cols.append(enc.subject_last)
        target_cols.append([start + t for t in range(n_t)])
    essence = encode_prompt(tokenizer, essence_template, record["subject"], add_bos)
    sequences.append(essence.ids)
    subject_cols.append(essence.subject_last)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids, mask = pad_right(sequences, pad_id)
    return EditPrompts(ids, mask, torch.tensor(subject_cols), torch.tensor(target_cols), torch.tensor(tids))


def output_logits(model, hidden: torch.Tensor) -> torch.Tensor:
    """Final-layer hidden states (already normalised by the base model) to logits."""
    logits = model.get_output_embeddings()(hidden)
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


def score(model, prompts: EditPrompts, target_hidden: torch.Tensor, essence_hidden: torch.Tensor):
    """Target-token log-probs (P, T) and the essence log-distribution (V,) from the final-norm hidden
    states at the scored positions: (P, T, d) and (d,)."""
    n_rw, n_t, d = target_hidden.shape
    # One pass through the LM head for all scored positions: its weight is read once, not twice.
    hidden = torch.cat([target_hidden.reshape(-1, d), essence_hidden[None]])
    logp = torch.log_softmax(output_logits(model, hidden).float(), dim=-1)
    index = prompts.target_ids.to(logp.device).view(1, -1, 1).expand(n_rw, -1, 1)
    target_logp = logp[:-1].view(n_rw, n_t, -1).gather(2, index).squeeze(2)
    return target_logp, logp[-1]


def forward_with_delta(
    model, arch, prompts: EditPrompts, z_layer: int, delta: Callable[[torch.Tensor], torch.Tensor],
    all_logits: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs of the target tokens (P, T) and the essence prompt's next-token log-distribution at the
    subject's last token (V,), with ``delta`` added to block ``z_layer``'s output at the subject's last
    token of every row. The whole model runs on every position; the LM head only where scored, or with
    ``all_logits`` at every position and normalised there, as the authors' code does (the benchmark's
    straightforward reference; same values)."""
    device = input_device(model)
    rows = torch.arange(prompts.input_ids.shape[0], device=device)
    subject_cols, target_cols = prompts.subject_cols.to(device), prompts.target_cols.to(device)
    block = get_module(model, arch.block.format(z_layer))
    with hooks.hooks(hooks.add_at_positions(block, rows, subject_cols, delta)):
        hidden = model.base_model(input_ids=prompts.input_ids.to(device),
                                  attention_mask=prompts.attention_mask.to(device)).last_hidden_state
    n_rw = prompts.n_rewrite
    if all_logits:
        logp = torch.log_softmax(output_logits(model, hidden).float(), dim=-1)  # (rows, W, V)
        index = prompts.target_ids.to(logp.device).view(1, -1, 1).expand(n_rw, -1, 1)
        target_logp = logp[rows[:n_rw].unsqueeze(1), target_cols].gather(2, index).squeeze(2)
        return target_logp, logp[n_rw, subject_cols[n_rw]]
    target_hidden = hidden[rows[:n_rw].unsqueeze(1), target_cols]  # (P, T, d)
    essence_hidden = hidden[n_rw, subject_cols[n_rw]]
    return score(model, prompts, target_hidden, essence_hidden)


ForwardFn = Callable[[Callable[[torch.Tensor], torch.Tensor]], tuple[torch.Tensor, torch.Tensor]]
_fallbacks_logged: set[str] = set()


def make_forward(model, arch, prompts: EditPrompts, z_layer: int, mode: str = "fast") -> ForwardFn:
    """The residual step's forward for one edit: ``forward(delta) -> (target_logp, essence_logp)``.

    ``mode`` is the hyperparameter ``forward``: "full" runs the whole model at every iteration
    (``forward_with_delta``); "straightforward" also applies the LM head at every position, as the authors'
    code does; "fast" (the default) computes what δ cannot change once (``massedit.editing.prefix_cache``)
    and falls back to "full" where that path is not supported. All three give the same residuals.
    """
    if mode in ("full", "straightforward"):
        return functools.partial(forward_with_delta, model, arch, prompts, z_layer,
                                 all_logits=mode == "straightforward")
    if mode != "fast":
        raise ValueError(f"forward must be 'fast', 'full' or 'straightforward', not {mode!r}")
    from massedit.editing import prefix_cache

    reason = prefix_cache.unsupported_reason(model, arch, prompts.input_ids.shape[1])
    if reason is None:
        return prefix_cache.PrefixCachedForward(model, arch, prompts, z_layer)
    if reason not in _fallbacks_logged:  # once per reason, not once per edit
        _fallbacks_logged.add(reason)
        log.info("residual forward: full path instead of the fast one: %s", reason)
    return functools.partial(forward_with_delta, model, arch, prompts, z_layer)


def nll_loss(target_logp: torch.Tensor) -> torch.Tensor:
    """Eq. (2): mean over prompts of the per-prompt mean target NLL."""
    return -target_logp.mean(dim=1).mean()


def essence_kl(current_logp: torch.Tensor, reference_logp: torch.Tensor) -> torch.Tensor:
    """Eq. (3): KL(q_current ‖ q_ref) = Σ q_current (log q_current − log q_ref)."""
    return (current_logp.exp() * (current_logp - reference_logp)).sum()


def clamp_norm_(delta: torch.Tensor, radius: float) -> None:
    """Project δ onto the L2 ball of the given radius, in place."""
    with torch.no_grad():
        norm = delta.norm()
        if norm > radius:
            delta.mul_(radius / norm)


@dataclass
class ResidualResult:
    delta: torch.Tensor  # (d,) the optimised residual r_i
    h: torch.Tensor  # (d,) block output at the subject's last token of the bare prompt, before δ
    iterations: int  # forward passes run
    losses: dict  # final value of each loss term


def check_loss_layer(hp: dict, n_layers: int) -> None:
    """The authors' hyperparameter files name the loss layer (``v_loss_layer``); it is always the last block,
    whose readout is the model's own logits. Any other value would need a logit-lens readout that the reference
    does not use, so it is refused rather than silently read as the last block."""
    layer = hp.get("v_loss_layer")
    if layer is not None and int(layer) != n_layers - 1:
        raise ValueError(f"v_loss_layer = {layer}: only the last block ({n_layers - 1} for this model of "
                         f"{n_layers} layers) is implemented; remove the key or set it to {n_layers - 1}")
