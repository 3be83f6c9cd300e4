"""MEMIT's residual step as configured in the EAMET repository (method.md §4.1): independent per edit."""
from __future__ import annotations

import torch

from massedit.architectures import input_device
from massedit.editing.residual import (
    EditPrompts,
    ResidualResult,
    clamp_norm_,
    essence_kl,
    make_forward,
    nll_loss,
)


def optimise_residual(model, arch, prompts: EditPrompts, z_layer: int, hp: dict) -> ResidualResult:
    d = model.config.hidden_size
    device = input_device(model)  # δ lives on the model's device; the result is returned on the CPU
    delta = torch.zeros(d, requires_grad=True, device=device)
    state: dict = {"h": None}

    def add_delta(current: torch.Tensor) -> torch.Tensor:
        if state["h"] is None:
            state["h"] = current[0].detach().float().cpu().clone()
        return delta

    optimiser = torch.optim.Adam([delta], lr=float(hp["v_lr"]))
    steps = int(hp["v_num_grad_steps"])
    forward = make_forward(model, arch, prompts, z_layer, hp.get("forward", "fast"))
    reference = None
    losses: dict = {}
    iterations = 0
    for it in range(steps):
        optimiser.zero_grad()
        target_logp, essence_logp = forward(add_delta)
        iterations += 1
        if it == 0:
            reference = essence_logp.detach()  # δ⁰ = 0: the clean model's distribution
        h_norm = state["h"].norm().to(device)
        nll = nll_loss(target_logp)
        ess = essence_kl(essence_logp, reference)
        # ‖δ‖/‖h‖² with an unsquared numerator: the original code's weight decay (quirk 24)
        decay = float(hp["v_weight_decay"]) * delta.norm() / h_norm**2
        loss = nll + float(hp["kl_factor"]) * ess + decay
        losses = {"nll": nll.item(), "essence_kl": ess.item(), "weight_decay": decay.item(), "total": loss.item()}
        if loss.item() < float(hp["early_stop"]):  # MEMIT may stop at iteration 0
            break
        if it == steps - 1:
            break
        loss.backward()
        optimiser.step()
        clamp_norm_(delta, float(hp["clamp_norm_factor"]) * h_norm.item())
    return ResidualResult(delta.detach().cpu().clone(), state["h"], iterations, losses)
