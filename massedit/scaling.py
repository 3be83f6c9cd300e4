"""How the phases whose cost grows with the number of edits n scale (issue "Speed", item 5).

Everything else in an edit is per edit (residual optimisation, keys) or fixed (statistics). What grows
with n is: the closed-form update (KKᵀ, the solves, ΔW), EAMET's alignment terms for edit i (cosines to
the i earlier residuals and keys, the softmax over them, the top-M), and Table 3's misalignment score. Each
runs here on random data of the model's shapes, so n can reach 100,000 without optimising 100,000
residuals; wall time and peak memory are measured per n as in massedit.benchmark.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from massedit.benchmark import PeakMemory, phase_row


def _timed(fn, device):
    with PeakMemory(device) as memory:
        t0 = time.perf_counter()
        fn()
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize(device)
        wall = time.perf_counter() - t0
    return wall, memory


def update_row(n: int, d: int, d_ff: int, device="cpu", seed: int = 0) -> dict:
    """One layer's closed form for n edits (keys fp32 as the workflow holds them, solve in fp64 blocks)."""
    from massedit.editing.update import closed_form_delta

    g = torch.Generator(device="cpu").manual_seed(seed)
    X = torch.randn(d_ff, 2 * d_ff, generator=g)
    C = (X @ X.T / (2 * d_ff)).to(device)
    K = torch.randn(d_ff, n, generator=g).to(device)
    R = torch.randn(d, n, generator=g).to(device)
    wall, memory = _timed(lambda: closed_form_delta(C, K, R, 1000.0), device)
    return phase_row(f"update, n={n}", wall, 1, "s/layer", memory=memory, n_edits=n, d=d, d_ff=d_ff)


def alignment_row(n: int, d: int, d_ff: int, device="cpu", steps: int = 25, top_m: int = 50, seed: int = 0) -> dict:
    """EAMET's alignment terms for the last edit of a batch of n (i = n − 1 earlier items), forward and
    backward for ``steps`` iterations, as one residual optimisation runs them."""
    from massedit.editing.alignment import kl_alignment, residual_cosines, topm_mse_alignment

    g = torch.Generator(device="cpu").manual_seed(seed)
    keys = torch.nn.functional.normalize(torch.randn(n, d_ff, generator=g), dim=1).to(device)
    previous = torch.nn.functional.normalize(torch.randn(n - 1, d, generator=g), dim=1).to(device)
    delta = torch.randn(d, generator=g).to(device).requires_grad_(True)

    def run():
        s = keys[:-1] @ keys[-1]
        for _ in range(steps):
            u = residual_cosines(delta, previous)
            loss = 2 * kl_alignment(s, u, 0.07) + 8 * topm_mse_alignment(s, u, 0.07, top_m)
            loss.backward()
            delta.grad = None

    wall, memory = _timed(run, device)
    return phase_row(f"EAMET alignment terms, i={n - 1}", wall, 1, "s/edit", memory=memory, n_edits=n, d=d,
                     d_ff=d_ff)


def misalignment_row(n: int, d: int, d_ff: int, seed: int = 0) -> dict:
    from massedit.reporting.misalignment import misalignment_score

    rng = np.random.default_rng(seed)
    keys = rng.standard_normal((n, d_ff), dtype=np.float32)
    residuals = rng.standard_normal((n, d), dtype=np.float32)
    wall, memory = _timed(lambda: misalignment_score(keys, residuals), "cpu")
    return phase_row(f"misalignment score, n={n}", wall, 1, "s", memory=memory, n_edits=n, d=d, d_ff=d_ff)


def run(ns: list[int], d: int, d_ff: int, device="cpu", misalignment_up_to: int = 20000) -> list[dict]:
    rows = []
    for n in ns:
        rows.append(update_row(n, d, d_ff, device))
        rows.append(alignment_row(n, d, d_ff, device))
        if n <= misalignment_up_to:
            rows.append(misalignment_row(n, d, d_ff))
    return rows
