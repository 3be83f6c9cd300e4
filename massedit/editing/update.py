"""The closed-form multi-layer update (method.md §2.6–2.7)."""
from __future__ import annotations

import math
import time
from typing import Callable

import torch

from massedit.architectures import add_to_down_proj
from massedit.editing.keys import compute_keys


def closed_form_delta(C: torch.Tensor, K: torch.Tensor, R: torch.Tensor, lam: float) -> torch.Tensor:
    """ΔW = R (A⁻¹ K)ᵀ with A = λC + K Kᵀ, via a Cholesky factorisation in fp64 (eq. 5).

    Minimises Σ_i ‖ΔW k_i − r_i‖² + λ tr(ΔW C ΔWᵀ). Shapes: C (d_ff, d_ff), K (d_ff, n), R (d, n).
    """
    C, K, R = C.double(), K.double(), R.double()
    A = lam * C + K @ K.T
    factor, info = torch.linalg.cholesky_ex(A)
    if info.item() != 0:
        raise ValueError(
            f"λC + KKᵀ is not positive definite (λ={lam}); the statistics may be degenerate or λ too small"
        )
    adj = torch.cholesky_solve(K, factor)  # A⁻¹ K, no explicit inverse
    return R @ adj.T


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
    and returns ΔW per layer as (d, d_ff) fp32, plus timings.

    ``output`` is the z-layer module whose output ``Z`` targets: "block" (MEMIT, EAMET, AlphaEdit) or
    "mlp_down" (PMET's MLP-output targets). ``solver(j, layer, K, R) -> ΔW`` replaces the closed form of
    eq. (5) (AlphaEdit's projected solve); K is (d_ff, n) and R (d, n), both fp64. Without a solver,
    ``moments`` and ``lambdas`` give eq. (5).
    """
    if solver is None:
        solver = lambda j, layer, K, R: closed_form_delta(moments[layer], K, R, float(lambdas[j]))  # noqa: E731
    deltas: dict[int, torch.Tensor] = {}
    timings = {"keys_s": 0.0, "solve_s": 0.0}
    target = Z.double().T  # (d, n)
    m = len(layers)
    for j, layer in enumerate(sorted(layers)):
        t0 = time.perf_counter()
        ko = compute_keys(model, tokenizer, arch, records, groups, [layer], add_bos, output_layer=z_layer,
                          batch_size=batch_size, output_module=output)
        timings["keys_s"] += time.perf_counter() - t0
        K = ko.keys[layer].double().T  # (d_ff, n)
        R = spread(target - ko.outputs.double().T, m - j, spreading)
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
