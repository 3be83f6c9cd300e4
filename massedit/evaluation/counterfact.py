"""Evaluation of edited models on records of the normalised shape (docs/architecture.md).

Prefix protocol (reference evaluation.md §2): with prefixes, the rewrite prompt is scored only in its
prefixed variants ``prefix + prompt`` (each prefix already ends with ". ") and every neighbourhood prompt
gets every prefix; paraphrase and generation prompts are never prefixed. With no prefixes the bare
prompts are scored. Datasets whose protocol ignores prefixes (ZsRE) are evaluated with ``prefixes=[]``.

All scored items of all records go through one scoring call, grouped by evaluation prefix so that each
prefix and each prompt is computed once for all its targets (``scoring.score_targets``, mode ``shared``),
and all generation prompts through one batched generation with a key-value cache, so batches are full
whatever the records look like. ``mode="straightforward"`` scores and generates one item at a time
without any sharing or cache: the reference the benchmark compares the fast path against.
"""
from __future__ import annotations

import time
from typing import Any

from massedit.evaluation import metrics
from massedit.evaluation.fluency import generate_greedy, text_entropy
from massedit.evaluation.scoring import score_targets
from massedit.tokens import fill

ROLES = ("rewrite", "paraphrase", "neighborhood")

# Per-record mean name → (summary scale). Accuracies and magnitudes ×100, fluency unscaled (§3.10).
SUMMARY_SCALES = {
    "rewrite_acc": 100.0,
    "paraphrase_acc": 100.0,
    "neighborhood_acc": 100.0,
    "rewrite_lenient": 100.0,
    "paraphrase_lenient": 100.0,
    "neighborhood_lenient": 100.0,
    "EM": 100.0,
    "PM": 100.0,
    "NM": 100.0,
    "fluency": 1.0,
}
_MAGNITUDE_KEYS = {"rewrite": "EM", "paraphrase": "PM", "neighborhood": "NM"}


def rewrite_text(record: dict) -> str:
    return fill(record["prompt"], record["subject"])[0]


def build_items(
    records: list[dict], prefixes: list[str], lenient: bool = True
) -> tuple[list[tuple[str, str]], list[dict[str, list[tuple[int, int | None]]]]]:
    """Flatten every record's scored prompts into one ``(prompt, target)`` list.

    Returns the items and, per record and role, a list of index pairs ``(practical, comparison)``:
    ``practical`` scores the answer that should be produced (target_new for rewrite and paraphrase, the
    item's own answer for neighbourhood); ``comparison`` scores the competing answer for the lenient
    metric (target_true, resp. target_new), or is None when the record has no target_true or ``lenient``
    is off. Neighbourhood order: for each neighbour, each prefix.
    """
    items: list[tuple[str, str]] = []
    plans = []

    def add(prompt: str, target: str) -> int:
        items.append((prompt, target))
        return len(items) - 1

    for rec in records:
        true = rec.get("target_true") if lenient else None
        new = rec["target_new"]
        heads = prefixes or [""]
        plan: dict[str, list[tuple[int, int | None]]] = {role: [] for role in ROLES}
        base = rewrite_text(rec)
        for prompt in [h + base for h in heads]:
            plan["rewrite"].append((add(prompt, new), None if true is None else add(prompt, true)))
        for prompt in rec.get("paraphrase_prompts") or []:
            plan["paraphrase"].append((add(prompt, new), None if true is None else add(prompt, true)))
        for nb in rec.get("neighborhood") or []:
            for prompt in [h + nb["prompt"] for h in heads]:
                plan["neighborhood"].append(
                    (add(prompt, nb["target"]), None if true is None else add(prompt, new))
                )
        plans.append(plan)
    return items, plans


def item_groups(items: list[tuple[str, str]], prefixes: list[str]) -> list[str | None]:
    """The evaluation prefix each item's prompt starts with (None: unprefixed), for prefix sharing."""
    heads = sorted(prefixes, key=len, reverse=True)
    return [next((h for h in heads if h and prompt.startswith(h)), None) for prompt, _ in items]


EVAL_MODES = ("fast", "straightforward")


def _record_row(rec: dict, plan: dict, scores: list) -> dict[str, Any]:
    row: dict[str, Any] = {"case_id": rec.get("case_id")}
    means: dict[str, float | None] = {}
    for role in ROLES:
        pairs = plan[role]
        correct = [scores[p].exact for p, _ in pairs]
        row[f"{role}_prompts_correct"] = correct
        means[f"{role}_acc"] = metrics.mean(correct)
        compared = [(scores[p].nll, scores[c].nll) for p, c in pairs if c is not None]
        if not compared:
            means[f"{role}_lenient"] = means[_MAGNITUDE_KEYS[role]] = None
            continue
        if role == "neighborhood":
            # (ref, new): the item's own answer must stay strictly more likely than target_new.
            row[f"{role}_prompts_probs"] = [{"target_new": n, "target_true": r} for r, n in compared]
            lenient = [metrics.lenient_neighborhood(n, r) for r, n in compared]
            magnitude = [metrics.magnitude_neighborhood(n, r) for r, n in compared]
        else:
            row[f"{role}_prompts_probs"] = [{"target_new": n, "target_true": t} for n, t in compared]
            lenient = [metrics.lenient_rewrite(n, t) for n, t in compared]
            magnitude = [metrics.magnitude_rewrite(n, t) for n, t in compared]
        row[f"{role}_prompts_lenient"] = lenient
        means[f"{role}_lenient"] = metrics.mean(lenient)
        means[_MAGNITUDE_KEYS[role]] = metrics.mean(magnitude)
    row["means"] = means
    return row


def evaluate_records(
    model,
    tokenizer,
    records: list[dict],
    prefixes: list[str],
    add_bos: bool,
    batch_size: int = 32,
    fluency_max_new_tokens: int = 64,
    lenient: bool = True,
    mode: str = "fast",
) -> tuple[list[dict], dict]:
    """Score ``records``; return per-record rows and the summary.

    Each row holds ``case_id``, ``{role}_prompts_correct`` (practical, per scored prompt), when
    target_true exists and ``lenient`` is on ``{role}_prompts_probs`` (NLLs of target_new and of the
    compared answer) and ``{role}_prompts_lenient``, ``generation_ngram_entropy`` (None without
    generation prompts), ``generated_texts``, and ``means`` (the record's unscaled means under the
    summary's names, None where unavailable). The summary averages the rows' means over the records
    that have them (×100 except fluency) and adds ``n_records``, ``n_scored_items``,
    ``n_generation_prompts``, ``scoring_seconds`` and ``generation_seconds``.
    ``fluency_max_new_tokens=0`` skips generation. ``mode``: see the module docstring; both modes give
    the same metrics.
    """
    if mode not in EVAL_MODES:
        raise ValueError(f"evaluation mode must be one of {EVAL_MODES}, not {mode!r}")
    fast = mode == "fast"
    items, plans = build_items(records, prefixes, lenient)
    t0 = time.perf_counter()
    scores = score_targets(model, tokenizer, items, add_bos, batch_size, groups=item_groups(items, prefixes),
                           mode="shared" if fast else "straightforward")
    scoring_seconds = time.perf_counter() - t0

    gen_prompts = [(r, p) for r, rec in enumerate(records) for p in rec.get("generation_prompts") or []]
    if fluency_max_new_tokens <= 0:
        gen_prompts = []
    t0 = time.perf_counter()
    texts = (
        generate_greedy(
            model, tokenizer, [p for _, p in gen_prompts], add_bos,
            max_new_tokens=fluency_max_new_tokens, batch_size=batch_size if fast else 1, use_cache=fast,
        )
        if gen_prompts
        else []
    )
    generation_seconds = time.perf_counter() - t0
    per_record_texts: list[list[str]] = [[] for _ in records]
    for (r, _), text in zip(gen_prompts, texts):
        per_record_texts[r].append(text)

    rows = []
    for rec, plan, gen in zip(records, plans, per_record_texts):
        row = _record_row(rec, plan, scores)
        entropy = metrics.mean([text_entropy(t) for t in gen])
        row["generation_ngram_entropy"] = entropy
        row["generated_texts"] = gen
        row["means"]["fluency"] = entropy
        rows.append(row)

    summary: dict[str, Any] = {
        key: metrics.aggregate((row["means"][key] for row in rows), scale)
        for key, scale in SUMMARY_SCALES.items()
    }
    summary.update(
        n_records=len(records),
        n_scored_items=len(items),
        n_generation_prompts=len(gen_prompts),
        scoring_seconds=scoring_seconds,
        generation_seconds=generation_seconds,
    )
    return rows, summary


def known_mask(model, tokenizer, records: list[dict], add_bos: bool, batch_size: int = 32) -> list[bool]:
    """Whether the (unedited) model already produces target_true on the bare rewrite prompt (practical)."""
    missing = [rec.get("case_id") for rec in records if rec.get("target_true") is None]
    if missing:
        raise ValueError(f"known_mask needs target_true; records without it: {missing[:5]}")
    items = [(rewrite_text(rec), rec["target_true"]) for rec in records]
    return [s.exact for s in score_targets(model, tokenizer, items, add_bos, batch_size)]
