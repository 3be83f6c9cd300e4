"""Table 3's misalignment score between the keys and the residuals of a batch of edits (evaluation.md §5).

The paper does not define the score in code; the reference's reading [inferred] is

    MS = Σ_{i≥1} KL( P_k(i) ‖ P_r(i) ),
    P_k(i) = softmax_{j<i}( cos(k_i, k_j) / τ ),   P_r(i) = softmax_{j<i}( cos(r_i, r_j) / τ ),   τ = 0.07,

with i, j in edit order (0-based), k the unedited model's z-layer keys and r the residuals. It measures how
differently item i "sees" the earlier items in key space and in residual space — what EAMET's L_KL term
minimises. The reference asks for variants too: the reverse KL direction, the mean instead of the sum, and
every j ≠ i instead of j < i; ``misalignment_variants`` computes all eight.

Rows of the n × n similarity matrices are computed in blocks, so memory is O(block_size × n), about 20 MB
per array for n = 10,000 and the default block of 256.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

TAU = 0.07
DIRECTIONS = ("forward", "reverse")  # KL(P_k ‖ P_r), KL(P_r ‖ P_k)
CONTEXTS = ("causal", "all")  # j < i, j ≠ i
REDUCTIONS = ("sum", "mean")
DEFAULT_VARIANT = "forward_causal_sum"


def _unit_rows(x: np.ndarray, what: str) -> np.ndarray:
    """Rows scaled to unit norm. float32 input stays float32 (10,000 keys of width 11,008 take 440 MB;
    the cosines then carry about 1e-7 of rounding), anything else becomes float64."""
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{what}: expected a 2-d array (items × dimension), got shape {x.shape}")
    x = x.astype(np.float32 if x.dtype == np.float32 else np.float64, copy=False)
    norms = np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64))  # no float64 copy of x
    zero = np.flatnonzero(norms == 0)
    if zero.size:
        raise ValueError(f"{what}: rows {zero[:10].tolist()} are zero vectors; their cosine is undefined")
    if not np.all(np.isfinite(norms)):
        raise ValueError(f"{what}: non-finite values")
    return x / norms[:, None].astype(x.dtype)


def _masked_log_softmax(logits: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """log softmax over the masked entries of each row; 0 elsewhere (and on rows with no entry)."""
    x = np.where(mask, logits, -np.inf)
    peak = x.max(axis=1, keepdims=True)
    peak = np.where(np.isfinite(peak), peak, 0.0)
    total = np.where(mask, np.exp(x - peak), 0.0).sum(axis=1, keepdims=True)
    lse = peak + np.log(np.where(total > 0, total, 1.0))
    return np.where(mask, logits - lse, 0.0)


def per_item_kl(keys: np.ndarray, residuals: np.ndarray, tau: float = TAU, context: str = "causal",
                block_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(KL(P_k(i) ‖ P_r(i)), KL(P_r(i) ‖ P_k(i))) for every item i, NaN where i has no context (i = 0
    with ``causal``). ``keys`` (n, d_k) and ``residuals`` (n, d_r) are in edit order."""
    if context not in CONTEXTS:
        raise ValueError(f"context must be one of {CONTEXTS}, not {context!r}")
    if tau <= 0:
        raise ValueError(f"tau must be positive, not {tau}")
    if block_size < 1:
        raise ValueError(f"block_size must be at least 1, not {block_size}")
    k, r = _unit_rows(keys, "keys"), _unit_rows(residuals, "residuals")
    n = k.shape[0]
    if r.shape[0] != n:
        raise ValueError(f"{n} keys but {r.shape[0]} residuals")
    forward, reverse = np.full(n, np.nan), np.full(n, np.nan)
    for start in range(0, n, block_size):
        stop = min(n, start + block_size)
        # causal rows of this block only look at columns before its last row
        width = stop - 1 if context == "causal" else n
        if width <= 0:
            continue
        rows = np.arange(start, stop)[:, None]
        cols = np.arange(width)[None, :]
        mask = cols < rows if context == "causal" else cols != rows
        # cosines in the inputs' precision, the softmax and KL in float64
        log_pk = _masked_log_softmax((k[start:stop] @ k[:width].T).astype(np.float64) / tau, mask)
        log_pr = _masked_log_softmax((r[start:stop] @ r[:width].T).astype(np.float64) / tau, mask)
        gap = log_pk - log_pr  # 0 outside the mask
        has_context = mask.any(axis=1)
        forward[start:stop] = np.where(has_context, (np.where(mask, np.exp(log_pk), 0.0) * gap).sum(axis=1), np.nan)
        reverse[start:stop] = np.where(has_context, -(np.where(mask, np.exp(log_pr), 0.0) * gap).sum(axis=1), np.nan)
    return forward, reverse


def misalignment_score(keys: np.ndarray, residuals: np.ndarray, tau: float = TAU, direction: str = "forward",
                       reduction: str = "sum", context: str = "causal", block_size: int = 256) -> float:
    """One variant of the score; the defaults are the reference's reading of Table 3."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, not {direction!r}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, not {reduction!r}")
    _check_size(keys)
    forward, reverse = per_item_kl(keys, residuals, tau, context, block_size)
    return _reduce(forward if direction == "forward" else reverse, reduction)


def misalignment_variants(keys: np.ndarray, residuals: np.ndarray, tau: float = TAU,
                          block_size: int = 256) -> dict[str, float]:
    """Every variant, keyed ``{direction}_{context}_{reduction}`` (e.g. ``forward_causal_sum``)."""
    _check_size(keys)
    out = {}
    for context in CONTEXTS:
        kl = dict(zip(DIRECTIONS, per_item_kl(keys, residuals, tau, context, block_size)))
        for direction in DIRECTIONS:
            for reduction in REDUCTIONS:
                out[f"{direction}_{context}_{reduction}"] = _reduce(kl[direction], reduction)
    return out


def _check_size(keys) -> None:
    if np.asarray(keys).shape[0] < 2:
        raise ValueError("the misalignment score needs at least two edits")


def _reduce(values: np.ndarray, reduction: str) -> float:
    values = values[~np.isnan(values)]
    return float(values.sum() if reduction == "sum" else values.mean())


def load_artefacts(path: str | Path) -> dict[str, np.ndarray]:
    """``z_keys``, ``residuals`` and ``case_ids`` (edit order) from an edit's artefacts.npz
    (massedit.steps.edit_model)."""
    with np.load(path) as data:
        missing = [name for name in ("z_keys", "residuals") if name not in data.files]
        if missing:
            raise ValueError(f"{path}: lacks {missing} (has {data.files})")
        out = {name: data[name] for name in ("z_keys", "residuals", "case_ids") if name in data.files}
    if out["z_keys"].shape[0] != out["residuals"].shape[0]:
        raise ValueError(f"{path}: {out['z_keys'].shape[0]} keys but {out['residuals'].shape[0]} residuals")
    return out


def misalignment_record(artefacts_npz: str | Path, tau: float = TAU, variant: str = DEFAULT_VARIANT,
                        block_size: int = 256) -> dict:
    """What a Table 3 cell needs from one edit: ``misalignment`` (the ``variant`` reported), every variant,
    τ and the number of items. The caller adds the labels (model, method, dataset, n_edits, preset, seed)."""
    data = load_artefacts(artefacts_npz)
    variants = misalignment_variants(data["z_keys"], data["residuals"], tau, block_size)
    if variant not in variants:
        raise ValueError(f"unknown variant {variant!r}; known: {sorted(variants)}")
    return {"misalignment": variants[variant], "variant": variant, "variants": variants, "tau": tau,
            "n_items": int(data["z_keys"].shape[0])}
