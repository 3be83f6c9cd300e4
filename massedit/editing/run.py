"""One batch of edits from the unedited model: templates → keys → residuals → update.

The method registry (``METHODS``) says, per method, how residuals are optimised (one edit at a time, and
for the independent methods also a block of edits at once: ``batch_edits``), how the update spreads them
over the layers, which module's output the targets refer to, and which update runs (MEMIT's closed form,
AlphaEdit's projected solve, ROME's sequential rank-one edits, or FT's constrained fine-tuning).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from tqdm import tqdm

from massedit.architectures import arch_for, num_layers
from massedit.editing import alphaedit, batched, eamet, ft, memit, pmet, rome
from massedit.editing.keys import compute_keys
from massedit.editing.sharing import SHAREABLE_RESIDUALS, residual_hparams  # noqa: F401 (re-exported)
from massedit.editing.residual import EditPrompts, ResidualResult, build_edit_prompts, check_loss_layer
from massedit.editing.update import apply_multilayer_update
from massedit.templates import context_templates

DEFAULT_BATCH_EDITS = 16


@dataclass
class ResidualContext:
    """What a residual step may read for edit i."""

    model: object
    arch: object
    z_layer: int
    hp: dict
    z_keys: torch.Tensor  # (n, d_ff) z-layer keys of the unedited model
    # Final r_j of the edits already optimised, and their unit vectors, in preallocated (n, d) buffers on the
    # keys' device: edit i reads rows :i as views, so nothing grows or is copied with n (issue "Speed", item 5).
    residuals: torch.Tensor = field(init=False)
    unit_residuals: torch.Tensor = field(init=False)
    unit_keys: torch.Tensor = field(init=False)
    done: int = 0

    def __post_init__(self):
        n, d = self.z_keys.shape[0], self.model.config.hidden_size
        device = self.z_keys.device
        self.residuals = torch.zeros(n, d, device=device)
        self.unit_residuals = torch.zeros(n, d, device=device)
        self.unit_keys = torch.nn.functional.normalize(self.z_keys.float(), dim=1)

    def add(self, delta: torch.Tensor) -> None:
        delta = delta.to(self.residuals.device)
        self.residuals[self.done] = delta
        self.unit_residuals[self.done] = torch.nn.functional.normalize(delta.float(), dim=0)
        self.done += 1


def _eamet_step(ctx: ResidualContext, i: int, prompts: EditPrompts) -> ResidualResult:
    return eamet.optimise_residual(
        ctx.model, ctx.arch, prompts, ctx.z_layer,
        key_norm=ctx.z_keys[i].norm().item(),
        similarities=ctx.unit_keys[:i] @ ctx.unit_keys[i],
        previous=ctx.unit_residuals[:i],
        hp=ctx.hp,
    )


def _memit_step(ctx: ResidualContext, i: int, prompts: EditPrompts) -> ResidualResult:
    return memit.optimise_residual(ctx.model, ctx.arch, prompts, ctx.z_layer, ctx.hp)


def _pmet_step(ctx: ResidualContext, i: int, prompts: EditPrompts) -> ResidualResult:
    return pmet.optimise_residual(ctx.model, ctx.arch, prompts, ctx.z_layer, ctx.hp)


def _block_step(spec: batched.StepSpec):
    """A block of independent edits optimised together (``batched.optimise_block``)."""

    def step(ctx: ResidualContext, indices: list[int], prompts: list[EditPrompts]) -> list[ResidualResult]:
        return batched.optimise_block(ctx.model, ctx.arch, prompts, ctx.z_layer, spec, ctx.hp)

    return step


def _rome_step(ctx: ResidualContext, i: int, prompts: EditPrompts) -> ResidualResult:
    return batched.optimise_block(ctx.model, ctx.arch, [prompts], ctx.z_layer, batched.ROME, ctx.hp)[0]


@dataclass(frozen=True)
class Method:
    """How a method edits. ``step`` optimises one edit's residual; ``block_step``, where the residuals are
    independent, a block of them at once (same results). ``update``: "closed_form" (eq. 5, with
    ``spreading`` over layers and targets at the z-layer ``output`` module), "alphaedit", "rome" or "ft"."""

    step: Callable[[ResidualContext, int, EditPrompts], ResidualResult] | None
    spreading: str
    block_step: Callable | None = None
    update: str = "closed_form"
    output: str = "block"
    templates: Callable = context_templates


METHODS: dict[str, Method] = {
    "eamet": Method(_eamet_step, "linear"),  # sequential: r_i depends on r_0 … r_{i−1}
    "memit": Method(_memit_step, "linear", _block_step(batched.MEMIT)),
    "pmet": Method(_pmet_step, "sqrt", _block_step(batched.PMET), output="mlp_down"),
    "alphaedit": Method(_memit_step, "linear", _block_step(batched.MEMIT), update="alphaedit"),
    "rome": Method(_rome_step, "none", _block_step(batched.ROME), update="rome", templates=rome.rome_templates),
    "ft": Method(None, "none", update="ft"),
}

# A method with a residual step is that step plus how the update spreads the residual over layers.
RESIDUAL_STEPS: dict[str, tuple[Callable[[ResidualContext, int, EditPrompts], ResidualResult], str]] = {
    name: (m.step, m.spreading) for name, m in METHODS.items() if m.step is not None
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
    info: dict = field(default_factory=dict)  # method-specific records, e.g. AlphaEdit's rank(P) per layer


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
    """The residual phase of an edit (templates, z-layer keys, one residual per record), before any update.
    Its tensors are on the CPU."""

    templates: list[list[str]]
    z_keys: torch.Tensor  # (n, d_ff)
    residuals: torch.Tensor  # (n, d)
    h: torch.Tensor  # (n, d)
    iterations: list[int]
    losses: list[dict]
    timings: dict

    def head(self, n: int) -> "Residuals":
        """The first n edits. Each residual depends only on its own record and the earlier ones (EAMET) or on
        its record alone, so these are the residuals a batch of the first n records computes."""
        if n > len(self.iterations):
            raise ValueError(f"asked for the first {n} residuals of {len(self.iterations)}")
        return Residuals(self.templates, self.z_keys[:n], self.residuals[:n], self.h[:n], self.iterations[:n],
                         self.losses[:n], dict(self.timings))


def method_spec(method: str) -> Method:
    """The registry entry; an unknown name lists the available ones."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; available: {sorted(METHODS)}")
    return METHODS[method]


def method_entry(method: str):
    """The method's residual step and spreading rule (None and "none" for FT, which has no residual step)."""
    spec = method_spec(method)
    return spec.step, spec.spreading


def _blocks(prompts: list[EditPrompts], size: int) -> list[list[int]]:
    """Edit indices in blocks of ``size``, edits of similar width together (less padding)."""
    order = sorted(range(len(prompts)), key=lambda i: (prompts[i].input_ids.shape[1], i))
    return [order[start : start + size] for start in range(0, len(order), size)]


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
    """Templates, z-layer keys and the residual r_i of every record, in record order, on the unchanged model.

    Independent methods optimise ``batch_edits`` edits at once (default 16; 1 is the one-at-a-time path);
    EAMET, whose residuals depend on the earlier ones, always runs one at a time."""
    spec = method_spec(method)
    if spec.step is None:
        raise ValueError(f"{method} has no residual step")
    check_loss_layer(hp, num_layers(model))
    arch = arch_for(model)
    z_layer = max(int(x) for x in hp["layers"])
    timings: dict = {}

    t0 = time.perf_counter()
    groups = spec.templates(model, tokenizer, hp.get("templates", {}), seed, add_bos)
    timings["templates_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    z_keys = compute_keys(model, tokenizer, arch, records, groups, [z_layer], add_bos).keys[z_layer]
    timings["z_keys_s"] = time.perf_counter() - t0

    ctx = ResidualContext(model, arch, z_layer, hp, z_keys)
    t0, cpu0 = time.perf_counter(), time.process_time()
    essence = hp.get("essence_prompt", "{} is a")
    prompt_build = hp.get("prompt_build", "ids")
    size = int(hp.get("batch_edits", DEFAULT_BATCH_EDITS)) if spec.block_step is not None else 1
    if size > 1:
        prompts = [build_edit_prompts(tokenizer, groups, r, add_bos, essence, prompt_build) for r in records]
        results: list = [None] * len(records)
        with tqdm(total=len(records), desc=f"{method} residuals", disable=not progress) as bar:
            for block in _blocks(prompts, size):
                for i, result in zip(block, spec.block_step(ctx, block, [prompts[i] for i in block])):
                    results[i] = result
                bar.update(len(block))
        for r in results:
            ctx.add(r.delta)
    else:
        results = []
        for i, record in enumerate(tqdm(records, desc=f"{method} residuals", disable=not progress)):
            result = spec.step(ctx, i, build_edit_prompts(tokenizer, groups, record, add_bos, essence, prompt_build))
            ctx.add(result.delta)
            results.append(result)
    timings["residuals_s"] = time.perf_counter() - t0
    timings["residuals_n"] = len(records)  # the edits residuals_s covers (more than a batch sliced from it)
    # CPU seconds of this process: a fairer comparison than wall time on a machine shared with other jobs.
    timings["residuals_cpu_s"] = time.process_time() - cpu0
    return Residuals(groups, z_keys.cpu(), ctx.residuals.cpu(), torch.stack([r.h.cpu() for r in results]),
                     [r.iterations for r in results], [r.losses for r in results], timings)


def run_edit(
    model,
    tokenizer,
    records: list[dict],
    moments: dict[int, torch.Tensor] | None,
    method: str,
    hp: dict,
    seed: int,
    add_bos: bool,
    progress: bool = True,
    projections: dict[int, torch.Tensor] | None = None,
    residuals: Residuals | None = None,
) -> EditResult:
    """Edit ``records`` into ``model`` in one batch (method.md §2.8, §3.5). The model is changed in place.

    ``moments`` are the second moments C per layer (FT needs none; AlphaEdit none for layers whose null-space
    projector is given in ``projections``, as the workflow caches them). ``residuals`` computed beforehand
    (``compute_residuals`` on the same records, hyperparameters and seed) skip the residual phase."""
    spec = method_spec(method)
    moments = moments or {}
    if spec.update == "ft":
        return _run_ft(model, tokenizer, records, hp, add_bos, progress)
    layers = sorted(int(x) for x in hp["layers"])
    z_layer = layers[-1]
    needed = [layer for layer in layers if spec.update != "alphaedit" or layer not in (projections or {})]
    missing = [layer for layer in needed if layer not in moments]
    if missing:
        raise ValueError(f"statistics lack layers {missing}")
    if spec.update == "rome":
        return _run_rome(model, tokenizer, records, moments, hp, seed, add_bos, progress)
    res = residuals or compute_residuals(model, tokenizer, records, method, hp, seed, add_bos, progress)
    if len(res.iterations) != len(records):
        raise ValueError(f"{len(res.iterations)} residuals for {len(records)} records")
    timings, info = dict(res.timings), {}
    if method == "eamet":
        info["zero_init_edits"] = int(eamet.starts_at_zero(res.h, hp).sum())
    arch = arch_for(model)
    Z = res.h + res.residuals
    if spec.update == "alphaedit":
        t0 = time.perf_counter()
        P = alphaedit.projections_for(moments, layers, float(hp["nullspace_threshold"]), projections)
        timings["projection_s"] = time.perf_counter() - t0
        info["projection_rank"] = {layer: alphaedit.projection_rank(P[layer]) for layer in layers}
        solver = alphaedit.solver(P, float(hp["L2"]), hp.get("alphaedit_solve_dtype", "float32"))
        deltas, update_timings = apply_multilayer_update(
            model, tokenizer, arch, records, res.templates, layers, z_layer, Z, None, None, add_bos, "linear",
            solver=solver,
        )
    else:
        deltas, update_timings = apply_multilayer_update(
            model, tokenizer, arch, records, res.templates, layers, z_layer, Z, moments, layer_lambdas(hp), add_bos,
            spec.spreading, output=spec.output,
        )
    timings.update(update_timings)
    return EditResult(deltas, res.templates, res.z_keys, res.residuals, res.h, res.iterations, res.losses, timings,
                      info)


def _run_rome(model, tokenizer, records, moments, hp, seed, add_bos, progress) -> EditResult:
    """ROME's edits in sequence; with ``sequential_residuals: false`` the residuals come first, batched."""
    layer = int(hp["layers"][0])
    if hp.get("sequential_residuals", True):
        t0 = time.perf_counter()
        groups = rome.rome_templates(model, tokenizer, hp.get("templates", {}), seed, add_bos)
        timings = {"templates_s": time.perf_counter() - t0}
        out = rome.run(model, tokenizer, records, moments[layer], hp, groups, add_bos, progress)
    else:
        res = compute_residuals(model, tokenizer, records, "rome", hp, seed, add_bos, progress)
        groups, timings = res.templates, dict(res.timings)
        out = rome.run(model, tokenizer, records, moments[layer], hp, groups, add_bos, progress, precomputed=res)
        out.timings.pop("residuals_s")
    timings.update(out.timings)
    return EditResult(out.deltas, groups, out.z_keys, out.residuals, out.h, out.iterations, out.losses, timings)


def _run_ft(model, tokenizer, records, hp, add_bos, progress) -> EditResult:
    """FT has no residuals: the artefacts hold empty (n, 0) arrays and the epochs run for every record."""
    out = ft.run(model, tokenizer, records, hp, add_bos, progress)
    empty = torch.zeros(len(records), 0)
    timings = {"residuals_s": 0.0, **out.timings}
    return EditResult(out.deltas, [["{}"]], empty, empty, empty, [out.epochs] * len(records),
                      [{"epoch_loss": out.epoch_losses[-1]}] * len(records), timings,
                      {"epoch_losses": out.epoch_losses})
