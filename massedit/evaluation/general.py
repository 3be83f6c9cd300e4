"""General abilities (Figure 9): the AlphaEdit/EAMET GLUE-style harness (reference evaluation.md §1.7, §3.9).

Protocol, per task file (a JSON list; the mirror's ``glue_eval/<task>.json``):

* the first ``FEW_SHOT_SPLIT`` (10) examples are reserved for few-shot context and never tested; the test
  examples are the next ``n_per_task`` (the paper: 100), in file order; evaluation is 0-shot;
* the model greedily generates ``gen_len`` (5) new tokens after the prompt; the decoded text (prompt
  included, special tokens skipped) is split at the **last** occurrence of the task's answer cue and the
  rest, stripped and lower-cased, is searched for the label words by substring, in the task's order
  (MMLU instead searches the continuation alone for ``"a\\n"`` … ``"d\\n"``); no match = invalid (-1);
* ``f1``: weighted F1 of the parsed answers (invalid is its own class, so it counts as wrong);
  ``mcc``: Matthews correlation of the parsed answers; ``f1_new``: weighted F1 of the prediction by
  label-word likelihood: each candidate word, after the prompt and one space, is scored by its
  length-normalised NLL and the unique most likely one wins (binary tasks: the first word wins only when
  strictly more likely, else the second; MMLU: no strict winner = invalid, as the harness does);
* also ``correct`` / ``incorrect`` / ``invalid`` counts of the parsed answers and ``correct_new``.

Prompt formats (``{…}`` are the example's fields):

=====  ==========================================================================================
sst2   ``Review :{sentence}\\nSentiment :``
mrpc   ``Are the sentences paraphrases of each other.\\nSentence 1: {sentence1}\\nSentence 2: {sentence2}\\nAnswer:``
cola   ``Is this sentence linguistically acceptable?\\nSentence: {sentence}\\nAnswer: `` (trailing space)
rte    ``{sentence1}\\nquestion: {sentence2} True or False?\\nanswer:``
nli    ``{sentence1} entails the {sentence2} True or False? Answer:``
mmlu   ``Question: {question}\\n(A) {c0}\\n(B) {c1}\\n(C) {c2}\\n(D) {c3}\\nAnswer:``
=====  ==========================================================================================

**RTE polarity** (method.md §7, quirk 25, config ``rte_polarity``): RTE labels follow GLUE (0 =
entailment) but the harness maps "True" to 1. ``paper`` keeps that inversion (reproduces Figure 9),
``clean`` maps "True" to 0 (entailment). NLI is mapped correctly in both (entailment → 1 → "True").

Clean-ups kept from the reference: the context length comes from the model config, not a hard-coded
table; MMLU is reported as ``mmlu`` (the harness's key is the misspelt ``mmmlu``). Weighted F1 and MCC are
implemented here with scikit-learn's semantics (labels = union of true and predicted values).
"""
from __future__ import annotations

import json
import logging
import math
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from massedit.evaluation.fluency import generate_greedy
from massedit.evaluation.scoring import score_targets
from massedit.tokens import encode_plain

log = logging.getLogger(__name__)

FEW_SHOT_SPLIT = 10
GEN_LEN = 5
RTE_POLARITIES = ("paper", "clean")
INVALID = -1


# ---------------------------------------------------------------------------------------------- metrics

def f1_weighted(labels: Sequence, predictions: Sequence) -> float:
    """Weighted F1 (scikit-learn ``f1_score(average="weighted")``): per-class F1 = 2TP / (2TP + FP + FN)
    (0 when TP = 0), averaged with the classes' true counts as weights; classes that are only predicted
    (e.g. invalid) have weight 0 but their false positives lower the other classes' precision."""
    if len(labels) != len(predictions):
        raise ValueError(f"{len(labels)} labels but {len(predictions)} predictions")
    if not labels:
        return 0.0
    support = Counter(labels)
    total = 0.0
    for cls, weight in support.items():
        tp = sum(1 for y, p in zip(labels, predictions) if y == cls and p == cls)
        fp = sum(1 for y, p in zip(labels, predictions) if y != cls and p == cls)
        fn = weight - tp
        total += weight * (2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return total / len(labels)


def matthews_corrcoef(labels: Sequence, predictions: Sequence) -> float:
    """Multi-class Matthews correlation (scikit-learn's): with C the confusion matrix over the union of
    classes, t_k / p_k its row / column sums, c its trace and s its total,
    MCC = (c·s − Σ p_k t_k) / √((s² − Σ p_k²)(s² − Σ t_k²)); 0 when the denominator is 0."""
    if len(labels) != len(predictions):
        raise ValueError(f"{len(labels)} labels but {len(predictions)} predictions")
    s = len(labels)
    c = sum(1 for y, p in zip(labels, predictions) if y == p)
    t, p = Counter(labels), Counter(predictions)
    classes = set(t) | set(p)
    cov_ytyp = c * s - sum(p[k] * t[k] for k in classes)
    cov_ypyp = s * s - sum(v * v for v in p.values())
    cov_ytyt = s * s - sum(v * v for v in t.values())
    if cov_ypyp * cov_ytyt == 0:
        return 0.0
    return cov_ytyp / math.sqrt(cov_ypyp * cov_ytyt)


# ------------------------------------------------------------------------------------------------ tasks

@dataclass(frozen=True)
class Task:
    """One task's prompt, answer parsing and label words.

    ``cue``: the text after whose last occurrence the answer is read (None: MMLU reads the continuation);
    ``keywords``: (lower-case substring, label) tested in order; ``words``: (candidate word, label) for
    the likelihood prediction, in the harness's order; ``label``: the example's gold label."""

    name: str
    prompt: Callable[[dict], str]
    cue: str | None
    keywords: tuple[tuple[str, int], ...]
    words: tuple[tuple[str, int], ...]
    label: Callable[[dict], int]


def _rte_maps(polarity: str) -> tuple[tuple[tuple[str, int], ...], tuple[tuple[str, int], ...]]:
    if polarity not in RTE_POLARITIES:
        raise ValueError(f"rte_polarity must be one of {RTE_POLARITIES}, not {polarity!r}")
    true, false = (1, 0) if polarity == "paper" else (0, 1)
    # "false" is tested before "true"; the likelihood candidates are True, then False.
    return (("false", false), ("true", true)), (("True", true), ("False", false))


def make_tasks(rte_polarity: str = "paper") -> dict[str, Task]:
    """The six Figure 9 tasks, keyed by their mirror file names."""
    rte_keywords, rte_words = _rte_maps(rte_polarity)
    return {
        "sst2": Task(
            "sst2", lambda ex: "Review :" + ex["sentence"] + "\nSentiment :", "Sentiment :",
            (("positive", 1), ("negative", 0)), (("positive", 1), ("negative", 0)), lambda ex: int(ex["label"])),
        "mrpc": Task(
            "mrpc",
            lambda ex: ("Are the sentences paraphrases of each other.\n"
                        f"Sentence 1: {ex['sentence1']}\nSentence 2: {ex['sentence2']}\nAnswer:"),
            "Answer:", (("yes", 1), ("no", 0)), (("Yes", 1), ("No", 0)), lambda ex: int(ex["label"])),
        "cola": Task(
            "cola",
            lambda ex: f"Is this sentence linguistically acceptable?\nSentence: {ex['sentence']}\nAnswer: ",
            "Answer:", (("yes", 1), ("no", 0)), (("Yes", 1), ("No", 0)), lambda ex: int(ex["label"])),
        "rte": Task(
            "rte", lambda ex: f"{ex['sentence1']}\nquestion: {ex['sentence2']} True or False?\nanswer:",
            "answer:", rte_keywords, rte_words, lambda ex: int(ex["label"])),
        "nli": Task(
            "nli", lambda ex: f"{ex['sentence1']} entails the {ex['sentence2']} True or False? Answer:",
            "True or False? Answer:", (("true", 1), ("false", 0)), (("True", 1), ("False", 0)),
            lambda ex: 1 if ex["label"] == "entailment" else 0),
        "mmlu": Task(
            "mmlu",
            lambda ex: ("Question: " + ex["question"] + "\n"
                        + "".join(f"({letter}) {choice}\n" for letter, choice in zip("ABCD", ex["choices"]))
                        + "Answer:"),
            None, (("a\n", 0), ("b\n", 1), ("c\n", 2), ("d\n", 3)),
            (("A", 0), ("B", 1), ("C", 2), ("D", 3)), lambda ex: int(ex["answer"])),
    }


TASK_NAMES = tuple(make_tasks())


def parse_answer(task: Task, text: str) -> int:
    """The label parsed from ``text``: the full generation (prompt included) for cue tasks, the
    continuation alone for MMLU; ``INVALID`` when no keyword matches."""
    answer = text.split(task.cue)[-1].strip() if task.cue is not None else text
    answer = answer.lower()
    for keyword, label in task.keywords:
        if keyword in answer:
            return label
    return INVALID


def pick_by_likelihood(task: Task, nlls: Sequence[float]) -> int:
    """The harness's likelihood prediction from the candidate words' length-normalised NLLs (in
    ``task.words`` order): binary tasks take the first word iff strictly more likely than the second;
    otherwise the unique strictly most likely word, else ``INVALID``."""
    probs = [math.exp(-x) for x in nlls]
    labels = [label for _, label in task.words]
    if len(probs) == 2:
        return labels[0] if probs[0] > probs[1] else labels[1]
    for i, p in enumerate(probs):
        if all(p > q for j, q in enumerate(probs) if j != i):
            return labels[i]
    return INVALID


def load_examples(path: str | Path, n_per_task: int | None) -> list[dict]:
    """The test examples of a task file: after the ``FEW_SHOT_SPLIT`` reserved ones, the next
    ``n_per_task`` (all when None)."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of examples, got {type(data).__name__}")
    available = len(data) - FEW_SHOT_SPLIT
    if n_per_task is None:
        n_per_task = available
    if not 0 <= n_per_task <= available:
        raise ValueError(f"{path}: n_per_task={n_per_task} but only {available} test examples "
                         f"(after the {FEW_SHOT_SPLIT} few-shot ones)")
    return data[FEW_SHOT_SPLIT : FEW_SHOT_SPLIT + n_per_task]


def context_length(model) -> int | None:
    """The model's context length from its config (``max_position_embeddings``, ``n_positions``,
    ``n_ctx``, also inside ``text_config``); None when the config names none."""
    configs = [getattr(model, "config", None)]
    configs.append(getattr(configs[0], "text_config", None))
    for cfg in configs:
        for key in ("max_position_embeddings", "n_positions", "n_ctx"):
            value = getattr(cfg, key, None)
            if isinstance(value, int) and value > 0:
                return value
    return None


def evaluate_task(
    model, tokenizer, task: Task, examples: list[dict], add_bos: bool, batch_size: int = 16,
    gen_len: int = GEN_LEN,
) -> dict[str, Any]:
    """Run one task on ``examples``; returns the metrics, counts and per-example details."""
    t0 = time.perf_counter()
    prompts = [task.prompt(ex) for ex in examples]
    labels = [task.label(ex) for ex in examples]
    ctx = context_length(model)
    max_input = max(1, ctx - gen_len) if ctx else 1 << 30
    too_long = sum(1 for p in prompts if len(encode_plain(tokenizer, p, add_bos).ids) > max_input)
    if too_long:
        log.warning("%s: %d prompts exceed the context length (%s) minus %d new tokens and are truncated",
                    task.name, too_long, ctx, gen_len)
    texts = generate_greedy(model, tokenizer, prompts, add_bos, max_new_tokens=gen_len,
                            max_input_tokens=max_input, batch_size=batch_size) if prompts else []
    # The continuation as the harness gets it: the decoded generation with the decoded prompt removed.
    heads = [tokenizer.decode(encode_plain(tokenizer, p, add_bos).ids, skip_special_tokens=True) for p in prompts]
    continuations = [text.replace(head, "") for text, head in zip(texts, heads)]
    # Cue tasks read the full text (after the cue's last occurrence); MMLU the continuation alone.
    answers = [parse_answer(task, cont if task.cue is None else text) for text, cont in zip(texts, continuations)]

    items = [(p, word) for p in prompts for word, _ in task.words]
    scores = score_targets(model, tokenizer, items, add_bos, batch_size) if items else []
    k = len(task.words)
    nlls = [[s.nll for s in scores[i * k : (i + 1) * k]] for i in range(len(prompts))]
    answers_new = [pick_by_likelihood(task, row) for row in nlls]

    correct = sum(1 for y, a in zip(labels, answers) if a == y)
    invalid = answers.count(INVALID)
    return {
        "n": len(examples),
        "f1": f1_weighted(labels, answers) if examples else None,
        "f1_new": f1_weighted(labels, answers_new) if examples else None,
        "mcc": matthews_corrcoef(labels, answers) if examples else None,
        "correct": correct,
        "incorrect": len(examples) - correct - invalid,
        "invalid": invalid,
        "correct_new": sum(1 for y, a in zip(labels, answers_new) if a == y),
        "n_truncated": too_long,
        "gen_len": gen_len,
        "seconds": time.perf_counter() - t0,
        "examples": [
            {"label": y, "answer": a, "answer_new": b, "continuation": cont, "nll": row}
            for y, a, b, cont, row in zip(labels, answers, answers_new, continuations, nlls)
        ],
    }


def evaluate_general(
    model,
    tokenizer,
    tasks: dict[str, str | Path],
    n_per_task: int | None,
    add_bos: bool,
    batch_size: int = 16,
    rte_polarity: str = "paper",
    gen_len: int = GEN_LEN,
) -> dict[str, dict[str, Any]]:
    """Evaluate every task of ``tasks`` (task name → JSON file; names from ``TASK_NAMES``).

    Returns task name → ``{n, f1, f1_new, mcc, correct, incorrect, invalid, correct_new, n_truncated,
    gen_len, seconds, examples}``; the ``rte`` entry also records ``rte_polarity``. ``n_per_task``: test
    examples per task after the 10 reserved ones (the paper: 100; None: all)."""
    known = make_tasks(rte_polarity)
    unknown = sorted(set(tasks) - set(known))
    if unknown:
        raise ValueError(f"unknown general-ability task(s) {unknown}; known: {list(known)}")
    out: dict[str, dict[str, Any]] = {}
    for name, path in tasks.items():
        result = evaluate_task(model, tokenizer, known[name], load_examples(path, n_per_task), add_bos,
                               batch_size, gen_len)
        if name == "rte":
            result["rte_polarity"] = rte_polarity
        out[name] = result
    return out
