"""General-ability harness (Figure 9): weighted F1 and MCC against hand computation, the six prompt formats
on real mirror records, answer parsing, the RTE polarity switch and an end-to-end run on a tiny model."""
import json
import math
import os
from pathlib import Path

import pytest

from massedit.evaluation import general
from massedit.evaluation.general import (
    INVALID, evaluate_general, f1_weighted, make_tasks, matthews_corrcoef, parse_answer, pick_by_likelihood,
)

MIRROR = Path(os.environ.get("MASSEDIT_MIRROR") or Path(__file__).resolve().parents[1] / ".." / "shared" / "data")
GLUE = MIRROR / "glue_eval"
needs_mirror = pytest.mark.skipif(not (GLUE / "sst2.json").is_file(),
                                  reason=f"no general-ability subsets under {GLUE} (set MASSEDIT_MIRROR)")


# ------------------------------------------------------------------------------------------------ metrics

def test_f1_weighted_hand_computed():
    labels = [0, 0, 1, 1, 1, 1]
    preds = [0, 1, 1, 1, 1, INVALID]
    # Class 0: TP 1, FP 0, FN 1 → F1 = 2/3, support 2. Class 1: TP 3, FP 1, FN 1 → F1 = 6/8, support 4.
    # Invalid: support 0 (weight 0). Weighted: (2·2/3 + 4·3/4) / 6 = 13/18.
    assert f1_weighted(labels, preds) == pytest.approx(13 / 18)
    assert f1_weighted([1, 0, 1], [1, 0, 1]) == pytest.approx(1.0)
    # All invalid: every class has TP 0.
    assert f1_weighted([1, 0], [INVALID, INVALID]) == 0.0
    # Four classes: A right twice, B predicted as A, C right, D predicted as C.
    # A: TP 2, FP 1 → 4/5 (support 2); B: 0 (1); C: TP 1, FP 1 → 2/3 (1); D: 0 (1). (2·4/5 + 2/3) / 5.
    assert f1_weighted([0, 0, 1, 2, 3], [0, 0, 0, 2, 2]) == pytest.approx((8 / 5 + 2 / 3) / 5)
    with pytest.raises(ValueError):
        f1_weighted([0], [0, 1])


def test_mcc_hand_computed():
    # Binary: TP 1, FN 1, TN 2, FP 0 → (1·2 − 0·1) / √((1+0)(1+1)(2+0)(2+1)) = 2/√12.
    assert matthews_corrcoef([1, 1, 0, 0], [1, 0, 0, 0]) == pytest.approx(2 / math.sqrt(12))
    # With an invalid class: classes (-1, 0, 1); true counts t = (0, 2, 4), predicted counts p = (1, 1, 4),
    # trace c = 4, total s = 6. Numerator c·s − Σ p_k t_k = 24 − (0 + 2 + 16) = 6; s² − Σ p² = 36 − 18,
    # s² − Σ t² = 36 − 20: MCC = 6 / √(18·16) = 6/√288 = 1/(2√2).
    labels = [0, 0, 1, 1, 1, 1]
    preds = [0, 1, 1, 1, 1, INVALID]
    assert matthews_corrcoef(labels, preds) == pytest.approx(1 / (2 * math.sqrt(2)))
    assert matthews_corrcoef([0, 1, 0, 1], [0, 1, 0, 1]) == pytest.approx(1.0)
    assert matthews_corrcoef([0, 1, 0, 1], [1, 0, 1, 0]) == pytest.approx(-1.0)
    # Constant predictions: zero denominator → 0.
    assert matthews_corrcoef([0, 1, 1], [1, 1, 1]) == 0.0


# ------------------------------------------------------------------------------------------------ prompts

def _first_test_example(task):
    data = json.loads((GLUE / f"{task}.json").read_text())
    assert general.load_examples(GLUE / f"{task}.json", 3) == data[10:13]
    return data[10]


@needs_mirror
def test_prompt_formats_on_mirror_records():
    tasks = make_tasks()
    ex = _first_test_example("sst2")
    assert tasks["sst2"].prompt(ex) == f"Review :{ex['sentence']}\nSentiment :"
    assert tasks["sst2"].label(ex) == ex["label"]
    ex = _first_test_example("mrpc")
    assert tasks["mrpc"].prompt(ex) == ("Are the sentences paraphrases of each other.\n"
                                        f"Sentence 1: {ex['sentence1']}\nSentence 2: {ex['sentence2']}\nAnswer:")
    ex = _first_test_example("cola")
    assert tasks["cola"].prompt(ex) == (f"Is this sentence linguistically acceptable?\nSentence: {ex['sentence']}"
                                        "\nAnswer: ")
    ex = _first_test_example("rte")
    assert tasks["rte"].prompt(ex) == f"{ex['sentence1']}\nquestion: {ex['sentence2']} True or False?\nanswer:"
    assert tasks["rte"].label(ex) == ex["label"]
    ex = _first_test_example("nli")
    assert tasks["nli"].prompt(ex) == f"{ex['sentence1']} entails the {ex['sentence2']} True or False? Answer:"
    assert tasks["nli"].label(ex) == (1 if ex["label"] == "entailment" else 0)
    assert tasks["nli"].label({"label": "not_entailment"}) == 0
    ex = _first_test_example("mmlu")
    c = ex["choices"]
    assert tasks["mmlu"].prompt(ex) == (f"Question: {ex['question']}\n(A) {c[0]}\n(B) {c[1]}\n(C) {c[2]}\n"
                                        f"(D) {c[3]}\nAnswer:")
    assert tasks["mmlu"].label(ex) == ex["answer"]


def test_load_examples_reserves_few_shot(tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps([{"i": i} for i in range(15)]))
    assert [e["i"] for e in general.load_examples(path, 2)] == [10, 11]
    assert [e["i"] for e in general.load_examples(path, None)] == [10, 11, 12, 13, 14]
    with pytest.raises(ValueError):
        general.load_examples(path, 6)


def test_parse_answers():
    tasks = make_tasks()
    sst = tasks["sst2"]
    assert parse_answer(sst, "Review :fine\nSentiment : Positive review") == 1
    assert parse_answer(sst, "Review :fine\nSentiment :  negative.") == 0
    assert parse_answer(sst, "Review :fine\nSentiment : meh") == INVALID
    # Only the text after the cue's last occurrence counts; "positive" is tested first.
    assert parse_answer(sst, "Review :Sentiment : positive\nSentiment : negative") == 0
    assert parse_answer(sst, "Review :x\nSentiment : positive or negative") == 1
    assert parse_answer(tasks["mrpc"], "...\nAnswer: No, they are not") == 0
    assert parse_answer(tasks["mrpc"], "...\nAnswer: Yes") == 1
    assert parse_answer(tasks["cola"], "...\nAnswer: nope") == 0   # crude substring test, kept
    assert parse_answer(tasks["nli"], "a entails the b True or False? Answer: False") == 0
    assert parse_answer(tasks["nli"], "a entails the b True or False? Answer: True") == 1
    # MMLU reads the continuation alone, for "a\n" … "d\n" in that order.
    mmlu = tasks["mmlu"]
    assert parse_answer(mmlu, " B\n") == 1
    assert parse_answer(mmlu, " C\nD\n") == 2
    assert parse_answer(mmlu, " B") == INVALID


def test_rte_polarity_switch():
    paper, clean = make_tasks("paper")["rte"], make_tasks("clean")["rte"]
    text = "s1\nquestion: s2 True or False?\nanswer: True"
    assert parse_answer(paper, text) == 1 and parse_answer(clean, text) == 0
    text = "s1\nquestion: s2 True or False?\nanswer: False"
    assert parse_answer(paper, text) == 0 and parse_answer(clean, text) == 1
    # "false" is tested before "true".
    assert parse_answer(paper, "s1\nquestion: s2 True or False?\nanswer: True or False") == 0
    # An entailed pair (GLUE label 0) answered "True": wrong under the paper's mapping, right when clean.
    entailed = {"sentence1": "s1", "sentence2": "s2", "label": 0}
    assert paper.label(entailed) == clean.label(entailed) == 0
    assert parse_answer(paper, paper.prompt(entailed) + " True") != paper.label(entailed)
    assert parse_answer(clean, clean.prompt(entailed) + " True") == clean.label(entailed)
    # Likelihood prediction: "True" (first candidate) more likely.
    assert pick_by_likelihood(paper, [0.1, 2.0]) == 1 and pick_by_likelihood(clean, [0.1, 2.0]) == 0
    assert pick_by_likelihood(paper, [2.0, 0.1]) == 0 and pick_by_likelihood(clean, [2.0, 0.1]) == 1
    with pytest.raises(ValueError):
        make_tasks("inverted")


def test_pick_by_likelihood_ties():
    tasks = make_tasks()
    # Binary: the first word wins only when strictly more likely.
    assert pick_by_likelihood(tasks["sst2"], [1.0, 1.0]) == 0
    assert pick_by_likelihood(tasks["sst2"], [0.5, 1.0]) == 1
    # MMLU: the unique most likely letter, else invalid.
    assert pick_by_likelihood(tasks["mmlu"], [2.0, 0.3, 1.0, 4.0]) == 1
    assert pick_by_likelihood(tasks["mmlu"], [0.3, 0.3, 1.0, 4.0]) == INVALID


# ------------------------------------------------------------------------------------------- end to end

@needs_mirror
def test_evaluate_general_tiny_model():
    from massedit.testing import tiny_model, tiny_tokenizer

    tok = tiny_tokenizer("gpt2")
    model = tiny_model("llama", tok)
    names = ["sst2", "mrpc", "cola", "rte", "mmlu", "nli"]
    out = evaluate_general(model, tok, {n: GLUE / f"{n}.json" for n in names}, n_per_task=3, add_bos=False,
                           batch_size=4)
    assert list(out) == names
    for name, res in out.items():
        assert res["n"] == 3
        assert res["correct"] + res["incorrect"] + res["invalid"] == 3
        assert 0 <= res["correct_new"] <= 3
        assert 0.0 <= res["f1"] <= 1.0 and 0.0 <= res["f1_new"] <= 1.0 and -1.0 <= res["mcc"] <= 1.0
        assert res["gen_len"] == 5 and len(res["examples"]) == 3
        k = 4 if name == "mmlu" else 2
        assert all(len(e["nll"]) == k for e in res["examples"])
        # The likelihood prediction and the counts agree with the per-example details.
        assert res["correct_new"] == sum(e["answer_new"] == e["label"] for e in res["examples"])
        assert res["invalid"] == sum(e["answer"] == INVALID for e in res["examples"])
    assert out["rte"]["rte_polarity"] == "paper"
    assert [e["label"] for e in out["nli"]["examples"]] == [
        1 if ex["label"] == "entailment" else 0 for ex in json.loads((GLUE / "nli.json").read_text())[10:13]]
    with pytest.raises(ValueError):
        evaluate_general(model, tok, {"squad": GLUE / "sst2.json"}, n_per_task=3, add_bos=False)
