"""One batch of edits from the unedited model: templates → keys → residuals → multi-layer update."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from tqdm import tqdm

from massedit.architectures import arch_for
from massedit.editing import eamet, memit
from massedit.editing.keys import compute_keys
from massedit.editing.residual import EditPrompts, ResidualResult, build_edit_prompts
from massedit.editing.update import apply_multilayer_update
from massedit.templates import context_templates


@dataclass
class ResidualContext:
    """What a residual step may read for edit i."""

    model: object
    arch: object
    z_layer: int
    hp: dict
    z_keys: torch.Tensor  # (n, d_ff) z-layer keys of the unedited model
    residuals: list[torch.Tensor] = field(default_factory=list)  # final r_j of the edits already optimised


def _eamet_step(ctx: ResidualContext, i: int, prompts: EditPrompts) -> ResidualResult:
    previous = torch.stack(ctx.residuals) if ctx.residuals else torch.zeros(0, ctx.model.config.hidden_size)
    return eamet.optimise_residual(
        ctx.model, ctx.arch, prompts, ctx.z_layer,
        key_norm=ctx.z_keys[i].norm().item(),
        similarities=eamet.key_similarities(ctx.z_keys, i),
        previous=previous,
        hp=ctx.hp,
    )


def _memit_step(ctx: ResidualContext, i: int, prompts: EditPrompts) -> ResidualResult:
    return memit.optimise_residual(ctx.model, ctx.arch, prompts, ctx.z_layer, ctx.hp)


# A method is its residual step plus how the update spreads the residual over layers.
RESIDUAL_STEPS: dict[str, tuple[Callable[[ResidualContext, int, EditPrompts], ResidualResult], str]] = {
    "eamet": (_eamet_step, "linear"),
    "memit": (_memit_step, "linear"),
}


@dataclass
class EditResult:
    deltas: dict[int, torch.Tensor]  # layer -> ΔW (d, d_ff)
    templates: list[list[str]]
    z_keys: torch.Tensor  # (n, d_ff)
    residuals: torch.Tensor  # (n, d)
    h: torch.Tensor  # (n, d)
    iterations: list[int]
    losses: list[dict]
    timings: dict


def layer_lambdas(hp: dict) -> list[float]:
    lam = hp["mom2_update_weight"]
    layers = hp["layers"]
    if isinstance(lam, (int, float)):
        return [float(lam)] * len(layers)
    if len(lam) != len(layers):
        raise ValueError(f"mom2_update_weight has {len(lam)} values for {len(layers)} layers")
    return [float(x) for x in lam]


@dataclass
class Residuals:
    """The residual phase of an edit (templates, z-layer keys, one residual per record), before any update."""

    templates: list[list[str]]
    z_keys: torch.Tensor  # (n, d_ff)
    residuals: torch.Tensor  # (n, d)
    h: torch.Tensor  # (n, d)
    iterations: list[int]
    losses: list[dict]
    timings: dict


def method_entry(method: str):
    """The method's residual step and spreading rule; an unknown name lists the available ones."""
    if method not in RESIDUAL_STEPS:
        raise ValueError(f"unknown method {method!r}; available: {sorted(RESIDUAL_STEPS)}")
    return RESIDUAL_STEPS[method]


def compute_residuals(
    model,
    tokenizer,
    records: list[dict],
    method: str,
    hp: dict,
    seed: int,
    add_bos: bool,
    progress: bool = True,
) -> Residuals:
    """Templates, z-layer keys and the residual r_i of every record, in record order, on the unchanged model."""
    step, _ = method_entry(method)
    arch = arch_for(model)
    z_layer = max(int(x) for x in hp["layers"])
    timings: dict = {}

    t0 = time.perf_counter()
    groups = context_templates(model, tokenizer, hp.get("templates", {}), seed, add_bos)
    timings["templates_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    z_keys = compute_keys(model, tokenizer, arch, records, groups, [z_layer], add_bos).keys[z_layer]
    timings["z_keys_s"] = time.perf_counter() - t0

    ctx = ResidualContext(model, arch, z_layer, hp, z_keys)
    hs, iterations, losses = [], [], []
    t0, cpu0 = time.perf_counter(), time.process_time()
    essence = hp.get("essence_prompt", "{} is a")
    prompt_build = hp.get("prompt_build", "ids")
    for i, record in enumerate(tqdm(records, desc=f"{method} residuals", disable=not progress)):
        prompts = build_edit_prompts(tokenizer, groups, record, add_bos, essence, prompt_build)
        result = step(ctx, i, prompts)
        ctx.residuals.append(result.delta)
        hs.append(result.h)
        iterations.append(result.iterations)
        losses.append(result.losses)
    timings["residuals_s"] = time.perf_counter() - t0
    # CPU seconds of this process: a fairer comparison than wall time on a machine shared with other jobs.
    timings["residuals_cpu_s"] = time.process_time() - cpu0
    return Residuals(groups, z_keys, torch.stack(ctx.residuals), torch.stack(hs), iterations, losses, timings)


def run_edit(
    model,
    tokenizer,
    records: list[dict],
    moments: dict[int, torch.Tensor],
    method: str,
    hp: dict,
    seed: int,
    add_bos: bool,
    progress: bool = True,
) -> EditResult:
    """Edit ``records`` into ``model`` in one batch (method.md §2.8, §3.5). The model is changed in place."""
    _, spreading = method_entry(method)
    arch = arch_for(model)
    layers = sorted(int(x) for x in hp["layers"])
    z_layer = layers[-1]
    missing = [layer for layer in layers if layer not in moments]
    if missing:
        raise ValueError(f"statistics lack layers {missing}")
    res = compute_residuals(model, tokenizer, records, method, hp, seed, add_bos, progress)
    timings = dict(res.timings)
    deltas, update_timings = apply_multilayer_update(
        model, tokenizer, arch, records, res.templates, layers, z_layer, res.h + res.residuals, moments,
        layer_lambdas(hp), add_bos, spreading,
    )
    timings.update(update_timings)
    return EditResult(deltas, res.templates, res.z_keys, res.residuals, res.h, res.iterations, res.losses, timings)
