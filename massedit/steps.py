"""One function per workflow rule. Arguments are file paths and plain config values; each function loads
what it needs, calls the library and writes its outputs atomically with a provenance record."""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from massedit import io

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


def load_moments(stats_npz: str, layers: list[int], model_dir: str | None = None) -> dict[int, torch.Tensor]:
    """C_ℓ = sum/count in fp64 for ``layers``, checked against the sidecar (layers present, same model); on
    the CPU (the solves move them to the keys' device)."""
    import torch

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
                **{f"sum_{layer}": sums[layer].cpu().numpy() for layer in layers})
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


def optimise_residuals(method: str, hparams: dict, model_dir: str, model_cfg: dict, records: str, seed: int,
                       out_pt: str) -> None:
    """The residual phase of an edit, saved so that every smaller batch of the same records reuses its head."""
    from massedit.datasets.selection import ordered_ids_hash
    from massedit.editing.run import compute_residuals

    model, tokenizer = _load(model_dir, model_cfg)
    rows = io.read_jsonl(records)
    # ``hparams`` are residual_hparams: the z-layer stands for the layer set, which only the update reads.
    hp = {**{k: v for k, v in hparams.items() if k != "z_layer"}, "layers": [int(hparams["z_layer"])]}
    res = compute_residuals(model, tokenizer, rows, method, hp, seed, _add_bos(model_cfg))
    io.save_torch(out_pt, {
        "method": method, "hparams": hparams, "seed": seed, "case_ids": [r["case_id"] for r in rows],
        "ordered_ids_sha256": ordered_ids_hash(rows), "model_fingerprint": _model_fingerprint(model_dir),
        "templates": res.templates, "z_keys": res.z_keys.cpu(), "residuals": res.residuals.cpu(), "h": res.h.cpu(),
        "iterations": res.iterations, "losses": res.losses, "timings": res.timings,
    })


def load_residual_head(path: str, rows: list[dict], model_dir: str, hparams: dict | None = None):
    """The residuals of ``rows`` from a saved residual phase whose records start with them; with ``hparams``
    (the editing method's), the file's residual settings must be theirs."""
    import torch

    from massedit.config import canonical
    from massedit.editing.run import Residuals
    from massedit.editing.sharing import residual_hparams

    saved = torch.load(path, weights_only=True, map_location="cpu")
    ids = [r["case_id"] for r in rows]
    if saved["case_ids"][: len(ids)] != ids:
        raise ValueError(f"{path}: its records do not start with the {len(ids)} records being edited")
    if saved["model_fingerprint"] != _model_fingerprint(model_dir):
        raise ValueError(f"{path}: the residuals were computed for other weights")
    if hparams is not None and canonical(saved["hparams"]) != canonical(residual_hparams(hparams)):
        raise ValueError(f"{path}: the residuals were computed with other settings ({saved['hparams']}) than "
                         f"this edit's ({residual_hparams(hparams)})")
    whole = Residuals(saved["templates"], saved["z_keys"], saved["residuals"], saved["h"], saved["iterations"],
                      saved["losses"], saved["timings"])
    return whole.head(len(ids))


def edit_model(method: str, hparams: dict, model_dir: str, model_cfg: dict, records: str, stats_npz: str | None,
               seed: int, out_deltas: str, out_artefacts: str, out_meta: str, projections: str | None = None,
               residuals: str | None = None) -> None:
    """One batch of edits. FT needs no statistics (``stats_npz`` None); AlphaEdit reads its cached null-space
    projections when ``projections`` is given; ``residuals`` (optimise_residuals' file, possibly of a larger
    batch starting with these records) replaces the residual phase."""
    from massedit.architectures import arch_for
    from massedit.datasets.selection import ordered_ids_hash
    from massedit.editing.run import run_edit

    t0 = time.perf_counter()
    model, tokenizer = _load(model_dir, model_cfg)
    rows = io.read_jsonl(records)
    layers = [int(x) for x in hparams["layers"]]
    moments = load_moments(stats_npz, layers, model_dir) if stats_npz else None
    cached = load_projections(projections, layers) if projections else None
    precomputed = load_residual_head(residuals, rows, model_dir, hparams) if residuals else None
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
        "stats": str(stats_npz), "model_fingerprint": _model_fingerprint(model_dir),
        "templates": result.templates, "templates_sha256": io.sha256_json(result.templates),
        "iterations": result.iterations, "final_losses": result.losses,
        "timings": {"load_s": t_load, **result.timings,
                    "residual_s_per_edit": result.timings["residuals_s"] / max(result.timings.get("residuals_n", n), 1),
                    "total_s": time.perf_counter() - t0},
        "delta_norms": {int(layer): float(d.norm()) for layer, d in result.deltas.items()},
        "info": result.info,
        # Residual timings of a shared residual file are those of its whole batch.
        "residuals_from": residuals,
        "library_versions": io.library_versions(),
    })


def null_space_projections(stats_npz: str, layers: list[int], threshold: float, out_pt: str, out_json: str,
                           device: str = "cpu") -> None:
    """AlphaEdit's projections P (d_ff × d_ff, fp32) per layer from cached statistics, with their ranks."""
    from massedit.editing.alphaedit import null_space_projection, projection_rank

    t0 = time.perf_counter()
    moments = load_moments(stats_npz, layers)
    projections = {layer: null_space_projection(moments[layer].to(device), threshold).cpu() for layer in layers}
    io.save_torch(out_pt, {"projections": projections, "threshold": threshold, "stats": stats_npz})
    io.write_json(out_json, {
        "layers": layers, "threshold": threshold, "ranks": {layer: projection_rank(p) for layer, p in projections.items()},
        "stats_sha256": io.sha256_file(stats_npz), "wall_s": time.perf_counter() - t0,
        "library_versions": io.library_versions(),
    })


def load_projections(path: str, layers: list[int]) -> dict:
    import torch

    saved = torch.load(path, weights_only=True, map_location="cpu")["projections"]
    missing = [layer for layer in layers if layer not in saved]
    if missing:
        raise ValueError(f"{path}: no projection for layers {missing}")
    return {layer: saved[layer] for layer in layers}


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


def evaluate_model(model_dir: str, model_cfg: dict, records: str, prefixes: str, deltas: str | None,
                   eval_cfg: dict, out_records: str, out_summary: str, labels: dict,
                   head_of: tuple[str, str] | None = None) -> None:
    """Evaluate the model (with ``deltas`` applied, if any) on ``records``. ``head_of`` (records.jsonl and
    summary.json of the same model evaluated on a larger batch starting with these records, with the same
    prefixes and settings) takes its head instead of running the model."""
    t0 = time.perf_counter()
    rows = io.read_jsonl(records)
    prefix_data = io.read_json(prefixes)
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
    io.write_jsonl(out_records, per_record)
    io.write_json(out_summary, {
        **labels, **summary, "prefix_len": prefix_data["prefix_len"], "prefix_seed": prefix_data["seed"],
        "prefixes_sha256": io.sha256_json(prefix_data["prefixes"]), "records_sha256": io.sha256_file(records),
        "deltas": deltas, "eval_settings": eval_cfg, "wall_s": time.perf_counter() - t0,
        "seconds_per_record": (time.perf_counter() - t0) / max(len(rows), 1),
        "library_versions": io.library_versions(),
    })


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
    io.write_json(out_json, {
        **labels, "tasks": results, "settings": general_cfg, "deltas": deltas,
        "wall_s": time.perf_counter() - t0, "library_versions": io.library_versions(),
    })


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
