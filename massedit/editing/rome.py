"""ROME: one rank-one update of one layer's MLP down-projection per edit, applied edit after edit
(method.md §4.6: "layer 3; sequential rank-one edits; 10 + 10 templates of length 5 and 10"; Meng et al.
2022, the closed form with the second-moment statistics C).

For edit i at layer ℓ:

* direction u_i = C⁻¹ k̄_i, with k̄_i the key averaged *uniformly* over all context templates (ROME's
  ``compute_u``; ``mom2_adjustment: false`` uses k̄_i itself);
* value v*_i = a_i + δ_i: a_i is the MLP output of layer ℓ at the bare prompt's subject token and δ_i is
  optimised with MEMIT's loss added at that MLP output (``batched.ROME``: decay ‖δ‖/‖a‖², clamp
  ``clamp_norm_factor``·‖a‖, stop below ``early_stop``);
* ΔW_i = (v*_i − W k*_i) u_iᵀ / (u_iᵀ k*_i), so that (W + ΔW_i) k*_i = v*_i. The authors' code takes k*_i
  from the bare prompt (``rome_map_key: bare``); the paper's formula uses k̄_i (``average``).

Edits at layer ℓ do not change the keys at layer ℓ, so keys and directions are computed once. With
``sequential_residuals: true`` (the paper's mass-editing protocol, default) δ_i is optimised on the model
that already holds edits 0…i−1; with ``false`` all δ are optimised on the unedited model first (and can
then be batched, ``batch_edits``), and the rank-one updates are still applied in sequence against the
current W.

Hyperparameters: ``layers`` (one layer), ``v_lr``, ``v_num_grad_steps``, ``kl_factor``, ``v_weight_decay``,
``clamp_norm_factor``, ``early_stop``, ``mom2_adjustment``, ``rome_map_key``, ``sequential_residuals``,
``templates`` (``lengths`` [[length, count], …] in tokens including the seed, ``top_k``, ``seed_text``:
ROME continues its EOS token; default the tokenizer's EOS, else BOS).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from massedit.architectures import add_to_down_proj, arch_for, get_module
from massedit.editing.batched import ROME, optimise_block
from massedit.editing.keys import compute_keys
from massedit.editing.residual import build_edit_prompts
from massedit.templates import sample_continuations


def rome_templates(model, tokenizer, cfg: dict, seed: int, add_bos: bool) -> list[list[str]]:
    """One group, so that keys average uniformly: the bare prompt and, per (length, count) in
    ``cfg["lengths"]``, ``count`` continuations of the seed text with ``length − 1`` new tokens."""
    seed_text = cfg.get("seed_text") or tokenizer.eos_token or tokenizer.bos_token
    texts: list[str] = []
    for i, (length, count) in enumerate(cfg.get("lengths", [[5, 10], [10, 10]])):
        texts += sample_continuations(model, tokenizer, [seed_text] * int(count), int(length) - 1, seed + i, add_bos,
                                      temperature=float(cfg.get("temperature", 1.0)), top_k=int(cfg.get("top_k", 5)),
                                      top_p=float(cfg.get("top_p", 1.0)))
    return [["{}"] + [t.replace("{", "").replace("}", "") + ". {}" for t in texts]]


def rank_one_delta(direction: torch.Tensor, key: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """ΔW = r uᵀ / (uᵀ k) in fp64: ΔW k = r, and ΔW x = 0 for every x with uᵀx = 0."""
    u, k, r = direction.double(), key.double(), residual.double()
    return torch.outer(r, u) / (u @ k)


def rome_delta(C: torch.Tensor, key: torch.Tensor, value: torch.Tensor, W: torch.Tensor,
               map_key: torch.Tensor | None = None) -> torch.Tensor:
    """The closed form (v* − W k*)(C⁻¹k̄)ᵀ / ((C⁻¹k̄)ᵀ k*) for W (d, d_ff) without bias; k̄ = ``key``,
    k* = ``map_key`` (default ``key``)."""
    k_star = key if map_key is None else map_key
    u = torch.linalg.solve(C.double(), key.double())
    return rank_one_delta(u, k_star, value.double() - W.double() @ k_star.double())


@dataclass
class RomeResult:
    deltas: dict[int, torch.Tensor]  # layer -> summed ΔW (d, d_ff) fp32
    z_keys: torch.Tensor  # (n, d_ff) template-averaged keys k̄
    residuals: torch.Tensor  # (n, d) δ_i
    h: torch.Tensor  # (n, d) a_i, the MLP output before δ
    iterations: list[int]
    losses: list[dict]
    timings: dict = field(default_factory=dict)


def run(model, tokenizer, records: list[dict], moment: torch.Tensor, hp: dict, groups: list[list[str]],
        add_bos: bool, progress: bool = True, precomputed=None) -> RomeResult:
    """Apply the edits one after another, in place. ``precomputed`` (a ``run.Residuals`` computed on the
    unedited model) supplies δ and a when ``sequential_residuals`` is false."""
    arch = arch_for(model)
    layers = [int(x) for x in hp["layers"]]
    if len(layers) != 1:
        raise ValueError(f"ROME edits one layer, got {layers}")
    layer = layers[0]
    timings: dict = {}
    t0 = time.perf_counter()
    keys = compute_keys(model, tokenizer, arch, records, groups, [layer], add_bos).keys[layer]
    map_key = hp.get("rome_map_key", "bare")
    if map_key == "bare":
        k_star = compute_keys(model, tokenizer, arch, records, [["{}"]], [layer], add_bos).keys[layer]
    elif map_key == "average":
        k_star = keys
    else:
        raise ValueError(f"rome_map_key must be 'bare' or 'average', not {map_key!r}")
    directions = keys.double().T  # on the keys' device (the model's), as is the rest of the update
    if hp.get("mom2_adjustment", True):
        # C⁻¹ k̄, all edits at once
        directions = torch.linalg.solve(moment.to(device=directions.device, dtype=torch.float64), directions)
    timings["keys_s"] = time.perf_counter() - t0

    module = get_module(model, arch.name("mlp_down", layer))
    weight = module.weight
    total = torch.zeros(model.config.hidden_size, keys.shape[1], dtype=torch.float64, device=directions.device)
    deltas_r, hs, iterations, losses = [], [], [], []
    essence = hp.get("essence_prompt", "{} is a")
    t_res = t_solve = 0.0
    for i, record in enumerate(tqdm(records, desc="rome edits", disable=not progress)):
        t0 = time.perf_counter()
        if precomputed is None:
            prompts = build_edit_prompts(tokenizer, groups, record, add_bos, essence, hp.get("prompt_build", "ids"))
            result = optimise_block(model, arch, [prompts], layer, ROME, hp)[0]
            delta, h, its, loss = result.delta, result.h, result.iterations, result.losses
        else:
            delta, h = precomputed.residuals[i], precomputed.h[i]
            its, loss = precomputed.iterations[i], precomputed.losses[i]
        t_res += time.perf_counter() - t0
        t0 = time.perf_counter()
        with torch.no_grad():  # W k* + bias with the current weights
            current = module(k_star[i].to(device=weight.device, dtype=weight.dtype)).double().to(directions.device)
        update = rank_one_delta(directions[:, i], k_star[i], (h + delta).double().to(directions.device) - current)
        add_to_down_proj(model, arch, layer, update)
        total += update
        t_solve += time.perf_counter() - t0
        deltas_r.append(delta)
        hs.append(h)
        iterations.append(its)
        losses.append(loss)
    timings.update(residuals_s=t_res, solve_s=t_solve)
    return RomeResult({layer: total.float()}, keys.cpu(), torch.stack(deltas_r), torch.stack(hs), iterations, losses,
                      timings)
