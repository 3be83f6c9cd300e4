"""PMET's residual step as configured in the EAMET repository (method.md §4.2, §5.4), one edit at a time.

Two vectors δ_attn, δ_mlp ∈ ℝ^d, both starting at 0, are added at the subject's last token to the outputs
of the z-layer block's self-attention and MLP modules (not to the block output). With a_attn, a_mlp the
clean outputs of those modules at the bare prompt:

  loss = f·L_nll + kl_factor·L_ess + v_weight_decay·(‖δ_mlp‖/‖a_mlp‖² + ‖δ_attn‖/‖a_attn‖²)

f is ``nll_loss_factor`` (1), or 0.1 of it from the iteration after one where every target token was the
argmax; in such an iteration the loop also stops once kl_factor·L_ess ≤ ``kl_stop`` (0.01). It stops when
the loss is below ``early_stop`` (0.05), has at most ``v_num_grad_steps`` (25) passes, and clamps each δ to
``clamp_norm_factor`` (0.75) × the norm of its own module's clean output. Only δ_mlp becomes a target,
z_mlp = a_mlp + δ_mlp; the update (``run.py``) spreads (z_mlp − current MLP output of block L) over the
layers with the square root of the layers left, eq. (5) otherwise unchanged.

This is the reference loop with ``torch.optim.Adam``; ``batched.optimise_block`` with ``batched.PMET`` runs
the same step for many edits at once.
"""
from __future__ import annotations

import torch

from massedit.architectures import input_device
from massedit.editing.batch_forward import BatchForward, stack_prompts
from massedit.editing.residual import EditPrompts, ResidualResult, clamp_norm_


def optimise_residual(model, arch, prompts: EditPrompts, z_layer: int, hp: dict) -> ResidualResult:
    """δ_mlp (the residual), a_mlp (as ``h``), the passes run and the final loss terms of one edit."""
    d = model.config.hidden_size
    device = input_device(model)  # δ lives on the model's device; the result is returned on the CPU
    delta = {"attn": torch.zeros(d, requires_grad=True, device=device),
             "mlp": torch.zeros(d, requires_grad=True, device=device)}
    init: dict[str, torch.Tensor] = {}

    def adder(name):
        def add(current: torch.Tensor) -> torch.Tensor:
            if name not in init:
                init[name] = current[0].detach().float().to(device).clone()  # row 0: the bare prompt
            return delta[name]
        return add

    forward = BatchForward(model, arch, stack_prompts([prompts]), z_layer, ("attn", "mlp"), hp.get("forward", "fast"))
    optimiser = torch.optim.Adam([delta["mlp"], delta["attn"]], lr=float(hp["v_lr"]))
    steps, kl_factor = int(hp["v_num_grad_steps"]), float(hp["kl_factor"])
    nll_loss_factor = float(hp.get("nll_loss_factor", 1.0))
    factor, reference, losses, iterations = nll_loss_factor, None, {}, 0
    for it in range(steps):
        optimiser.zero_grad()
        scores = forward({"attn": adder("attn"), "mlp": adder("mlp")})
        iterations += 1
        essence_logp = scores.essence_logp[0]
        if it == 0:
            reference = essence_logp.detach()
        nll = scores.nll(forward.batch)[0]
        ess = (essence_logp.exp() * (essence_logp - reference)).sum()
        kl = kl_factor * ess
        decay = float(hp["v_weight_decay"]) * sum(delta[m].norm() / init[m].norm() ** 2 for m in ("mlp", "attn"))
        loss = factor * nll + kl + decay
        losses = {"nll": nll.item(), "essence_kl": ess.item(),
                  "weight_decay": decay.item(), "total": loss.item()}
        if loss.item() < float(hp["early_stop"]):
            break
        if bool(scores.all_argmax(forward.batch)[0]):  # the targets are already the argmax everywhere
            factor = 0.1 * nll_loss_factor
            if kl.item() <= float(hp.get("kl_stop", 0.01)):
                break
        else:
            factor = nll_loss_factor
        if it == steps - 1:
            break
        loss.backward()
        optimiser.step()
        for m in ("mlp", "attn"):
            clamp_norm_(delta[m], float(hp["clamp_norm_factor"]) * init[m].norm().item())
    return ResidualResult(delta["mlp"].detach().cpu().clone(), init["mlp"].cpu(), iterations, losses)
