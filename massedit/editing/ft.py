"""FT-L: constrained fine-tuning of the MLP down-projection of chosen layers (method.md §4.6: "layers
20–21; lr 5e-4; 25 steps; norm constraint 1e-3"), as the ROME/MEMIT code bases run it.

Only the down-projection weights of ``layers`` are trained, with Adam (``lr``, ``weight_decay``) for at
most ``num_steps`` epochs over the edits in batches of ``batch_size``. After every batch each weight is
clamped element-wise to W₀ ± ``norm_constraint`` (an L∞ bound on ΔW). A batch whose loss is already below
``early_stop`` (1e-2) takes no step; the epochs stop once their mean batch loss is below it.

Loss per edit: mean over the target tokens of their negative log-probability, averaged over the batch.
``objective`` says where the target tokens are predicted:
* "last_token" (the authors' FT code): every target token is scored at the prompt's last position;
* "teacher_forcing": token t after prompt ⊕ target[:t], as in the residual step.
Inputs are the bare prompts (``prompt_build`` as elsewhere). No statistics are needed.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from massedit.architectures import arch_for, down_proj_matrix, down_proj_weight
from massedit.editing.batch_forward import score_batch, stack_prompts
from massedit.editing.residual import build_edit_prompts


@dataclass
class FTResult:
    deltas: dict[int, torch.Tensor]  # layer -> ΔW (d, d_ff) fp32
    epochs: int
    epoch_losses: list[float]
    timings: dict = field(default_factory=dict)


def _batch_loss(model, prompts, objective: str) -> torch.Tensor:
    batch = stack_prompts(prompts)
    if objective == "last_token":
        batch.target_cols = batch.target_cols[:, :1].expand_as(batch.target_cols).contiguous()
    elif objective != "teacher_forcing":
        raise ValueError(f"objective must be 'last_token' or 'teacher_forcing', not {objective!r}")
    rows = torch.arange(batch.n_rewrite)  # the rewriting rows; the essence rows are not used
    device = next(model.parameters()).device
    hidden = model.base_model(input_ids=batch.input_ids[rows].to(device),
                              attention_mask=batch.attention_mask[rows].to(device)).last_hidden_state
    target_hidden = hidden[rows.unsqueeze(1).to(device), batch.target_cols.to(device)]
    essence_hidden = hidden.new_zeros(0, hidden.shape[-1])
    return score_batch(model, batch, target_hidden, essence_hidden).nll(batch).mean()


def run(model, tokenizer, records: list[dict], hp: dict, add_bos: bool, progress: bool = True) -> FTResult:
    """Fine-tune in place; return ΔW per layer."""
    arch = arch_for(model)
    layers = sorted(int(x) for x in hp["layers"])
    weights = {layer: down_proj_weight(model, arch, layer) for layer in layers}
    originals = {layer: w.detach().clone() for layer, w in weights.items()}
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    for p in model.parameters():
        p.requires_grad_(False)
    for w in weights.values():
        w.requires_grad_(True)
    optimiser = torch.optim.Adam(list(weights.values()), lr=float(hp["lr"]),
                                 weight_decay=float(hp.get("weight_decay", 0)))
    eps, stop = float(hp["norm_constraint"]), float(hp.get("early_stop", 1e-2))
    objective, size = hp.get("objective", "last_token"), int(hp.get("batch_size", 64))
    essence, build = hp.get("essence_prompt", "{} is a"), hp.get("prompt_build", "ids")
    prompts = [build_edit_prompts(tokenizer, [["{}"]], r, add_bos, essence, build) for r in records]
    epoch_losses: list[float] = []
    t0 = time.perf_counter()
    try:
        for _ in tqdm(range(int(hp["num_steps"])), desc="ft epochs", disable=not progress):
            total, count = 0.0, 0
            for start in range(0, len(prompts), size):
                chunk = prompts[start : start + size]
                optimiser.zero_grad()
                loss = _batch_loss(model, chunk, objective)
                total, count = total + loss.item() * len(chunk), count + len(chunk)
                if loss.item() >= stop:
                    loss.backward()
                    optimiser.step()
                with torch.no_grad():  # the L∞ constraint on ΔW
                    for layer, w in weights.items():
                        w.copy_(torch.clamp(w, min=originals[layer] - eps, max=originals[layer] + eps))
            epoch_losses.append(total / count)
            if epoch_losses[-1] < stop:
                break
    finally:
        for name, p in model.named_parameters():
            p.requires_grad_(flags[name])
    deltas = {}
    for layer in layers:
        before = originals[layer].T if arch.down_weight_transposed else originals[layer]
        deltas[layer] = (down_proj_matrix(model, arch, layer).detach() - before).float().cpu()
    return FTResult(deltas, len(epoch_losses), epoch_losses, {"finetune_s": time.perf_counter() - t0})
