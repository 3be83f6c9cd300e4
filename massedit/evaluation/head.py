"""The evaluation of the first records of a larger evaluated batch, without running the model again.

The unedited model's score on record i does not depend on which other records are in the batch, and batches
of the first n records are prefixes of each other, so the workflow evaluates the unedited model once per model
and dataset on the largest batch and takes the head for every smaller one."""
from __future__ import annotations

from typing import Any

from massedit.evaluation import metrics

# Timings and item counts of the whole batch that the per-record rows cannot split.
_WHOLE_BATCH_ONLY = ("n_scored_items", "n_generation_prompts", "scoring_seconds", "generation_seconds")


def summary_scales(dataset_kind: str) -> dict[str, float]:
    """The per-record means a dataset kind's summary averages, with their scales."""
    if dataset_kind == "zsre":
        from massedit.evaluation.zsre import SUMMARY_SCALES
    elif dataset_kind == "wikirecent":
        from massedit.evaluation.wikirecent import SUMMARY_SCALES
    else:
        from massedit.evaluation.counterfact import SUMMARY_SCALES
    return SUMMARY_SCALES


def head_rows(rows: list[dict], case_ids: list, source: str) -> list[dict]:
    """The first ``len(case_ids)`` rows, which must be those records, in that order."""
    head = rows[: len(case_ids)]
    if [row.get("case_id") for row in head] != list(case_ids):
        raise ValueError(f"{source}: its records do not start with the {len(case_ids)} records asked for")
    return head


def head_summary(dataset_kind: str, summary: dict[str, Any], rows: list[dict]) -> dict[str, Any]:
    """The summary of ``rows`` (the head of the batch ``summary`` describes): every metric averaged again over
    these rows as the evaluation averages it, the counts the rows give recounted, the whole batch's timings
    and item counts dropped, its settings kept."""
    out = {key: value for key, value in summary.items() if key not in _WHOLE_BATCH_ONLY}
    for key, scale in summary_scales(dataset_kind).items():
        out[key] = metrics.aggregate((row["means"][key] for row in rows), scale)
    out["n_records"] = len(rows)
    if "n_neighborhood_tokens" in summary:
        out["n_neighborhood_tokens"] = sum(len(row["neighborhood_prompts_correct"]) for row in rows)
    for role in ("portability", "locality"):
        if f"n_{role}_records" in summary:
            out[f"n_{role}_records"] = sum(1 for row in rows if row[f"{role}_prompts_correct"])
    return out
