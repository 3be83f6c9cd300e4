"""Wiki-recent evaluation (reference evaluation.md §3.6, §4): Eff., Por., Loc. and Flu.

* **Eff.** (``rewrite_acc``): practical accuracy (§3.2) of ``target_new`` on the prefixed rewrite prompts
  (``prefix + prompt`` for each evaluation prefix; the bare prompt when there are none), as for
  CounterFact.
* **Por.** (``portability_acc``) and **Loc.** (``locality_acc``): for each item of the record's optional
  ``portability`` / ``locality`` lists (``{"prompt", "targets"}``, aliases flattened by the loader), the
  item is correct when **any** alias passes the practical test; mean over the record's items, then over
  records. Never prefixed. Loc. is an absolute accuracy against the item's own answers, not agreement
  with the pre-edit model.
* **Flu.** (``fluency``): n-gram entropy (§3.7) of the greedy generation from the record's generation
  prompt(s), i.e. ``rephrase`` as the loader maps it; unscaled. Records without one have no fluency.

The authors' Por./Loc. test never checks an alias's **last** token (method.md §7, quirk 11, config
``wr_skip_last_token``): a mismatch there still counts, so single-token aliases always pass.
``last_token_quirk=True`` reproduces it (the paper preset), ``False`` checks every token.

Records without portability (or locality) items have no value for that metric and are left out of its
mean (the authors' code would divide by zero there).
"""
from __future__ import annotations

import time
from typing import Any

from massedit.evaluation import metrics
from massedit.evaluation.counterfact import rewrite_text
from massedit.evaluation.fluency import generate_greedy, text_entropy
from massedit.evaluation.counterfact import item_groups
from massedit.evaluation.scoring import score_targets

SUMMARY_SCALES = {"rewrite_acc": 100.0, "portability_acc": 100.0, "locality_acc": 100.0, "fluency": 1.0}
MULTI_ROLES = ("portability", "locality")


def alias_passes(argmax_correct: list[bool], last_token_quirk: bool) -> bool:
    """Whether one alias passes the practical test, given the per-token argmax matches.

    With the quirk the last token is not checked (the authors' loop sets ``correct = True`` whenever it
    reaches the last index, match or not), so a single-token alias always passes."""
    checked = argmax_correct[:-1] if last_token_quirk else argmax_correct
    return all(checked)


def item_correct(alias_flags: list[list[bool]], last_token_quirk: bool) -> bool:
    """An item is correct when any of its aliases passes."""
    return any(alias_passes(flags, last_token_quirk) for flags in alias_flags)


def evaluate_wikirecent(
    model,
    tokenizer,
    records: list[dict],
    prefixes: list[str],
    add_bos: bool,
    batch_size: int = 32,
    fluency_max_new_tokens: int = 64,
    last_token_quirk: bool = True,
) -> tuple[list[dict], dict]:
    """Score Wiki-recent ``records``; return per-record rows and the summary (conventions of
    ``counterfact.evaluate_records``).

    Rows: ``case_id``, ``rewrite_prompts_correct`` (per prefixed prompt), ``portability_prompts_correct``
    and ``locality_prompts_correct`` (per item, any alias), ``generation_ngram_entropy`` (None without a
    generation prompt), ``generated_texts`` and ``means`` (``rewrite_acc``, ``portability_acc``,
    ``locality_acc``, ``fluency``; unscaled, None where unavailable). Summary: means over the records that
    have them (×100 except fluency), ``n_records``, ``n_portability_records``, ``n_locality_records``,
    ``n_scored_items`` (one per prompt–alias pair), ``n_generation_prompts``, ``fluency_available`` and
    ``fluency_unavailable_reason`` (None when available),
    ``scoring_seconds``, ``generation_seconds`` and ``last_token_quirk``.
    ``fluency_max_new_tokens=0`` skips generation.
    """
    items: list[tuple[str, str]] = []
    plans: list[dict[str, Any]] = []
    heads = prefixes or [""]
    for rec in records:
        plan: dict[str, Any] = {"rewrite": [], "portability": [], "locality": []}
        base = rewrite_text(rec)
        for head in heads:
            items.append((head + base, rec["target_new"]))
            plan["rewrite"].append(len(items) - 1)
        for role in MULTI_ROLES:
            for item in rec.get(role) or []:
                start = len(items)
                items += [(item["prompt"], alias) for alias in item["targets"]]
                plan[role].append(range(start, len(items)))
        plans.append(plan)

    t0 = time.perf_counter()
    # Prefixed rewrite prompts share each prefix's computation, as in the CounterFact evaluation.
    scores = score_targets(model, tokenizer, items, add_bos, batch_size, groups=item_groups(items, prefixes))
    scoring_seconds = time.perf_counter() - t0

    gen_prompts = [(r, p) for r, rec in enumerate(records) for p in rec.get("generation_prompts") or []]
    fluency_reason = None if gen_prompts else "no record has a generation prompt (rephrase)"
    if fluency_max_new_tokens <= 0:
        gen_prompts, fluency_reason = [], "generation disabled (fluency_max_new_tokens <= 0)"
    t0 = time.perf_counter()
    texts = (
        generate_greedy(model, tokenizer, [p for _, p in gen_prompts], add_bos,
                        max_new_tokens=fluency_max_new_tokens, batch_size=batch_size)
        if gen_prompts else []
    )
    generation_seconds = time.perf_counter() - t0
    per_record_texts: list[list[str]] = [[] for _ in records]
    for (r, _), text in zip(gen_prompts, texts):
        per_record_texts[r].append(text)

    rows = []
    for rec, plan, gen in zip(records, plans, per_record_texts):
        row: dict[str, Any] = {"case_id": rec.get("case_id")}
        row["rewrite_prompts_correct"] = [scores[i].exact for i in plan["rewrite"]]
        means: dict[str, float | None] = {"rewrite_acc": metrics.mean(row["rewrite_prompts_correct"])}
        for role in MULTI_ROLES:
            correct = [item_correct([scores[i].argmax_correct for i in span], last_token_quirk)
                       for span in plan[role]]
            row[f"{role}_prompts_correct"] = correct
            means[f"{role}_acc"] = metrics.mean(correct)
        entropy = metrics.mean([text_entropy(t) for t in gen])
        row["generation_ngram_entropy"] = entropy
        row["generated_texts"] = gen
        means["fluency"] = entropy
        row["means"] = means
        rows.append(row)

    summary: dict[str, Any] = {
        key: metrics.aggregate((row["means"][key] for row in rows), scale) for key, scale in SUMMARY_SCALES.items()
    }
    summary.update(
        n_records=len(records),
        n_portability_records=sum(1 for row in rows if row["portability_prompts_correct"]),
        n_locality_records=sum(1 for row in rows if row["locality_prompts_correct"]),
        n_scored_items=len(items),
        n_generation_prompts=len(gen_prompts),
        fluency_available=bool(gen_prompts),
        fluency_unavailable_reason=fluency_reason,
        scoring_seconds=scoring_seconds,
        generation_seconds=generation_seconds,
        last_token_quirk=last_token_quirk,
    )
    return rows, summary
