"""ZsRE evaluation (reference evaluation.md §3.5, §4): Eff., Gen. and Spe. as the EAMET code computes them.

* **Eff.** (``rewrite_acc``): whole-answer exact match (practical accuracy, §3.2) of ``target_new`` on the
  bare question. The EAMET paper's Eff./Gen. are exact match, *not* MEMIT's token-level accuracy.
* **Gen.** (``paraphrase_acc``): the same on each paraphrase (``rephrase``).
* **Spe.** (``neighborhood_acc``): token-level accuracy on the NQ neighbourhood item(s): for each answer
  token t, is the greedy next token after ``question ⊕ answer[:t]`` the answer's token t? Averaged over
  the record's answer tokens (all its neighbourhood items pooled, as the authors' ``np.mean``).

ZsRE ignores the evaluation prefixes (§2): every prompt is scored bare, whatever prefixes exist.

Records follow ``massedit.datasets.zsre``: ``target_true`` None, one neighbourhood item
``{"prompt": loc + "?", "target": loc_ans}`` holding the whole answer; the per-token split happens here.

Spe. has two behaviours (method.md §7, quirk 12, config ``zsre_neighbor_target``):

* ``clean``: answer ids = ``target_ids(question, answer)`` (the clean rule of ``massedit.tokens``), scored
  by teacher forcing on ids, so token t is checked against ``answer_ids[t]`` directly;
* ``paper``: the authors' string path. Prompt t is the string ``question + decode(answer_ids[:t])``
  (re-tokenised), the expected id comes from re-tokenising the decoded single token ``decode(answer_ids[t])``
  with the tokenizer's special tokens, right-padded over the record's tokens, and taking a column chosen
  by the model family (``PAPER_RULES``). For LLaMA-2 that is the *last* column: padding for every token
  whose re-tokenisation is shorter than the longest one, or a "▁"-prefixed variant of a sub-word token;
  this is the bug that deflates LLaMA-2's Spe.
"""
from __future__ import annotations

import time
from typing import Any

from massedit.evaluation import metrics
from massedit.evaluation.counterfact import rewrite_text
from massedit.evaluation.scoring import next_token_argmax, score_targets
from massedit.tokens import target_ids

NEIGHBOR_TARGETS = ("clean", "paper")

# How the authors pick the expected id out of the right-padded re-tokenisation of decode(answer_ids[t]):
#   first       column 0 (Qwen, DeepSeek, Mistral, Falcon, GPT-style tokenizers without BOS)
#   drop_bos    column 1 (Llama-3.1, Gemma: the tokenizer adds BOS)
#   last_column the batch's last column (tokenizers of the LLaMA class, i.e. LLaMA-2: quirk 12)
PAPER_RULES = ("first", "drop_bos", "last_column")

# A padded cell; never equal to a predicted id (the authors' padding is a fresh [PAD] row nobody predicts).
PAD_SENTINEL = -1

SUMMARY_SCALES = {"rewrite_acc": 100.0, "paraphrase_acc": 100.0, "neighborhood_acc": 100.0}


def authors_paper_rule(tokenizer, name_or_path: str | None = None) -> str:
    """The rule the authors' code would pick (``eval_utils_zsre.test_batch_prediction_acc_neighborhood``):
    by model name first (mistral/qwen/deepseek → first; llama-3.1/gemma → drop_bos), then by tokenizer class
    (a class name containing "llama" → last_column), else first."""
    name = (name_or_path or getattr(tokenizer, "name_or_path", "") or "").lower()
    if any(k in name for k in ("mistral", "qwen", "deepseek")):
        return "first"
    if "llama-3.1" in name or "gemma" in name:
        return "drop_bos"
    if "llama" in type(tokenizer).__name__.lower():
        return "last_column"
    return "first"


def paper_expected_ids(tokenizer, target_strings: list[str], rule: str) -> list[int]:
    """Expected ids of the authors' Spe. check for one record's decoded answer tokens.

    ``tok(target_strings, padding=True)`` with special tokens, right padding (padding = ``PAD_SENTINEL``),
    then the column ``rule`` names, row by row."""
    if rule not in PAPER_RULES:
        raise ValueError(f"paper rule must be one of {PAPER_RULES}, not {rule!r}")
    if not target_strings:
        return []
    encoded = [list(tokenizer(s)["input_ids"]) for s in target_strings]
    width = max(len(e) for e in encoded)
    rows = [e + [PAD_SENTINEL] * (width - len(e)) for e in encoded]
    col = {"first": 0, "drop_bos": 1, "last_column": width - 1}[rule]
    return [row[col] if col < width else PAD_SENTINEL for row in rows]


def token_accuracy(flags: list[bool]) -> float | None:
    """Share of correct answer tokens; None when there are none."""
    return metrics.mean(flags)


def _neighbor_items(tokenizer, rec: dict) -> list[tuple[str, str, list[int]]]:
    return [(nb["prompt"], nb["target"], target_ids(tokenizer, nb["prompt"], nb["target"]))
            for nb in rec.get("neighborhood") or []]


def evaluate_zsre(
    model,
    tokenizer,
    records: list[dict],
    add_bos: bool,
    batch_size: int = 32,
    neighbor_target: str = "paper",
    paper_rule: str | None = None,
    prefixes: list[str] | None = None,
) -> tuple[list[dict], dict]:
    """Score ZsRE ``records``; return per-record rows and the summary (conventions of
    ``counterfact.evaluate_records``).

    Rows: ``case_id``, ``rewrite_prompts_correct`` (one bool), ``paraphrase_prompts_correct`` (one per
    paraphrase), ``neighborhood_prompts_correct`` (one bool per answer token, items pooled),
    ``neighborhood_tokens`` (number of answer tokens per item) and ``means`` (``rewrite_acc``,
    ``paraphrase_acc``, ``neighborhood_acc``; unscaled, None where the record has no such prompt).
    Summary: the means over records ×100, ``n_records``, ``n_scored_items``, ``n_neighborhood_tokens``,
    ``scoring_seconds``, ``neighbor_target``, ``paper_rule`` (resolved; None in clean mode) and
    ``prefixes_ignored`` (how many prefixes were passed and not used: ZsRE is never prefixed).

    ``neighbor_target``: ``paper`` (authors' string path, quirk 12) or ``clean`` (answer ids directly).
    ``paper_rule``: one of ``PAPER_RULES``; None picks the authors' rule with ``authors_paper_rule``
    (from the model's ``name_or_path`` and the tokenizer class).
    """
    if neighbor_target not in NEIGHBOR_TARGETS:
        raise ValueError(f"neighbor_target must be one of {NEIGHBOR_TARGETS}, not {neighbor_target!r}")
    paper = neighbor_target == "paper"
    if paper and paper_rule is None:
        name = getattr(getattr(model, "config", None), "_name_or_path", None)
        paper_rule = authors_paper_rule(tokenizer, name)
    if paper and paper_rule not in PAPER_RULES:
        raise ValueError(f"paper_rule must be one of {PAPER_RULES}, not {paper_rule!r}")

    t0 = time.perf_counter()
    items: list[tuple[str, str]] = []
    plans: list[dict[str, Any]] = []
    token_prompts: list[str] = []        # paper mode: one string prompt per answer token
    token_expected: list[int] = []
    for rec in records:
        plan: dict[str, Any] = {"rewrite": [], "paraphrase": [], "neighborhood": []}
        items.append((rewrite_text(rec), rec["target_new"]))
        plan["rewrite"].append(len(items) - 1)
        for prompt in rec.get("paraphrase_prompts") or []:
            items.append((prompt, rec["target_new"]))
            plan["paraphrase"].append(len(items) - 1)
        neighbors = _neighbor_items(tokenizer, rec)
        for prompt, answer, ids in neighbors:
            if paper:
                start = len(token_prompts)
                token_prompts += [prompt + tokenizer.decode(ids[:t]) for t in range(len(ids))]
                plan["neighborhood"].append((start, len(ids)))
            else:
                items.append((prompt, answer))
                plan["neighborhood"].append((len(items) - 1, len(ids)))
        if paper:
            # One right-padded batch per record, as the authors tokenise a record's targets together.
            strings = [tokenizer.decode([i]) for _, _, ids in neighbors for i in ids]
            token_expected += paper_expected_ids(tokenizer, strings, paper_rule)
        plans.append(plan)

    scores = score_targets(model, tokenizer, items, add_bos, batch_size) if items else []
    argmax = next_token_argmax(model, tokenizer, token_prompts, add_bos, batch_size) if token_prompts else []
    scoring_seconds = time.perf_counter() - t0

    rows = []
    for rec, plan in zip(records, plans):
        row: dict[str, Any] = {"case_id": rec.get("case_id")}
        row["rewrite_prompts_correct"] = [scores[i].exact for i in plan["rewrite"]]
        row["paraphrase_prompts_correct"] = [scores[i].exact for i in plan["paraphrase"]]
        tokens: list[bool] = []
        for index, n in plan["neighborhood"]:
            if paper:
                tokens += [argmax[index + t] == token_expected[index + t] for t in range(n)]
            else:
                tokens += list(scores[index].argmax_correct)
        row["neighborhood_prompts_correct"] = tokens
        row["neighborhood_tokens"] = [n for _, n in plan["neighborhood"]]
        row["means"] = {
            "rewrite_acc": metrics.mean(row["rewrite_prompts_correct"]),
            "paraphrase_acc": metrics.mean(row["paraphrase_prompts_correct"]),
            "neighborhood_acc": token_accuracy(tokens),
        }
        rows.append(row)

    summary: dict[str, Any] = {
        key: metrics.aggregate((row["means"][key] for row in rows), scale) for key, scale in SUMMARY_SCALES.items()
    }
    summary.update(
        n_records=len(records),
        n_scored_items=len(items) + len(token_prompts),
        n_neighborhood_tokens=sum(len(row["neighborhood_prompts_correct"]) for row in rows),
        scoring_seconds=scoring_seconds,
        neighbor_target=neighbor_target,
        paper_rule=paper_rule if paper else None,
        prefixes_ignored=len(prefixes or []),
    )
    return rows, summary
