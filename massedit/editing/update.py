"""The closed-form multi-layer update (method.md §2.6–2.7)."""
from __future__ import annotations

import math
import time
from typing import Callable

import torch

from massedit.architectures import add_to_down_proj
from massedit.editing.keys import compute_keys


# Edits per block of the closed form: fp64 copies of K and R exist for one block at a time.
SOLVE_BLOCK = 8192


def closed_form_delta(C: torch.Tensor, K: torch.Tensor, R: torch.Tensor, lam: float,
                      block: int = SOLVE_BLOCK) -> torch.Tensor:
    """ΔW = R (A⁻¹ K)ᵀ with A = λC + K Kᵀ, via a Cholesky factorisation in fp64 (eq. 5).

    Minimises Σ_i ‖ΔW k_i − r_i‖² + λ tr(ΔW C ΔWᵀ). Shapes: C (d_ff, d_ff), K (d_ff, n), R (d, n), in any
    float dtype. K Kᵀ and R (A⁻¹K)ᵀ are sums over edits, accumulated ``block`` edits at a time, so beyond
    the d_ff² of A the memory is that of one block whatever n (100,000 edits fit where 10,000 do).
    The solve runs on K's device (the model's): C and R are moved there; ΔW is returned there.
    """
    n = K.shape[1]
    A = lam * C.to(device=K.device, dtype=torch.float64)
    for start in range(0, n, block):
        Kb = K[:, start : start + block].double()
        A.addmm_(Kb, Kb.T)
    factor, info = torch.linalg.cholesky_ex(A)
    if info.item() != 0:
        raise ValueError(
            f"λC + KKᵀ is not positive definite (λ={lam}); the statistics may be degenerate or λ too small"
        )
    del A
    delta = torch.zeros(R.shape[0], K.shape[0], dtype=torch.float64, device=factor.device)
    for start in range(0, n, block):
        adj = torch.cholesky_solve(K[:, start : start + block].double(), factor)  # A⁻¹ K_b, no explicit inverse
        delta.addmm_(R[:, start : start + block].to(device=factor.device, dtype=torch.float64), adj.T)
    return delta


def spread(remaining: torch.Tensor, layers_left: int, rule: str = "linear") -> torch.Tensor:
    """Share of the remaining residual given to the current layer: eq. (4), or PMET's square root."""
    if rule == "linear":
        return remaining / layers_left
    if rule == "sqrt":
        return remaining / math.sqrt(layers_left)
    raise ValueError(f"unknown spreading rule {rule!r}")


Solver = Callable[[int, int, torch.Tensor, torch.Tensor], torch.Tensor]


def apply_multilayer_update(
    model,
    tokenizer,
    arch,
    records: list[dict],
    groups: list[list[str]],
    layers: list[int],
    z_layer: int,
    Z: torch.Tensor,
    moments: dict[int, torch.Tensor] | None,
    lambdas: list[float] | None,
    add_bos: bool,
    spreading: str = "linear",
    batch_size: int = 64,
    *,
    output: str = "block",
    solver: Solver | None = None,
) -> tuple[dict[int, torch.Tensor], dict]:
    """Edit ``layers`` in ascending order, each with keys and z-layer outputs recomputed on the current
    weights (earlier layers already updated). ``Z`` is (n, d). Applies the update to the model in place
    and returns ΔW per layer as (d, d_ff) fp32 on the keys' device (the model's), plus timings.

    ``output`` is the z-layer module whose output ``Z`` targets: "block" (MEMIT, EAMET, AlphaEdit) or
    "mlp_down" (PMET's MLP-output targets). ``solver(j, layer, K, R) -> ΔW`` replaces the closed form of
    eq. (5) (AlphaEdit's projected solve); it gets K (d_ff, n) and R (d, n) in fp64. Without a solver,
    ``moments`` and ``lambdas`` give eq. (5), which takes K in fp32 and converts it block by block.
    """
    custom = solver is not None
    if solver is None:
        solver = lambda j, layer, K, R: closed_form_delta(moments[layer], K, R, float(lambdas[j]))  # noqa: E731
    deltas: dict[int, torch.Tensor] = {}
    timings = {"keys_s": 0.0, "solve_s": 0.0}
    target = Z.double().T  # (d, n); moved to the device of the outputs it is compared with
    m = len(layers)
    for j, layer in enumerate(sorted(layers)):
        t0 = time.perf_counter()
        ko = compute_keys(model, tokenizer, arch, records, groups, [layer], add_bos, output_layer=z_layer,
                          batch_size=batch_size, output_module=output)
        timings["keys_s"] += time.perf_counter() - t0
        K = ko.keys[layer].T  # (d_ff, n)
        if custom:
            K = K.double()
        outputs = ko.outputs.double().T
        R = spread(target.to(outputs.device) - outputs, m - j, spreading)
        t0 = time.perf_counter()
        delta = solver(j, layer, K, R)
        timings["solve_s"] += time.perf_counter() - t0
        add_to_down_proj(model, arch, layer, delta)
        deltas[layer] = delta.float()
    return deltas, timings


def apply_deltas(model, arch, deltas: dict[int, torch.Tensor], sign: float = 1.0) -> None:
    """Add saved ΔW (d, d_ff) to the down-projections; ``sign=-1`` restores the original weights."""
    for layer, delta in deltas.items():
        add_to_down_proj(model, arch, int(layer), sign * delta)
