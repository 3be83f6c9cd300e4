"""AlphaEdit's null-space-projected update (method.md §4.3, §5.5).

The residual step is MEMIT's (``memit.optimise_residual``, or ``batched.MEMIT``) with ``early_stop`` 0.05
and the old MEMIT template generator (5 seeds, top-k 5, 10 tokens in all). The update differs:

* Projector, per layer: P = U₀U₀ᵀ, where U₀ are the eigenvectors of the second moment C whose eigenvalue
  is below ``nullspace_threshold`` (2e-2, an *absolute* threshold, so rank(P) depends on C's
  normalisation, corpus and maxlen; log it). The workflow caches P per model and layer set.
* Solve, per layer j: (P(KKᵀ + C_acc) + α·I) X = P K R_jᵀ, ΔW = Xᵀ, with R_j = (Z − H)/(m − j) as in
  eq. (4), α = ``L2`` (1; 10 for LLaMA3-8B), and C_acc the keys of earlier batches (zero in the
  single-batch protocol). λ (``mom2_update_weight``) is not used; C enters only through P.

Hyperparameters besides the residual step's (``batched`` docstring): ``layers``, ``L2``,
``nullspace_threshold``, and ``alphaedit_solve_dtype`` ("float32", the authors' LU solve on the GPU, or
"float64", the clean option; method.md §7 quirk 17).
"""
from __future__ import annotations

import torch

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def null_space_projection(moment: torch.Tensor, threshold: float, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """P = U₀U₀ᵀ for the eigenvectors U₀ of the symmetric PSD ``moment`` (d_ff, d_ff) with eigenvalue below
    ``threshold``, in ``dtype``.

    The authors take an SVD of C in fp32; for a symmetric matrix the singular values are the absolute
    eigenvalues, so the threshold is applied to |λ| and the kept vectors are the same. Keys in the span of
    U₀ (directions the statistics never saw) pass P unchanged; P annihilates the other eigenvectors.
    """
    C = moment.to(dtype)
    C = (C + C.T) / 2  # exact symmetry for eigh; accumulated sums are symmetric only up to rounding
    values, vectors = torch.linalg.eigh(C)
    kept = vectors[:, values.abs() < threshold]
    return kept @ kept.T


def projection_rank(projection: torch.Tensor) -> int:
    """rank(P) = trace(P) for an orthogonal projector, rounded."""
    return int(round(float(torch.diagonal(projection).sum())))


def alphaedit_delta(P: torch.Tensor, K: torch.Tensor, R: torch.Tensor, l2: float,
                    accumulated: torch.Tensor | None = None, dtype: str = "float32") -> torch.Tensor:
    """ΔW (d, d_ff) = Xᵀ with (P(KKᵀ + C_acc) + α I) X = P K Rᵀ (eq. 11), solved by LU in ``dtype``.
    Shapes: P (d_ff, d_ff), K (d_ff, n), R (d, n), C_acc (d_ff, d_ff) or None. The solve runs on K's
    device (the model's): P, R and C_acc are moved there."""
    if dtype not in _DTYPES:
        raise ValueError(f"alphaedit_solve_dtype must be one of {sorted(_DTYPES)}, not {dtype!r}")
    t = _DTYPES[dtype]
    device = K.device
    P, K, R = P.to(device=device, dtype=t), K.to(t), R.to(device=device, dtype=t)
    gram = K @ K.T
    if accumulated is not None:
        gram = gram + accumulated.to(device=device, dtype=t)
    A = P @ gram + l2 * torch.eye(P.shape[0], dtype=t, device=device)
    X = torch.linalg.solve(A, P @ K @ R.T)  # (d_ff, d)
    return X.T.double()


def projections_for(moments: dict[int, torch.Tensor], layers: list[int], threshold: float,
                    given: dict[int, torch.Tensor] | None = None) -> dict[int, torch.Tensor]:
    """P for every layer: from ``given`` (the workflow's cache) where present, else from the moments."""
    given = given or {}
    missing = [layer for layer in layers if layer not in given and layer not in moments]
    if missing:
        raise ValueError(f"AlphaEdit needs projections or statistics for layers {missing}")
    return {layer: given[layer] if layer in given else null_space_projection(moments[layer], threshold)
            for layer in layers}


def solver(projections: dict[int, torch.Tensor], l2: float, dtype: str = "float32"):
    """The ``update.apply_multilayer_update`` solver for AlphaEdit (single batch: C_acc = 0)."""
    return lambda j, layer, K, R: alphaedit_delta(projections[layer], K, R, l2, dtype=dtype)
