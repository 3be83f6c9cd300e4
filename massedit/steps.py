"""One function per workflow rule. Arguments are file paths and plain config values; each function loads
what it needs, calls the library and writes its outputs atomically with a provenance record."""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from massedit import caches, io

# torch is imported where it is used: the report rules' environment has no torch.

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------- helpers


def _model_manifest(model_dir: str) -> dict:
    path = Path(model_dir).parent / "manifest.json"
    return io.read_json(path) if path.exists() else {}


def _model_fingerprint(model_dir: str) -> str:
    """Identity of the weights: the hash of their sha256 list in the model manifest."""
    weights = _model_manifest(model_dir).get("weights")
    return io.sha256_json(weights) if weights else "unknown"


def _device(model_cfg: dict) -> str:
    """The model setting ``device`` resolved: "auto" is CUDA when available, else the CPU."""
    import torch

    device = model_cfg.get("device", "auto")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("model setting device: cuda, but no CUDA device is available (use auto or cpu)")
    return device


def _load(model_dir: str, model_cfg: dict):
    """The model on the configured device (``device``, default "auto"), and its tokenizer."""
    from massedit.models import load_model

    device = _device(model_cfg)
    log.info("loading %s on %s", model_dir, device)
    return load_model(model_dir, dtype=model_cfg.get("dtype", "float32"), device=device)


def _add_bos(model_cfg: dict) -> bool:
    return bool(model_cfg.get("bos", False))


def _write_timings(path: str | None, timings: dict) -> None:
    """Wall-clock times go to the job's own timings file (declared next to its outputs), never into the
    results, so that the results of a rerun are byte-identical; without a timings file, to the log."""
    if path:
        io.write_json(path, timings)
    else:
        log.info("timings: %s", io.dumps_json(timings, indent=None))


def expected_stats_key(model_dir: str, model_cfg: dict, settings: dict) -> dict:
    """The key a statistics file must carry for this model: ``settings`` are the config's (corpus, corpus_spec,
    layers, n_docs, maxlen, dtype, seed; rules/stats.smk ``stats_settings``)."""
    return caches.stats_key(_model_fingerprint(model_dir), model_cfg, settings["corpus"], settings["corpus_spec"],
                            settings["layers"], settings["n_docs"], settings["maxlen"], settings["dtype"],
                            settings["seed"])


def load_moments(stats_npz: str, layers: list[int], model_dir: str | None = None,
                 expected: dict | None = None) -> dict[int, torch.Tensor]:
    """C_ℓ = sum/count in fp64 for ``layers`` from a verified statistics file (caches.load_stats): its bytes,
    its format, the fields of ``expected`` (a stats key, e.g. expected_stats_key's) and, given ``model_dir``,
    the model's weights. On the CPU (the solves move them to the keys' device)."""
    import torch

    expected = dict(expected or {})
    if model_dir is not None and _model_fingerprint(model_dir) != "unknown":
        expected["model_fingerprint"] = _model_fingerprint(model_dir)
    sums, count, _ = caches.load_stats(stats_npz, layers, expected)
    return {layer: torch.from_numpy(sums[layer]).double() / count for layer in layers}


def stats_record(stats_npz: str) -> dict:
    """What an edit records about the statistics it used: the file, its sha256 and its stored key."""
    return {"path": str(stats_npz), "sha256": io.sha256_file(stats_npz), "key": caches.read_stats_key(stats_npz)}


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


def filter_known(records: str, model_dir: str, model_cfg: dict, out_records: str, out_manifest: str) -> None:
    """Keep the facts the unedited model already answers (practical test on the bare prompt), in file order.
    Runs once per model and dataset; every batch size then selects from its output."""
    from massedit.evaluation.counterfact import known_mask

    rows = io.read_jsonl(records)
    model, tokenizer = _load(model_dir, model_cfg)
    mask = known_mask(model, tokenizer, rows, _add_bos(model_cfg))
    kept = [r for r, k in zip(rows, mask) if k]
    log.info("%d of %d facts are known to the unedited model", len(kept), len(rows))
    io.write_jsonl(out_records, kept)
    io.write_json(out_manifest, {
        "n_candidates": len(rows), "n_known": len(kept), "known_case_ids": [r["case_id"] for r in kept],
        "input_sha256": io.sha256_file(records), "model_fingerprint": _model_fingerprint(model_dir),
    })


def prepare_general_task(task: str, mirror_dir: str | None, download_dir: str, subdir: str, out_json: str,
                         out_manifest: str) -> None:
    from massedit.datasets.general_tasks import prepare_task
    from massedit.datasets.sources import effective_mirror_dir

    examples, provenance = prepare_task(task, effective_mirror_dir(mirror_dir), download_dir, subdir)
    io.write_json(out_json, examples)
    io.write_json(out_manifest, {"task": task, "n_examples": len(examples), "source": provenance,
                                 "library_versions": io.library_versions()})


def select_edits(records: str, known_manifest: str | None, dataset_spec: dict, n: int, seed: int,
                 out_records: str, out_manifest: str) -> None:
    """The first n records (or a seeded sample, ``select: sample`` in the dataset spec) of the dataset, or of
    the facts the model knows when ``known_manifest`` (filter_known's) is given."""
    from massedit.datasets.selection import ordered_ids_hash, select_records

    rows = io.read_jsonl(records)
    mode = dataset_spec.get("select", "first")
    requested = int(n)
    if dataset_spec.get("at_most", False):
        n = min(requested, len(rows))
    chosen = select_records(rows, int(n), mode, seed)
    io.write_jsonl(out_records, chosen)
    # n is what the batch edits; the tables show it (the summaries' n_records), not the requested size.
    io.write_json(out_manifest, {
        "n": int(n), "n_requested": requested, "mode": mode, "seed": seed,
        "input_sha256": io.sha256_file(records),
        "keep_known": io.read_json(known_manifest) if known_manifest else None,
        "case_ids": [r["case_id"] for r in chosen], "ordered_ids_sha256": ordered_ids_hash(chosen),
    })


def compute_stats(model_dir: str, model_cfg: dict, layers: list[int], corpus_name: str, corpus_spec: dict,
                  stats_cfg: dict, mirror_dir: str | None, seed: int, out_npz: str, out_json: str,
                  out_timings: str | None = None) -> None:
    """The statistics file (caches.save_stats: sums, token count and key), a JSON sidecar with the key, the
    corpus's provenance and the library versions, and the timings apart."""
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
    key = caches.stats_key(_model_fingerprint(model_dir), model_cfg, corpus_name, corpus_spec, layers,
                           stats_cfg["n_docs"], stats_cfg["maxlen"], stats_cfg.get("dtype", "float32"), seed)
    caches.save_stats(out_npz, key, {layer: sums[layer] for layer in layers}, count)
    tokenizer_file = Path(model_dir) / "tokenizer.json"
    wall_s = info.pop("wall_s")
    io.write_json(out_json, {
        "key": key, "n_tokens": count, "corpus_provenance": provenance, **info,
        # the key's fields again at the top level, where earlier sidecars kept them
        "layers": key["layers"], "corpus": corpus_name, "n_docs": key["n_docs"], "maxlen": key["maxlen"],
        "dtype": key["dtype"], "seed": key["seed"], "bos": key["add_bos"], "model_fingerprint": key["model_fingerprint"],
        "tokenizer_sha256": io.sha256_file(tokenizer_file) if tokenizer_file.exists() else None,
        "library_versions": io.library_versions(),
    })
    _write_timings(out_timings, {"documents_s": t_docs, "statistics_s": wall_s,
                                 "tokens_per_s": count / max(wall_s, 1e-9), "total_s": time.perf_counter() - t0})


def generate_prefixes(model_dir: str, model_cfg: dict, prefix_len: int, n_prefixes: int, seed: int,
                      out_json: str) -> None:
    from massedit.templates import eval_prefixes

    model, tokenizer = _load(model_dir, model_cfg)
    prefixes = eval_prefixes(model, tokenizer, int(prefix_len), int(n_prefixes), seed, _add_bos(model_cfg))
    io.write_json(out_json, {"prefixes": prefixes, "prefix_len": int(prefix_len), "seed": seed,
                             "model_fingerprint": _model_fingerprint(model_dir), "add_bos": _add_bos(model_cfg)})


def optimise_residuals(method: str, hparams: dict, model_dir: str, model_cfg: dict, records: str, seed: int,
                       out_pt: str, out_timings: str | None = None) -> None:
    """The residual phase of an edit, saved with its key (caches.residuals_key, the records' ids and hashes)
    so that every smaller batch of the same records reuses its head."""
    from massedit.datasets.selection import ordered_ids_hash
    from massedit.editing.run import compute_residuals

    model, tokenizer = _load(model_dir, model_cfg)
    rows = io.read_jsonl(records)
    # ``hparams`` are residual_hparams: the z-layer stands for the layer set, which only the update reads.
    hp = {**{k: v for k, v in hparams.items() if k != "z_layer"}, "layers": [int(hparams["z_layer"])]}
    res = compute_residuals(model, tokenizer, rows, method, hp, seed, _add_bos(model_cfg))
    key = caches.residuals_key(method, hparams, seed, _model_fingerprint(model_dir), model_cfg)
    io.save_torch(out_pt, {
        "key": key, "method": method, "hparams": hparams, "seed": seed, "case_ids": [r["case_id"] for r in rows],
        "record_sha256s": caches.record_hashes(rows), "ordered_ids_sha256": ordered_ids_hash(rows),
        "model_fingerprint": key["model_fingerprint"], "templates": res.templates, "z_keys": res.z_keys.cpu(),
        "residuals": res.residuals.cpu(), "h": res.h.cpu(), "iterations": res.iterations, "losses": res.losses,
    })
    _write_timings(out_timings, res.timings)


def load_residual_head(path: str, rows: list[dict], model_dir: str, hparams: dict | None = None,
                       seed: int | None = None, model_cfg: dict | None = None):
    """The residuals of ``rows`` from a saved residual phase whose records start with them (same ids and
    content) and whose weights are the model's; with ``hparams`` (the editing method's), ``seed`` and
    ``model_cfg``, its residual settings, seed, model dtype and BOS policy must be these too."""
    from massedit.editing.run import Residuals
    from massedit.editing.sharing import residual_hparams

    expected = {"model_fingerprint": _model_fingerprint(model_dir)}
    if hparams is not None:
        expected["hparams"] = residual_hparams(hparams)
    if seed is not None:
        expected["seed"] = int(seed)
    if model_cfg is not None:
        expected["model_dtype"] = model_cfg.get("dtype", "float32")
        expected["add_bos"] = _add_bos(model_cfg)
    saved = caches.load_residuals(path, rows, expected)
    # The residual job's timings (its whole batch), when they sit beside the file; not an input of the edit.
    timings_file = Path(path).with_name("timings.json")
    timings = io.read_json(timings_file) if timings_file.exists() else {}
    whole = Residuals(saved["templates"], saved["z_keys"], saved["residuals"], saved["h"], saved["iterations"],
                      saved["losses"], timings)
    return whole.head(len(rows))


def edit_model(method: str, hparams: dict, model_dir: str, model_cfg: dict, records: str, stats_npz: str | None,
               seed: int, out_deltas: str, out_artefacts: str, out_meta: str, projections: str | None = None,
               residuals: str | None = None, stats_settings: dict | None = None,
               out_timings: str | None = None) -> None:
    """One batch of edits. FT needs no statistics (``stats_npz`` None); AlphaEdit reads its cached null-space
    projections when ``projections`` is given; ``residuals`` (optimise_residuals' file, possibly of a larger
    batch starting with these records) replaces the residual phase. Every cache is verified against the key
    this edit needs (``stats_settings``: the config's statistics settings) before the model is loaded, so a bad
    one fails the job before any output is written."""
    from massedit.architectures import arch_for
    from massedit.datasets.selection import ordered_ids_hash
    from massedit.editing.run import run_edit

    t0 = time.perf_counter()
    rows = io.read_jsonl(records)
    layers = [int(x) for x in hparams["layers"]]
    expected = expected_stats_key(model_dir, model_cfg, stats_settings) if stats_settings else None
    moments = load_moments(stats_npz, layers, model_dir, expected) if stats_npz else None
    stats = stats_record(stats_npz) if stats_npz else None
    cached = None
    if projections:
        wanted = {"threshold": float(hparams["nullspace_threshold"])}
        if stats is not None:
            wanted.update(stats_key=stats["key"], stats_sha256=stats["sha256"])
        cached = load_projections(projections, layers, wanted)
    precomputed = load_residual_head(residuals, rows, model_dir, hparams, seed, model_cfg) if residuals else None
    model, tokenizer = _load(model_dir, model_cfg)
    t_load = time.perf_counter() - t0
    result = run_edit(model, tokenizer, rows, moments, method, hparams, seed, _add_bos(model_cfg),
                      projections=cached, residuals=precomputed)
    arch = arch_for(model)
    io.save_torch(out_deltas, {
        "method": method,
        "deltas": {int(layer): delta.cpu() for layer, delta in result.deltas.items()},
        "modules": {int(layer): arch.mlp_down.format(layer) for layer in result.deltas},
        "model_fingerprint": _model_fingerprint(model_dir),
    })
    io.save_npz(out_artefacts, case_ids=np.array([str(r["case_id"]) for r in rows]),
                z_keys=result.z_keys.cpu().numpy(), residuals=result.residuals.cpu().numpy(),
                h=result.h.cpu().numpy(), iterations=np.array(result.iterations))
    n = len(rows)
    io.write_json(out_meta, {
        "method": method, "hparams": hparams, "seed": seed, "n_edits": n, "bos": _add_bos(model_cfg),
        "ordered_ids_sha256": ordered_ids_hash(rows), "records_sha256": io.sha256_file(records),
        "stats": str(stats_npz) if stats_npz else None,
        "stats_sha256": stats["sha256"] if stats else None, "stats_key": stats["key"] if stats else None,
        "projections_sha256": io.sha256_file(projections) if projections else None,
        "model_fingerprint": _model_fingerprint(model_dir),
        "templates": result.templates, "templates_sha256": io.sha256_json(result.templates),
        "iterations": result.iterations, "final_losses": result.losses,
        "delta_norms": {int(layer): float(d.norm()) for layer, d in result.deltas.items()},
        "info": result.info,
        "residuals_from": residuals,
        "residuals_sha256": io.sha256_file(residuals) if residuals else None,
        "library_versions": io.library_versions(),
    })
    timings = {"load_s": t_load, **result.timings, "total_s": time.perf_counter() - t0}
    if "residuals_s" in timings:
        # Residual timings of a shared residual file are those of its whole batch.
        timings["residual_s_per_edit"] = timings["residuals_s"] / max(timings.get("residuals_n", n), 1)
    _write_timings(out_timings, timings)


def null_space_projections(stats_npz: str, layers: list[int], threshold: float, out_pt: str, out_json: str,
                           device: str = "cpu", expected_stats: dict | None = None,
                           out_timings: str | None = None) -> None:
    """AlphaEdit's projections P (d_ff × d_ff, fp32) per layer from verified statistics (``expected_stats``:
    the key they must carry), with their ranks; the file carries caches.projections_key."""
    from massedit.editing.alphaedit import null_space_projection, projection_rank

    t0 = time.perf_counter()
    moments = load_moments(stats_npz, layers, expected=expected_stats)
    stats = stats_record(stats_npz)
    projections = {layer: null_space_projection(moments[layer].to(device), threshold).cpu() for layer in layers}
    key = caches.projections_key(stats["key"], stats["sha256"], threshold, layers)
    io.save_torch(out_pt, {"key": key, "projections": projections, "threshold": float(threshold),
                           "stats": str(stats_npz)})
    io.write_json(out_json, {
        "layers": key["layers"], "threshold": key["threshold"],
        "ranks": {layer: projection_rank(p) for layer, p in projections.items()},
        "stats_sha256": stats["sha256"], "key": key, "library_versions": io.library_versions(),
    })
    _write_timings(out_timings, {"total_s": time.perf_counter() - t0})


def load_projections(path: str, layers: list[int], expected: dict | None = None) -> dict:
    """The cached projection per layer, verified (caches.load_projections) against ``expected``."""
    return caches.load_projections(path, layers, expected)


def _evaluate(kind: str, model, tokenizer, rows: list[dict], prefixes: list[str], add_bos: bool, eval_cfg: dict,
              model_cfg: dict) -> tuple[list[dict], dict]:
    """The dataset kind's evaluation protocol (reference evaluation.md §3.2–§3.6)."""
    batch_size = int(eval_cfg.get("batch_size", 32))
    fluency = int(eval_cfg.get("fluency_max_new_tokens", 64))
    paper = eval_cfg.get("preset", "paper") == "paper"
    if kind == "zsre":
        from massedit.evaluation.zsre import evaluate_zsre

        # ZsRE ignores the prefixes (§2); the preset picks the authors' neighbourhood target rule.
        return evaluate_zsre(model, tokenizer, rows, add_bos, batch_size,
                             neighbor_target="paper" if paper else "clean",
                             paper_rule=model_cfg.get("zsre_paper_rule"), prefixes=prefixes)
    if kind == "wikirecent":
        from massedit.evaluation.wikirecent import evaluate_wikirecent

        return evaluate_wikirecent(model, tokenizer, rows, prefixes, add_bos, batch_size, fluency,
                                   last_token_quirk=paper)
    from massedit.evaluation.counterfact import evaluate_records

    return evaluate_records(model, tokenizer, rows, prefixes, add_bos, batch_size=batch_size,
                            fluency_max_new_tokens=fluency)


def _edited_model(model_dir: str, model_cfg: dict, deltas: str | None):
    from massedit.architectures import arch_for
    from massedit.editing.update import apply_deltas

    import torch

    model, tokenizer = _load(model_dir, model_cfg)
    if deltas:
        saved = torch.load(deltas, weights_only=True, map_location="cpu")
        if saved.get("model_fingerprint") not in (None, "unknown", _model_fingerprint(model_dir)):
            raise ValueError(f"{deltas}: the deltas were computed for other weights")
        apply_deltas(model, arch_for(model), saved["deltas"])
    return model, tokenizer


def _timing_fields(summary: dict) -> dict:
    """The wall-clock fields of an evaluation protocol's summary (``*_seconds``)."""
    return {key: value for key, value in summary.items() if key.endswith("_seconds")}


def _check_prefixes(path: str, prefix_data: dict, model_dir: str, model_cfg: dict) -> None:
    """The evaluation prefixes were sampled from this model with this BOS policy."""
    expected = {"model_fingerprint": _model_fingerprint(model_dir)}
    if "add_bos" in prefix_data:
        expected["add_bos"] = _add_bos(model_cfg)
    io.verify_key(path, prefix_data, expected, "generate_eval_prefixes")


def evaluate_model(model_dir: str, model_cfg: dict, records: str, prefixes: str, deltas: str | None,
                   eval_cfg: dict, out_records: str, out_summary: str, labels: dict,
                   head_of: tuple[str, str] | None = None, out_timings: str | None = None) -> None:
    """Evaluate the model (with ``deltas`` applied, if any) on ``records``. ``head_of`` (records.jsonl and
    summary.json of the same model evaluated on a larger batch starting with these records, with the same
    prefixes and settings) takes its head instead of running the model. Timings go to ``out_timings``."""
    t0 = time.perf_counter()
    rows = io.read_jsonl(records)
    prefix_data = io.read_json(prefixes, "generate_eval_prefixes")
    _check_prefixes(prefixes, prefix_data, model_dir, model_cfg)
    kind = labels.get("dataset_kind", "counterfact")
    if head_of:
        from massedit.evaluation.head import head_rows, head_summary

        source_records, source_summary = head_of
        whole = io.read_json(source_summary)
        if whole.get("prefixes_sha256") != io.sha256_json(prefix_data["prefixes"]) or whole.get("deltas") != deltas:
            raise ValueError(f"{source_summary}: evaluated with other prefixes or deltas than this evaluation")
        per_record = head_rows(io.read_jsonl(source_records), [r["case_id"] for r in rows], source_records)
        # The larger batch's labels (its n_edits) give way to this evaluation's.
        summary = {key: value for key, value in head_summary(kind, whole, per_record).items() if key not in labels}
        summary["head_of"] = source_records
    else:
        model, tokenizer = _edited_model(model_dir, model_cfg, deltas)
        per_record, summary = _evaluate(kind, model, tokenizer, rows, prefix_data["prefixes"], _add_bos(model_cfg),
                                        eval_cfg, model_cfg)
    timings = _timing_fields(summary)
    io.write_jsonl(out_records, per_record)
    io.write_json(out_summary, {
        **labels, **{key: value for key, value in summary.items() if key not in timings},
        "prefix_len": prefix_data["prefix_len"], "prefix_seed": prefix_data["seed"],
        "prefixes_sha256": io.sha256_json(prefix_data["prefixes"]), "records_sha256": io.sha256_file(records),
        "deltas": deltas, "eval_settings": eval_cfg, "library_versions": io.library_versions(),
    })
    wall_s = time.perf_counter() - t0
    _write_timings(out_timings, {**timings, "wall_s": wall_s, "seconds_per_record": wall_s / max(len(rows), 1)})


def evaluate_general(model_dir: str, model_cfg: dict, deltas: str | None, tasks: dict[str, str],
                     general_cfg: dict, eval_cfg: dict, out_json: str, labels: dict) -> None:
    """General abilities (reference evaluation.md §3.9) of the unedited or edited model."""
    from massedit.evaluation.general import evaluate_general as run

    t0 = time.perf_counter()
    model, tokenizer = _edited_model(model_dir, model_cfg, deltas)
    paper = eval_cfg.get("preset", "paper") == "paper"
    results = run(model, tokenizer, tasks, general_cfg.get("n_per_task"), _add_bos(model_cfg),
                  batch_size=int(eval_cfg.get("batch_size", 32)), rte_polarity="paper" if paper else "clean",
                  gen_len=int(general_cfg.get("gen_len", 5)))
    # Wall-clock times (per task and in all) go to the job's log, so the results are byte-identical.
    seconds = {task: scores.pop("seconds") for task, scores in results.items() if "seconds" in scores}
    io.write_json(out_json, {
        **labels, "tasks": results, "settings": general_cfg, "deltas": deltas,
        "library_versions": io.library_versions(),
    })
    _write_timings(None, {"tasks_s": seconds, "wall_s": time.perf_counter() - t0})


def make_tables(summaries: list[str], out_csv: str, out_md: str) -> None:
    from massedit.reporting import main_table, write_table

    write_table(main_table([io.read_json(p) for p in summaries]), out_csv, out_md)


def compare_with_paper(summaries: list[str], misalignment: list[str], prefix_summaries: list[str], names: dict,
                       out_long_csv: str, out_csv: str, out_md: str) -> None:
    """Reproduced next to reported (reference evaluation.md §6.6): main table, Table 3 and Figure 5."""
    import pandas as pd

    from massedit.reporting import load_paper_numbers, reproduced_long, write_comparison

    models, datasets = names["models"], names["datasets"]
    parts = [reproduced_long([io.read_json(p) for p in summaries], models, datasets, table="main")]
    if misalignment:
        parts.append(reproduced_long([io.read_json(p) for p in misalignment], models, datasets, table="table3"))
    if prefix_summaries:
        parts.append(reproduced_long([io.read_json(p) for p in prefix_summaries], models, datasets,
                                     table="figure5"))
    write_comparison(load_paper_numbers(), pd.concat(parts, ignore_index=True), out_long_csv, out_csv, out_md)


def misalignment_score(artefacts: str, labels: dict, tau: float, out_json: str) -> None:
    """Table 3's score of one edit from its saved z-layer keys and residuals."""
    from massedit.reporting import misalignment_record

    io.write_json(out_json, {**labels, **misalignment_record(artefacts, tau=tau)})


def misalignment_table(scores: list[str], out_csv: str, out_md: str) -> None:
    import pandas as pd

    rows = [io.read_json(p) for p in scores]
    keep = ["model", "dataset", "method", "n_edits", "misalignment"]
    table = pd.DataFrame(rows)[[k for k in keep if k in rows[0]]]
    io.write_text(out_csv, table.to_csv(index=False))
    io.write_text(out_md, table.to_markdown(index=False) + "\n")


def plot_prefix_robustness(summaries: list[str], names: dict, n_edits: int, out_png: str) -> None:
    from massedit.reporting import load_paper_numbers, plot_prefix_robustness as plot

    plot([io.read_json(p) for p in summaries], out_png, paper=load_paper_numbers(), model_names=names["models"],
         n_edits=n_edits)


def plot_facts_per_subject(summaries: list[str], facts: list[int], out_png: str) -> None:
    from massedit.reporting import plot_facts_per_subject as plot

    # A point edits every record of its subset up to the cap: its size is the number evaluated.
    rows = [{**(summary := io.read_json(p)), "facts_per_subject": int(f), "n_edits": summary["n_records"]}
            for p, f in zip(summaries, facts)]
    plot(rows, out_png)


def plot_general_ability(results: list[str], out_png: str) -> None:
    from massedit.reporting import plot_general_ability as plot

    rows = []
    for path in results:
        data = io.read_json(path)
        for task, scores in data["tasks"].items():
            rows.append({"model": data["model"], "dataset": data["dataset"], "method": data["method"], "task": task,
                         **{k: scores.get(k) for k in ("f1", "f1_new", "mcc")}})
    plot(rows, out_png)


def plot_scaling(summaries: list[str], out_png: str) -> None:
    from massedit.reporting import plot_scaling as plot

    plot([io.read_json(p) for p in summaries], out_png)
