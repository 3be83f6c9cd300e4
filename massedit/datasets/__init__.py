"""Datasets: sources (mirror or canonical URL with sha256), schema loaders, the embedded quick-start set
and record selection.

``prepare_dataset(spec, mirror_dir, download_dir)`` dispatches on ``spec["kind"]`` through ``REGISTRY``.
Common spec keys:

``kind``        ``quickstart`` (massedit.datasets.quickstart), ``counterfact``
                (massedit.datasets.counterfact), ``zsre`` (massedit.datasets.zsre) or ``wikirecent``
                (massedit.datasets.wikirecent); see those modules for their own keys. The subject
                filters of counterfact and zsre (``facts_per_subject``, ``dedup_subjects``) and
                ``subject_counts`` for Figure 6 are in massedit.datasets.grouping
``keep_known``  bool, accepted for every kind and recorded in the manifest; the filter itself needs the
                model and runs in a later stage (select_edits)
``at_most``     bool: a batch of n takes all records when fewer than n exist (select_edits)
``select``      ``first`` (default: the first n records in file order) or ``sample`` (a seeded sample,
                kept in file order), applied by select_edits with the config's seed

A new dataset is one module with ``SPEC_KEYS``, ``source_specs(spec)`` (the source specs of the files it
reads, for the workflow's inputs) and ``prepare(spec, mirror_dir, download_dir) -> (records, provenance
list)``, plus one entry in ``REGISTRY``. Every file is read through ``resolve_source``, which refuses a
file whose sha256 differs from its pin (massedit.datasets.checksums).
"""
from __future__ import annotations

from types import ModuleType

from massedit.io import sha256_json

from . import counterfact, quickstart, wikirecent, zsre
from .grouping import subject_counts
from .records import validate_record, validate_records
from .selection import ordered_ids_hash, select_records
from .sources import effective_mirror_dir, mirror_files, resolve_source

REGISTRY: dict[str, ModuleType] = {
    "quickstart": quickstart,
    "counterfact": counterfact,
    "zsre": zsre,
    "wikirecent": wikirecent,
}
COMMON_KEYS = frozenset({"kind", "keep_known", "select", "at_most"})

__all__ = [
    "REGISTRY", "prepare_dataset", "validate_record", "validate_records", "select_records",
    "ordered_ids_hash", "resolve_source", "effective_mirror_dir", "subject_counts", "dataset_mirror_files",
]


def dataset_mirror_files(spec: dict, mirror_dir: str | None) -> list[str]:
    """The mirror files that preparing ``spec`` reads, as present now: the inputs of rule prepare_dataset
    (a file it downloads instead is not one). An invalid spec gives none; prepare_dataset reports it."""
    module = REGISTRY.get(spec.get("kind"))
    if module is None:
        return []
    try:
        specs = module.source_specs(spec)
    except ValueError:
        return []
    return mirror_files(specs, mirror_dir)


def prepare_dataset(spec: dict, mirror_dir: str | None, download_dir: str) -> tuple[list[dict], dict]:
    """Load the dataset ``spec`` describes; return its validated records and a manifest with the
    provenance (sha256) of every source file and the hashes of the records and of their order."""
    kind = spec.get("kind")
    if kind not in REGISTRY:
        raise ValueError(f"dataset spec: unknown kind {kind!r}; known: {sorted(REGISTRY)}")
    module = REGISTRY[kind]
    unknown = sorted(set(spec) - COMMON_KEYS - module.SPEC_KEYS)
    if unknown:
        raise ValueError(f"dataset spec (kind {kind!r}): unknown key(s) {unknown}; "
                         f"allowed: {sorted(COMMON_KEYS | module.SPEC_KEYS)}")
    records, sources = module.prepare(spec, mirror_dir, download_dir)
    # loaders validate per file; this adds the dataset-wide checks (unique case_ids)
    records = validate_records(records, f"dataset kind {kind!r}")
    manifest = {
        "kind": kind,
        "spec": dict(spec),
        "sources": sources,
        "n_records": len(records),
        "records_sha256": sha256_json(records),
        "ordered_ids_sha256": ordered_ids_hash(records),
    }
    return records, manifest
