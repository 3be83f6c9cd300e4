"""One function per workflow rule. Arguments are file paths and plain config values; each function loads
what it needs, calls the library and writes its outputs atomically with a provenance record."""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch

from massedit import io

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------- helpers


def _model_manifest(model_dir: str) -> dict:
    path = Path(model_dir).parent / "manifest.json"
    return io.read_json(path) if path.exists() else {}


def _model_fingerprint(model_dir: str) -> str:
    """Identity of the weights: the hash of their sha256 list in the model manifest."""
    weights = _model_manifest(model_dir).get("weights")
    return io.sha256_json(weights) if weights else "unknown"


def _load(model_dir: str, model_cfg: dict):
    from massedit.models import load_model

    return load_model(model_dir, dtype=model_cfg.get("dtype", "float32"))


def _add_bos(model_cfg: dict) -> bool:
    return bool(model_cfg.get("bos", False))


def load_moments(stats_npz: str, layers: list[int], model_dir: str | None = None) -> dict[int, torch.Tensor]:
    """C_ℓ = sum/count in fp64 for ``layers``, checked against the sidecar (layers present, same model)."""
    data = np.load(stats_npz)
    stored = [int(x) for x in data["layers"]]
    missing = [layer for layer in layers if layer not in stored]
    if missing:
        raise ValueError(f"{stats_npz}: statistics lack layers {missing} (have {stored})")
    sidecar = Path(stats_npz).with_suffix(".json")
    if model_dir is not None and sidecar.exists():
        recorded = io.read_json(sidecar).get("model_fingerprint")
        current = _model_fingerprint(model_dir)
        if recorded and current != "unknown" and recorded != current:
            raise ValueError(f"{stats_npz}: computed for other weights ({recorded[:12]}…, now {current[:12]}…)")
    count = int(data["count"])
    return {layer: torch.from_numpy(data[f"sum_{layer}"]).double() / count for layer in layers}


# ------------------------------------------------------------------------------------------------- rules


def acquire_model(name: str, spec: dict, out_dir: str, manifest: str, fingerprint: str, download_dir: str) -> None:
    """The model directory, its manifest, and a fingerprint holding only the checksums of its files: a
    stable, content-only identity that the statistics depend on (so their between-workflow cache key
    does not change with the acquisition's wall time or the directory's location)."""
    from massedit.models import acquire_model as acquire

    described = acquire(name, spec, out_dir, manifest, download_dir)
    io.write_json(fingerprint, {"weights": described["weights"], "files": described["files"]})



def prepare_dataset(name: str, spec: dict, mirror_dir: str | None, download_dir: str, out_records: str,
                    out_manifest: str) -> None:
    from massedit.datasets import prepare_dataset as prepare
    from massedit.datasets.sources import effective_mirror_dir

    records, manifest = prepare(spec, effective_mirror_dir(mirror_dir), download_dir)
    io.write_jsonl(out_records, records)
    io.write_json(out_manifest, {"dataset": name, **manifest, "library_versions": io.library_versions()})


def select_edits(records: str, model_dir: str, model_cfg: dict, dataset_spec: dict, n: int, seed: int,
                 out_records: str, out_manifest: str) -> None:
    """Optionally keep only facts the unedited model answers correctly, then take the first n (or a seeded
    sample, ``select: sample`` in the dataset spec)."""
    from massedit.datasets.selection import ordered_ids_hash, select_records

    rows = io.read_jsonl(records)
    known_info = None
    if dataset_spec.get("keep_known", False):
        from massedit.evaluation.counterfact import known_mask

        model, tokenizer = _load(model_dir, model_cfg)
        mask = known_mask(model, tokenizer, rows, _add_bos(model_cfg))
        known_info = {"n_candidates": len(rows), "n_known": int(sum(mask)),
                      "known_case_ids": [r["case_id"] for r, k in zip(rows, mask) if k]}
        rows = [r for r, k in zip(rows, mask) if k]
        log.info("%d of %d facts are known to the unedited model", len(rows), known_info["n_candidates"])
    mode = dataset_spec.get("select", "first")
    chosen = select_records(rows, int(n), mode, seed)
    io.write_jsonl(out_records, chosen)
    io.write_json(out_manifest, {
        "n": int(n), "mode": mode, "seed": seed, "input_sha256": io.sha256_file(records),
        "keep_known": known_info, "case_ids": [r["case_id"] for r in chosen],
        "ordered_ids_sha256": ordered_ids_hash(chosen), "model_fingerprint": _model_fingerprint(model_dir),
    })


def compute_stats(model_dir: str, model_cfg: dict, layers: list[int], corpus_name: str, corpus_spec: dict,
                  stats_cfg: dict, mirror_dir: str | None, seed: int, out_npz: str, out_json: str) -> None:
    from massedit.architectures import arch_for
    from massedit.corpora import load_documents
    from massedit.datasets.sources import effective_mirror_dir
    from massedit.stats import second_moments

    t0 = time.perf_counter()
    model, tokenizer = _load(model_dir, model_cfg)
    add_bos = _add_bos(model_cfg)
    docs, provenance = load_documents(corpus_spec, int(stats_cfg["n_docs"]), seed, effective_mirror_dir(mirror_dir),
                                      model, tokenizer, add_bos)
    t_docs = time.perf_counter() - t0
    sums, count, info = second_moments(model, tokenizer, arch_for(model), list(layers), docs,
                                       int(stats_cfg["maxlen"]), add_bos, stats_cfg.get("dtype", "float32"),
                                       int(stats_cfg.get("batch_tokens", 4096)))
    io.save_npz(out_npz, layers=np.array(sorted(layers)), count=np.array(count),
                **{f"sum_{layer}": sums[layer].numpy() for layer in layers})
    tokenizer_file = Path(model_dir) / "tokenizer.json"
    io.write_json(out_json, {
        "layers": sorted(layers), "n_tokens": count, "corpus": corpus_name, "corpus_provenance": provenance,
        "n_docs": int(stats_cfg["n_docs"]), "maxlen": int(stats_cfg["maxlen"]), "dtype": stats_cfg.get("dtype"),
        "seed": seed, "bos": add_bos, "model_fingerprint": _model_fingerprint(model_dir),
        "tokenizer_sha256": io.sha256_file(tokenizer_file) if tokenizer_file.exists() else None,
        "documents_s": t_docs, "tokens_per_s": count / max(info["wall_s"], 1e-9), **info,
        "total_wall_s": time.perf_counter() - t0, "library_versions": io.library_versions(),
    })


def generate_prefixes(model_dir: str, model_cfg: dict, prefix_len: int, n_prefixes: int, seed: int,
                      out_json: str) -> None:
    from massedit.templates import eval_prefixes

    model, tokenizer = _load(model_dir, model_cfg)
    prefixes = eval_prefixes(model, tokenizer, int(prefix_len), int(n_prefixes), seed, _add_bos(model_cfg))
    io.write_json(out_json, {"prefixes": prefixes, "prefix_len": int(prefix_len), "seed": seed,
                             "model_fingerprint": _model_fingerprint(model_dir)})


def edit_model(method: str, hparams: dict, model_dir: str, model_cfg: dict, records: str, stats_npz: str,
               seed: int, out_deltas: str, out_artefacts: str, out_meta: str) -> None:
    from massedit.architectures import arch_for
    from massedit.datasets.selection import ordered_ids_hash
    from massedit.editing.run import run_edit

    t0 = time.perf_counter()
    model, tokenizer = _load(model_dir, model_cfg)
    rows = io.read_jsonl(records)
    moments = load_moments(stats_npz, [int(x) for x in hparams["layers"]], model_dir)
    t_load = time.perf_counter() - t0
    result = run_edit(model, tokenizer, rows, moments, method, hparams, seed, _add_bos(model_cfg))
    arch = arch_for(model)
    io.save_torch(out_deltas, {
        "method": method,
        "deltas": {int(layer): delta for layer, delta in result.deltas.items()},
        "modules": {int(layer): arch.mlp_down.format(layer) for layer in result.deltas},
        "model_fingerprint": _model_fingerprint(model_dir),
    })
    io.save_npz(out_artefacts, case_ids=np.array([str(r["case_id"]) for r in rows]),
                z_keys=result.z_keys.numpy(), residuals=result.residuals.numpy(), h=result.h.numpy(),
                iterations=np.array(result.iterations))
    n = len(rows)
    io.write_json(out_meta, {
        "method": method, "hparams": hparams, "seed": seed, "n_edits": n, "bos": _add_bos(model_cfg),
        "ordered_ids_sha256": ordered_ids_hash(rows), "records_sha256": io.sha256_file(records),
        "stats": str(stats_npz), "model_fingerprint": _model_fingerprint(model_dir),
        "templates": result.templates, "templates_sha256": io.sha256_json(result.templates),
        "iterations": result.iterations, "final_losses": result.losses,
        "timings": {"load_s": t_load, **result.timings,
                    "residual_s_per_edit": result.timings["residuals_s"] / max(n, 1),
                    "total_s": time.perf_counter() - t0},
        "delta_norms": {int(layer): float(d.norm()) for layer, d in result.deltas.items()},
        "library_versions": io.library_versions(),
    })


def evaluate_model(model_dir: str, model_cfg: dict, records: str, prefixes: str, deltas: str | None,
                   eval_cfg: dict, out_records: str, out_summary: str, labels: dict) -> None:
    from massedit.architectures import arch_for
    from massedit.editing.update import apply_deltas
    from massedit.evaluation.counterfact import evaluate_records

    t0 = time.perf_counter()
    model, tokenizer = _load(model_dir, model_cfg)
    if deltas:
        saved = torch.load(deltas, weights_only=True)
        if saved.get("model_fingerprint") not in (None, "unknown", _model_fingerprint(model_dir)):
            raise ValueError(f"{deltas}: the deltas were computed for other weights")
        apply_deltas(model, arch_for(model), saved["deltas"])
    rows = io.read_jsonl(records)
    prefix_data = io.read_json(prefixes)
    per_record, summary = evaluate_records(
        model, tokenizer, rows, prefix_data["prefixes"], _add_bos(model_cfg),
        batch_size=int(eval_cfg.get("batch_size", 32)),
        fluency_max_new_tokens=int(eval_cfg.get("fluency_max_new_tokens", 64)),
    )
    io.write_jsonl(out_records, per_record)
    io.write_json(out_summary, {
        **labels, **summary, "prefix_len": prefix_data["prefix_len"], "prefix_seed": prefix_data["seed"],
        "prefixes_sha256": io.sha256_json(prefix_data["prefixes"]), "records_sha256": io.sha256_file(records),
        "deltas": deltas, "eval_settings": eval_cfg, "wall_s": time.perf_counter() - t0,
        "seconds_per_record": (time.perf_counter() - t0) / max(len(rows), 1),
        "library_versions": io.library_versions(),
    })


def make_tables(summaries: list[str], out_csv: str, out_md: str) -> None:
    from massedit.reporting import main_table, write_table

    write_table(main_table([io.read_json(p) for p in summaries]), out_csv, out_md)


def plot_scaling(summaries: list[str], out_png: str) -> None:
    from massedit.reporting import plot_scaling as plot

    plot([io.read_json(p) for p in summaries], out_png)
