"""Per-phase timings of the pipeline on one model: statistics, residual optimisation, solve, evaluation.

Speed is measured here, never in tests. Each phase runs the library code the workflow runs, on a small
sample, and reports its wall time and throughput.
"""
from __future__ import annotations

import platform
import time

import torch

from massedit import io


def _phase(rows: list[dict], name: str, seconds: float, amount: float, unit: str) -> None:
    rows.append({"phase": name, "wall_s": round(seconds, 3), "throughput": round(amount, 4), "unit": unit})


def compare_residual_forwards(model, tokenizer, records: list[dict], method: str, hp: dict, seed: int,
                              add_bos: bool, fast=None) -> list[dict]:
    """Residual optimisation with ``forward: full`` and ``forward: fast`` on the same records: s/edit of each,
    the speed-up, and whether they agree (max over edits of ‖r_fast − r_full‖ / ‖r_full‖, iteration counts).
    ``fast`` reuses a fast run already made (a ``Residuals``)."""
    from massedit.editing.run import compute_residuals

    runs = {"fast": fast} if fast is not None else {}
    for mode in ("full", "fast"):
        if mode not in runs:
            runs[mode] = compute_residuals(model, tokenizer, records, method, {**hp, "forward": mode}, seed, add_bos,
                                           progress=False)
    full, fast = runs["full"], runs["fast"]
    rel = ((fast.residuals - full.residuals).norm(dim=1) / full.residuals.norm(dim=1).clamp_min(1e-30)).max().item()
    rows: list[dict] = []
    for mode, res in (("full", full), ("fast", fast)):
        seconds = res.timings["residuals_s"]
        _phase(rows, f"{method} residuals ({mode})", seconds, seconds / len(records), "s/edit")
        rows[-1]["cpu_s"] = round(res.timings["residuals_cpu_s"], 3)
    rows[-1].update(speedup=round(full.timings["residuals_s"] / fast.timings["residuals_s"], 2),
                    cpu_speedup=round(full.timings["residuals_cpu_s"] / fast.timings["residuals_cpu_s"], 2),
                    max_rel_diff=float(f"{rel:.3g}"), same_iterations=full.iterations == fast.iterations)
    return rows


def run(model_dir: str, hparams: dict[str, dict], n_edits: int = 3, n_docs: int = 64, maxlen: int = 128,
        add_bos: bool = False, seed: int = 0, residuals_only: bool = False) -> list[dict]:
    """Every phase, or with ``residuals_only`` just the residual comparison (no sampling, statistics,
    solve or evaluation). ``hparams`` maps each method to its resolved hyperparameters, as the workflow
    passes them (``massedit.config.resolve_hparams``), so the benchmark times what a run executes."""
    from massedit.architectures import arch_for
    from massedit.corpora import load_documents
    from massedit.datasets.quickstart import build_records
    from massedit.editing.run import Residuals, run_edit
    from massedit.evaluation.counterfact import evaluate_records
    from massedit.models import load_model
    from massedit.stats import second_moments
    from massedit.templates import eval_prefixes

    rows: list[dict] = []
    t0 = time.perf_counter()
    model, tokenizer = load_model(model_dir)
    _phase(rows, "load_model", time.perf_counter() - t0, 1, "models")
    arch = arch_for(model)
    # one statistics pass covers every method's layers, as the workflow shares them
    layers = sorted({int(layer) for hp in hparams.values() for layer in hp["layers"]})
    records = build_records(seed)[:n_edits]
    method_hp = hparams
    if residuals_only:
        for method, hp in method_hp.items():
            rows += compare_residual_forwards(model, tokenizer, records, method, hp, seed, add_bos)
        return _stamp(rows, n_edits)

    t0 = time.perf_counter()
    docs, _ = load_documents({"kind": "model_sample", "doc_tokens": maxlen, "temperature": 1.0}, n_docs, seed,
                             model=model, tokenizer=tokenizer, add_bos=add_bos)
    t_gen = time.perf_counter() - t0
    n_generated = len(docs) * maxlen
    _phase(rows, "generation (corpus sample)", t_gen, n_generated / t_gen, "tokens/s")

    sums, count, info = second_moments(model, tokenizer, arch, layers, docs, maxlen, add_bos, progress=False)
    _phase(rows, "statistics", info["wall_s"], count / info["wall_s"], "tokens/s")
    moments = {layer: sums[layer].double() / count for layer in layers}

    for method, hp in method_hp.items():
        hp = {**hp, "forward": "fast"}
        snapshot = {l: model.get_submodule(arch.mlp_down.format(l)).weight.detach().clone() for l in layers}
        result = run_edit(model, tokenizer, records, moments, method, hp, seed, add_bos, progress=False)
        t = result.timings
        # The comparison runs on the unedited model, so the weights go back first.
        with torch.no_grad():
            for l, w in snapshot.items():
                model.get_submodule(arch.mlp_down.format(l)).weight.copy_(w)
        fast = Residuals(result.templates, result.z_keys, result.residuals, result.h, result.iterations,
                         result.losses, t)
        rows += compare_residual_forwards(model, tokenizer, records, method, hp, seed, add_bos, fast=fast)
        _phase(rows, f"{method} keys (update)", t["keys_s"], t["keys_s"] / len(records), "s/edit")
        _phase(rows, f"{method} solve", t["solve_s"], t["solve_s"] / len(hp["layers"]), "s/layer")

    prefixes = eval_prefixes(model, tokenizer, 5, 10, seed, add_bos)
    t0 = time.perf_counter()
    _, summary = evaluate_records(model, tokenizer, records, prefixes, add_bos, fluency_max_new_tokens=0)
    t_score = time.perf_counter() - t0
    _phase(rows, "evaluation scoring", t_score, t_score / len(records), "s/record")
    t0 = time.perf_counter()
    _, summary = evaluate_records(model, tokenizer, records, prefixes, add_bos, fluency_max_new_tokens=64)
    t_all = time.perf_counter() - t0
    _phase(rows, "evaluation with fluency", t_all, t_all / len(records), "s/record")
    return _stamp(rows, n_edits)


def _stamp(rows: list[dict], n_edits: int) -> list[dict]:
    machine = f"{platform.machine()} {torch.get_num_threads()} threads, torch {torch.__version__}"
    for row in rows:
        row["machine"] = machine
        row["n_edits"] = n_edits
    return rows


def format_rows(rows: list[dict]) -> str:
    lines = [f"{'phase':32s} {'wall s':>9s} {'throughput':>12s}  unit"]
    for r in rows:
        line = f"{r['phase']:32s} {r['wall_s']:9.2f} {r['throughput']:12.3f}  {r['unit']}"
        if "speedup" in r:
            line += (f"   {r['speedup']}x vs full ({r['cpu_speedup']}x in CPU time), "
                     f"max rel diff {r['max_rel_diff']:.2e}, "
                     f"same iterations: {r['same_iterations']}")
        lines.append(line)
    return "\n".join(lines)


def write_csv(rows: list[dict], path: str) -> None:
    import pandas as pd

    io.write_text(path, pd.DataFrame(rows).to_csv(index=False))
