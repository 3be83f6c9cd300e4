"""The residual step of the independent methods (MEMIT, AlphaEdit, PMET, ROME) for a block of edits at once.

The result equals the one-edit-at-a-time path (``memit.optimise_residual``, ``pmet.optimise_residual``) up
to floating-point rounding: each edit keeps its own Adam state and step count, its own essence reference,
early stop and clamp. A shared ``torch.optim.Adam`` would keep moving an edit that has stopped (its
momentum does not vanish with its gradient), so ``RowAdam`` applies torch's Adam formula row by row, and
an edit that stops leaves the batch (``BatchForward.select``): it is neither run nor moved again.

Hyperparameters (all methods here):
  v_lr, v_num_grad_steps   Adam learning rate; forward passes at most (updates: one fewer)
  kl_factor                weight of the essence KL, eq. (3)
  v_weight_decay           weight of ‖δ‖/‖a‖² per optimised vector (unsquared numerator, quirk 24)
  clamp_norm_factor        each δ is projected onto the ball of radius clamp_norm_factor·‖a‖
  early_stop               stop when the total loss is below it (MEMIT 0.01, AlphaEdit/PMET/ROME 0.05)
  forward                  "fast" (default) or "full"
  batch_edits              edits optimised together (``run.compute_residuals``); 1 = one at a time
PMET only (``rule="pmet"``):
  nll_loss_factor          f, the NLL weight; 0.1·f while the targets are already the argmax
  kl_stop                  while they are, stop once kl_factor·KL ≤ kl_stop (0.01 in the authors' code)
Here ‖a‖ is the norm of the clean output, at the bare prompt's subject position, of the module δ is added
to: the block output h for MEMIT and AlphaEdit, the attention and MLP outputs for PMET, the MLP output for ROME.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from massedit.editing.batch_forward import BatchForward, stack_prompts
from massedit.editing.residual import EditPrompts, ResidualResult


@dataclass(frozen=True)
class StepSpec:
    """What differs between the independent residual steps."""

    modules: tuple[str, ...]  # where the vectors are added in the z-layer block: ("block",), ("attn", "mlp"), ("mlp",)
    rule: str = "memit"  # "memit": stop on the loss alone; "pmet": adaptive NLL weight and KL stop
    target: str | None = None  # which vector is the residual r written by the update (default: the only one)

    @property
    def residual_module(self) -> str:
        return self.target or self.modules[-1]


MEMIT = StepSpec(("block",))  # MEMIT and AlphaEdit (method.md §4.1, §4.3)
PMET = StepSpec(("attn", "mlp"), rule="pmet", target="mlp")  # §4.2: δ_attn shapes the optimisation only
ROME = StepSpec(("mlp",))  # δ at the MLP output of the rewritten layer


class RowAdam:
    """``torch.optim.Adam`` (no weight decay, no amsgrad) for a (B, d) parameter whose rows are separate
    problems: each row has its own moments and step count, and ``step`` moves only the rows given."""

    def __init__(self, shape, lr: float, betas=(0.9, 0.999), eps: float = 1e-8, device=None):
        self.lr, self.betas, self.eps = lr, betas, eps
        self.exp_avg = torch.zeros(shape, device=device)
        self.exp_avg_sq = torch.zeros(shape, device=device)
        self.steps = torch.zeros(shape[0], dtype=torch.long)

    def step(self, param: torch.Tensor, grad: torch.Tensor, rows: torch.Tensor) -> None:
        """Update ``param[rows]`` in place from ``grad`` (len(rows), d), with torch's formula."""
        beta1, beta2 = self.betas
        self.steps[rows] += 1
        m = self.exp_avg[rows].lerp_(grad, 1 - beta1)
        v = self.exp_avg_sq[rows].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        self.exp_avg[rows], self.exp_avg_sq[rows] = m, v
        new = param[rows]
        for count in self.steps[rows].unique().tolist():  # bias corrections as Python floats, as torch does
            sel = (self.steps[rows] == count).nonzero().squeeze(1).to(m.device)
            step_size = self.lr / (1 - beta1**count)
            denom = (v[sel].sqrt() / (1 - beta2**count) ** 0.5).add_(self.eps)
            new[sel] = torch.addcdiv(new[sel], m[sel], denom, value=-step_size)
        param[rows] = new


def clamp_rows_(x: torch.Tensor, radius: torch.Tensor) -> None:
    """Project each row of ``x`` onto the L2 ball of its own radius, in place."""
    norm = x.norm(dim=1)
    over = norm > radius
    if bool(over.any()):
        x[over] = x[over] * (radius[over] / norm[over]).unsqueeze(1)


def optimise_block(model, arch, prompts: list[EditPrompts], z_layer: int, spec: StepSpec, hp: dict,
                   pad_id: int = 0) -> list[ResidualResult]:
    """Optimise the residuals of independent edits together; one ``ResidualResult`` per edit, in order.
    ``result.h`` is the clean output of the residual's module at the bare prompt, ``result.delta`` its δ."""
    n, d = len(prompts), model.config.hidden_size
    forward = BatchForward(model, arch, stack_prompts(prompts, pad_id), z_layer, spec.modules,
                           hp.get("forward", "fast"))
    device = forward.fast.device if forward.fast is not None else next(model.parameters()).device
    lr, steps = float(hp["v_lr"]), int(hp["v_num_grad_steps"])
    kl_factor, decay = float(hp["kl_factor"]), float(hp["v_weight_decay"])
    clamp, early_stop = float(hp["clamp_norm_factor"]), float(hp["early_stop"])
    nll_factor = float(hp.get("nll_loss_factor", 1.0))
    deltas = {m: torch.zeros(n, d, device=device) for m in spec.modules}
    adams = {m: RowAdam((n, d), lr, device=device) for m in spec.modules}
    init = {m: torch.zeros(n, d, device=device) for m in spec.modules}  # clean outputs a at the bare prompts
    factor = torch.full((n,), nll_factor, device=device)
    iterations, losses = [0] * n, [{} for _ in range(n)]
    active = torch.arange(n)  # edits still optimised, in the order of the forward's batch
    reference = None
    for it in range(steps):
        x = {m: deltas[m][active.to(device)].clone().requires_grad_(True) for m in spec.modules}
        edit_of_row = forward.batch.edit_of_row.to(device)
        bare = forward.batch.bare_rows.to(device)

        def adder(m):
            def add(current: torch.Tensor) -> torch.Tensor:
                if it == 0:  # all edits are active in the first pass
                    init[m].copy_(current[bare].detach().float())
                return x[m][edit_of_row]
            return add

        scores = forward({m: adder(m) for m in spec.modules})
        batch, idx = forward.batch, active.to(device)
        if it == 0:
            reference = scores.essence_logp.detach()
        nll = scores.nll(batch)
        ess = (scores.essence_logp.exp() * (scores.essence_logp - reference)).sum(dim=1)  # eq. (3) per edit
        wd = sum(x[m].norm(dim=1) / init[m][idx].norm(dim=1) ** 2 for m in spec.modules) * decay
        loss = factor[idx] * nll + kl_factor * ess + wd
        stop = loss.detach() < early_stop
        if spec.rule == "pmet":
            # The authors' adaptive NLL weight: it applies from the next iteration on.
            argmax = scores.all_argmax(batch)
            stop = stop | (argmax & (kl_factor * ess.detach() <= float(hp.get("kl_stop", 0.01))))
            factor[idx] = torch.where(argmax, 0.1 * nll_factor, nll_factor)
        if it == steps - 1:
            stop = torch.ones_like(stop)
        terms = torch.stack([nll, ess, wd, loss]).detach().cpu().tolist()  # one device sync
        for row, e in enumerate(active.tolist()):
            iterations[e] += 1
            losses[e] = dict(zip(("nll", "essence_kl", "weight_decay", "total"), (t[row] for t in terms)))
        keep = (~stop).nonzero().squeeze(1)
        if keep.numel() == 0:
            break
        loss[keep].sum().backward()  # the edits are independent: each δ gets its own loss's gradient
        with torch.no_grad():
            rows = active[keep.cpu()]
            for m in spec.modules:
                adams[m].step(deltas[m], x[m].grad[keep], rows)
                sub = deltas[m][rows.to(device)]
                clamp_rows_(sub, clamp * init[m][rows.to(device)].norm(dim=1))
                deltas[m][rows.to(device)] = sub
        if keep.numel() < len(active):
            forward = forward.select(keep.tolist())
            reference = reference[keep]
            active = rows
    target = spec.residual_module
    return [ResidualResult(deltas[target][i].detach().cpu().clone(), init[target][i].cpu().clone(), iterations[i],
                           losses[i]) for i in range(n)]
