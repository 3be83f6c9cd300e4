"""Record filters by subject, shared by the loaders (reference evaluation.md §1.4 and §5, Figure 6).

* ``subject_counts``: how many records (facts) each subject has; Figure 6 groups records by it.
* ``filter_facts_per_subject``: the authors' "subject occurs exactly N times" filter (their ZsRE loader's
  ``repeat_subjects``). Subjects compare as exact strings, counted over the whole file, and the result is
  ordered as the authors order it: subjects in order of first appearance, each subject's records in file
  order. The filter runs before any truncation to n edits.
* ``dedup_subjects``: one record per lower-cased subject, the first in record order. On CounterFact this
  gives the EMMET authors' "unique subjects" set (MCF-approx, 20,391 of 21,919 records).
"""
from __future__ import annotations

from collections import Counter


def subject_counts(records: list[dict]) -> dict[str, int]:
    """Number of records per subject (exact string), in order of first appearance."""
    return dict(Counter(r["subject"] for r in records))


def filter_facts_per_subject(records: list[dict], n: int, where: str) -> list[dict]:
    """The records whose subject occurs exactly ``n`` times in ``records``, grouped by subject."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"{where}: 'facts_per_subject' must be a positive int, got {n!r}")
    groups: dict[str, list[dict]] = {}
    for rec in records:
        groups.setdefault(rec["subject"], []).append(rec)
    out = [rec for group in groups.values() if len(group) == n for rec in group]
    if not out:
        present = sorted(set(len(g) for g in groups.values()))
        raise ValueError(f"{where}: no subject has exactly {n} facts (facts_per_subject); "
                         f"the counts present are {present}")
    return out


def dedup_subjects(records: list[dict]) -> list[dict]:
    """The first record of each subject, compared lower-cased, in record order."""
    seen: set[str] = set()
    out = []
    for rec in records:
        key = rec["subject"].lower()
        if key not in seen:
            seen.add(key)
            out.append(rec)
    return out


def apply_subject_filters(records: list[dict], spec: dict, where: str) -> list[dict]:
    """Apply the spec's ``facts_per_subject`` and ``dedup_subjects`` keys (at most one of them)."""
    n, dedup = spec.get("facts_per_subject"), spec.get("dedup_subjects", False)
    if not isinstance(dedup, bool):
        raise ValueError(f"{where}: 'dedup_subjects' must be true or false, got {dedup!r}")
    if n is not None and dedup:
        raise ValueError(f"{where}: 'facts_per_subject' and 'dedup_subjects' exclude each other")
    if n is not None:
        return filter_facts_per_subject(records, n, where)
    return dedup_subjects(records) if dedup else records
