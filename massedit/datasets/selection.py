"""Which records get edited, and a fingerprint of their order (reference evaluation.md §1.8).

The paper edits the first n records in file order. EAMET's result depends on the order of the batch,
so every result records ``ordered_ids_hash`` of the records it edited.
"""
from __future__ import annotations

import random

from massedit.io import sha256_json

MODES = ("first", "sample")


def select_records(records: list[dict], n: int, mode: str = "first", seed: int = 0) -> list[dict]:
    """The first ``n`` records (``mode="first"``), or ``n`` drawn with ``seed`` and kept in file order
    (``mode="sample"``), so a sample differs from a prefix in its set, not in its ordering rule."""
    if mode not in MODES:
        raise ValueError(f"selection mode must be one of {MODES}, got {mode!r}")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"number of records to select must be a positive int, got {n!r}")
    if n > len(records):
        raise ValueError(f"cannot select {n} records: the dataset has only {len(records)}")
    if mode == "first":
        return list(records[:n])
    chosen = sorted(random.Random(seed).sample(range(len(records)), n))
    return [records[i] for i in chosen]


def ordered_ids_hash(records: list[dict]) -> str:
    """sha256 of the ordered case_id list (canonical JSON), sensitive to both set and order."""
    return sha256_json([r["case_id"] for r in records])
