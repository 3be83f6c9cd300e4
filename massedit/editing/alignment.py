"""EAMET's embedding-alignment terms (method.md §3.3, eqs. 8–10).

For edit i the earlier residuals r_j (j < i) and the key similarities s_j = cos(k_i, k_j) are constants;
only u_j = cos(δ, r_j) depends on δ.
"""
from __future__ import annotations

import torch

EPS = 1e-8


def residual_cosines(delta: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
    """u_j = cos(δ, r_j).

    At δ = 0 the cosine has no direction: the value is taken as 0 with no gradient. An eps-guarded
    normalisation would instead give a gradient of size 1/eps there, whose first Adam step swamps the
    second-moment estimate and stalls the optimisation of every zero-initialised δ (eq. 6's ‖h‖ ≥ 100 case).
    """
    r = torch.nn.functional.normalize(previous, dim=1)
    norm = delta.norm()
    if norm == 0:
        return torch.zeros(previous.shape[0], dtype=delta.dtype, device=delta.device)
    return r @ (delta / norm)


def kl_alignment(s: torch.Tensor, u: torch.Tensor, tau: float, direction: str = "code") -> torch.Tensor:
    """Eq. (9). ``code``: KL(P_k ‖ P_r) as the authors' code computes it; ``page``: KL(P_r ‖ P_k)."""
    p_k = torch.softmax(s / tau, dim=0)
    p_r = torch.softmax(u / tau, dim=0)
    if direction == "code":
        return (p_k * torch.log((p_k + EPS) / (p_r + EPS))).sum()
    if direction == "page":
        return (p_r * torch.log((p_r + EPS) / (p_k + EPS))).sum()
    raise ValueError(f"align_kl_direction must be 'code' or 'page', not {direction!r}")


def topm_mse_alignment(s: torch.Tensor, u: torch.Tensor, tau: float, top_m: int) -> torch.Tensor:
    """Eq. (10): softmax(s_N/τ)-weighted squared gap over the min(M, i) most key-similar earlier items."""
    m = min(top_m, s.shape[0])
    top = torch.topk(s, m).indices
    w = torch.softmax(s[top] / tau, dim=0)
    return (w * (s[top] - u[top]) ** 2).sum()
