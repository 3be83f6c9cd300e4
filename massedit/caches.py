"""The keys of the cached artefacts, stored inside each file and verified on every read.

A cache is a file that later jobs, other checkouts or other users read instead of recomputing it: the
statistics (compute_layer_stats), AlphaEdit's null-space projections (null_space_projections) and the
residuals (optimise_residuals). Each carries, inside the file, the key of every setting that determines it;
a reader states the key it needs and gets the numbers only if the file's key agrees and its bytes pass their
CRC check. Otherwise the error names the file, each differing field (expected and found) and what to run.

No torch at import: Snakemake's DAG building calls ``check_stats_name``.
"""
from __future__ import annotations

import json
from typing import Any

import numpy as np

from massedit import io

# Version of each file's layout and of what its key holds; a file of another format is refused. The rules
# pass it as a param, so changing it reruns the rule (rules/stats.smk, rules/edit.smk).
STATS_FORMAT = 2
PROJECTIONS_FORMAT = 2
RESIDUALS_FORMAT = 2

STATS_RULE = "compute_layer_stats"
PROJECTIONS_RULE = "null_space_projections"
RESIDUALS_RULE = "optimise_residuals"

# Key fields a statistics file's name carries (resources/stats/{model}/{corpus}/L{layers}_d{n_docs}_t{maxlen}_
# {dtype}.npz): a file whose key contradicts them is never right, whatever else changed.
STATS_NAME_FIELDS = ("corpus", "layers", "n_docs", "maxlen", "dtype")

NOT_RECORDED = "<not recorded>"


# ---------------------------------------------------------------------------------------------- statistics


def stats_key(model_fingerprint: str, model_cfg: dict, corpus: str, corpus_spec: dict, layers, n_docs: int,
              maxlen: int, dtype: str, seed: int) -> dict:
    """Everything that determines a statistics file: the model's weights, the dtype they run in and the BOS
    policy, the corpus (name and spec, with any pinned checksums of its files), the layer set, the number of
    documents, the truncation, the accumulation dtype and the seed of the document sample."""
    return {
        "format": STATS_FORMAT, "model_fingerprint": model_fingerprint,
        "model_dtype": model_cfg.get("dtype", "float32"), "add_bos": bool(model_cfg.get("bos", False)),
        "corpus": corpus, "corpus_spec": corpus_spec, "layers": sorted(int(x) for x in layers),
        "n_docs": int(n_docs), "maxlen": int(maxlen), "dtype": dtype, "seed": int(seed),
    }


def save_stats(path: str, key: dict, sums: dict[int, Any], count: int) -> None:
    """The running sums per layer (numpy arrays or tensors), the token count and the key (JSON) in one .npz."""
    layers = sorted(sums)
    arrays = {f"sum_{layer}": np.asarray(sums[layer].cpu().numpy() if hasattr(sums[layer], "cpu") else sums[layer])
              for layer in layers}
    io.save_npz(path, key=np.array(io.dumps_json(key, indent=None)), layers=np.array(layers),
                count=np.array(count), **arrays)


def read_stats_key(path: str) -> dict | None:
    """The key stored in a statistics file, None for a file written before keys were stored. Reads the zip's
    directory and one small entry: cheap enough for every DAG build."""
    with io.reading(path, STATS_RULE), np.load(path, allow_pickle=False) as data:
        if "key" not in data.files:
            return None
        text = str(data["key"])
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise io.CorruptArtefactError(path, f"its stored key is not JSON ({err.msg}). "
                                            f"{io.rebuild_advice(path, STATS_RULE)}") from err


def check_stats_name(path: str, name_fields: dict) -> None:
    """Before any job runs (Snakemake deletes a job's old outputs before starting it): refuse an existing
    statistics file that cannot be opened or whose stored key contradicts its own name (``name_fields``: the
    values of STATS_NAME_FIELDS its path was formatted with). The settings not in the name (seed, corpus spec,
    model) are checked by ``load_stats`` only: a changed config leaves a stale file that Snakemake recomputes
    before anything reads it."""
    found = read_stats_key(path)
    if found is not None:
        io.verify_key(path, found, {field: name_fields[field] for field in STATS_NAME_FIELDS}, STATS_RULE)


def load_stats(path: str, layers: list[int], expected: dict | None = None) -> tuple[dict[int, np.ndarray], int, dict]:
    """(sum per requested layer, token count, stored key) after checking every entry's CRC, the format, each
    field of ``expected`` (a stats_key or part of one) and that the requested layers are present."""
    io.check_zip(path, STATS_RULE)
    found = read_stats_key(path)
    if found is None:
        raise io.CacheKeyError(path, {"format": (STATS_FORMAT, NOT_RECORDED)},
                               "The file predates stored keys. " + io.rebuild_advice(path, STATS_RULE))
    io.verify_key(path, found, {"format": STATS_FORMAT, **(expected or {})}, STATS_RULE)
    missing = [layer for layer in layers if layer not in found["layers"]]
    if missing:
        raise io.CacheKeyError(path, {"layers": (f"a superset of {sorted(layers)}", found["layers"])},
                               io.rebuild_advice(path, STATS_RULE))
    with io.reading(path, STATS_RULE), np.load(path, allow_pickle=False) as data:
        return {layer: data[f"sum_{layer}"] for layer in layers}, int(data["count"]), found


# ---------------------------------------------------------------------------------------------- projections


def projections_key(stats_key_: dict, stats_sha256: str, threshold: float, layers) -> dict:
    """AlphaEdit's projections are determined by the statistics they come from (their key and bytes), the
    null-space threshold and the layers."""
    return {"format": PROJECTIONS_FORMAT, "stats_key": stats_key_, "stats_sha256": stats_sha256,
            "threshold": float(threshold), "layers": sorted(int(x) for x in layers)}


def load_projections(path: str, layers: list[int], expected: dict | None = None) -> dict:
    """The projection per requested layer, after the CRC check and the key check against ``expected``."""
    saved = io.load_torch(path, PROJECTIONS_RULE)
    found = saved.get("key") if isinstance(saved, dict) else None
    io.verify_key(path, found, {"format": PROJECTIONS_FORMAT, **(expected or {})}, PROJECTIONS_RULE)
    missing = [layer for layer in layers if layer not in saved["projections"]]
    if missing:
        raise io.CacheKeyError(path, {"layers": (f"a superset of {sorted(layers)}", found["layers"])},
                               io.rebuild_advice(path, PROJECTIONS_RULE))
    return {layer: saved["projections"][layer] for layer in layers}


# ---------------------------------------------------------------------------------------------- residuals


def record_hashes(rows: list[dict]) -> list[str]:
    """One hash per record, so a smaller batch can check that a residual file's records start with its own
    (same ids and same content: prompts, subjects, targets)."""
    return [io.sha256_json(row) for row in rows]


def residuals_key(method: str, hparams: dict, seed: int, model_fingerprint: str, model_cfg: dict) -> dict:
    """What the residuals of a batch depend on besides its records: the residual step's method and settings,
    the seed, the model's weights, the dtype they run in and the BOS policy."""
    return {"format": RESIDUALS_FORMAT, "method": method, "hparams": hparams, "seed": int(seed),
            "model_fingerprint": model_fingerprint, "model_dtype": model_cfg.get("dtype", "float32"),
            "add_bos": bool(model_cfg.get("bos", False))}


def load_residuals(path: str, rows: list[dict], expected: dict | None = None) -> dict:
    """The saved residual phase whose records start with ``rows``, after the CRC and key checks."""
    saved = io.load_torch(path, RESIDUALS_RULE)
    found = saved.get("key") if isinstance(saved, dict) else None
    io.verify_key(path, found, {"format": RESIDUALS_FORMAT, **(expected or {})}, RESIDUALS_RULE)
    n = len(rows)
    ids = [r["case_id"] for r in rows]
    if saved["case_ids"][:n] != ids:
        raise io.CacheKeyError(path, {f"first {n} case ids": (_ids(ids), _ids(saved["case_ids"][:n]))},
                               io.rebuild_advice(path, RESIDUALS_RULE))
    if saved["record_sha256s"][:n] != record_hashes(rows):
        changed = [i for i, (a, b) in enumerate(zip(saved["record_sha256s"], record_hashes(rows))) if a != b]
        raise io.CacheKeyError(path, {"record content": (f"the records being edited (first difference: record "
                                                         f"{changed[0]}, case id {ids[changed[0]]})",
                                                         "other record texts")},
                               io.rebuild_advice(path, RESIDUALS_RULE))
    return saved


def _ids(ids: list) -> str:
    return str(ids) if len(ids) <= 8 else f"[{', '.join(map(str, ids[:8]))}, … ({len(ids)} ids)]"
