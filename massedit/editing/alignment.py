"""EAMET's embedding-alignment terms (method.md §3.3, eqs. 8–10).

For edit i the earlier residuals r_j (j < i) and the key similarities s_j = cos(k_i, k_j) are constants;
only u_j = cos(δ, r_j) depends on δ.
"""
from __future__ import annotations

import torch

EPS = 1e-8


# F.normalize's default eps: the authors' code divides δ by max(‖δ‖, 1e-12).
NORMALIZE_EPS = 1e-12
ZERO_DELTA_COSINES = ("code", "zero")


def residual_cosines(delta: torch.Tensor, previous: torch.Tensor, zero_delta: str = "code") -> torch.Tensor:
    """u_j = cos(δ, r_j). The two choices differ only at δ = 0, where the cosine has no direction.

    ``code`` (preset paper): δ / max(‖δ‖, 1e-12) as the authors' ``F.normalize`` computes it. At δ = 0 the value
    is 0 but the gradient is r_j / 1e-12, so the first Adam step of every zero-initialised δ (eq. 6's ‖h‖ ≥ 100
    case) follows the alignment terms alone and the 1e24-sized second-moment estimate then damps every later
    gradient: δ keeps moving along that first direction.
    ``zero`` (preset clean): the value is 0 with no gradient, so the first step follows the NLL and essence terms.
    """
    if zero_delta not in ZERO_DELTA_COSINES:
        raise ValueError(f"zero_delta_cosine must be one of {ZERO_DELTA_COSINES}, not {zero_delta!r}")
    r = torch.nn.functional.normalize(previous, dim=1)
    if zero_delta == "code":
        return r @ torch.nn.functional.normalize(delta, dim=0, eps=NORMALIZE_EPS)
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
