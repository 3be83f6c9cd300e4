"""The paper's remaining metrics on models whose every argmax is scripted: ZsRE (exact-match Eff./Gen.,
token-level Spe., clean and paper targets), Wiki-recent (Eff. on prefixed prompts, any-alias Por./Loc.
with and without the authors' last-token quirk, fluency) and TF-IDF consistency on hand-worked vectors."""
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from massedit.evaluation import consistency
from massedit.evaluation.wikirecent import alias_passes, evaluate_wikirecent, item_correct
from massedit.evaluation.zsre import authors_paper_rule, evaluate_zsre, paper_expected_ids


class SpaceCharTokenizer:
    """One token per character, a preceding space fused into it (" Paris" → " P", "a", "r", "i", "s"), so
    " Q" is a single token. Ids: 3 + ord(c), 131 + ord(c) with the space; BOS 1, EOS 2, pad 0.
    Tokenisation is prefix-stable, so ids(prompt) always prefixes ids(prompt + " " + target)."""

    bos_token_id, eos_token_id, pad_token_id, name_or_path = 1, 2, 0, "space-chars"
    vocab_size = 259

    def __init__(self, bos_on_call: bool = False):
        self.bos_on_call = bos_on_call

    def _ids(self, text):
        ids, i = [], 0
        while i < len(text):
            if text[i] == " " and i + 1 < len(text) and text[i + 1] != " ":
                ids.append(131 + ord(text[i + 1]))
                i += 2
            else:
                ids.append(3 + ord(text[i]))
                i += 1
        return ids

    def __call__(self, text, add_special_tokens=True):
        ids = self._ids(text)
        return {"input_ids": ([1] if add_special_tokens and self.bos_on_call else []) + ids}

    def decode(self, ids, skip_special_tokens=False):
        out = []
        for i in ids:
            i = int(i)
            if i < 3:
                out.append("" if skip_special_tokens else f"<{i}>")
            else:
                out.append(chr(i - 3) if i < 131 else " " + chr(i - 131))
        return "".join(out)


class ScriptedLM(torch.nn.Module):
    """Continues each scripted prompt with its scripted continuation, token by token, as long as what
    follows the prompt is a prefix of that continuation; everything else predicts id 0 (never a target)."""

    def __init__(self, tokenizer, script: dict[str, str]):
        super().__init__()
        self.vocab = tokenizer.vocab_size
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.rules = []
        for prompt, cont in script.items():
            p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            full = tokenizer(prompt + cont, add_special_tokens=False)["input_ids"]
            assert full[: len(p)] == p
            self.rules.append((p, full[len(p):]))

    def _next(self, seq: list[int]) -> int:
        seq = [t for t in seq if t != 1]  # BOS plays no part
        for p, c in self.rules:
            rest = seq[len(p):]
            if seq[: len(p)] == p and len(rest) < len(c) and c[: len(rest)] == rest:
                return c[len(rest)]
        return 0

    def forward(self, input_ids, attention_mask=None, **_):
        logits = torch.zeros(*input_ids.shape, self.vocab)
        for b, row in enumerate(input_ids.tolist()):
            for i in range(len(row)):
                logits[b, i, self._next(row[: i + 1])] = 5.0
        return SimpleNamespace(logits=logits)


# ------------------------------------------------------------------------------------------------- ZsRE

ZSRE = {
    "case_id": 3, "subject": "France", "prompt": "Q: capital of {}?", "target_new": "Paris", "target_true": None,
    "relation": None, "paraphrase_prompts": ["Q: France capital?"],
    "neighborhood": [{"prompt": "nq question: who wrote it?", "target": "Joe Doe"}],
    "generation_prompts": [],
}
ZSRE_SCRIPT = {
    "Q: capital of France?": " Paris",      # Eff.: exact
    "Q: France capital?": " Parxs",         # Gen.: 3 of 5 tokens right, so not an exact match
    "nq question: who wrote it?": " Jxe",   # Spe.: " J" right, then wrong: 1 of the 6 tokens of " Joe Doe"
}


def test_zsre_exact_match_and_token_accuracy():
    tok = SpaceCharTokenizer()
    model = ScriptedLM(tok, ZSRE_SCRIPT)
    rows, summary = evaluate_zsre(model, tok, [ZSRE], add_bos=False, batch_size=2, neighbor_target="clean")
    (row,) = rows
    assert row["case_id"] == 3
    assert row["rewrite_prompts_correct"] == [True]
    # Token accuracy would give 3/5 here; Eff./Gen. are whole-answer exact match.
    assert row["paraphrase_prompts_correct"] == [False]
    # " Joe Doe" = " J", "o", "e", " D", "o", "e": only the first token is the argmax.
    assert row["neighborhood_prompts_correct"] == [True, False, False, False, False, False]
    assert row["neighborhood_tokens"] == [6]
    assert row["means"] == {"rewrite_acc": 1.0, "paraphrase_acc": 0.0, "neighborhood_acc": pytest.approx(1 / 6)}
    assert summary["rewrite_acc"] == 100.0 and summary["paraphrase_acc"] == 0.0
    assert summary["neighborhood_acc"] == pytest.approx(100 / 6)
    assert summary["n_records"] == 1 and summary["n_neighborhood_tokens"] == 6
    assert summary["neighbor_target"] == "clean" and summary["paper_rule"] is None


def test_zsre_token_accuracy_is_per_token_under_teacher_forcing():
    # Token t is judged after the *true* answer[:t]: wrong at "o", right again once " Jo" is given.
    tok = SpaceCharTokenizer()
    script = dict(ZSRE_SCRIPT, **{"nq question: who wrote it?": " Jx", "nq question: who wrote it? Jo": "e Doe"})
    (row,), summary = evaluate_zsre(ScriptedLM(tok, script), tok, [ZSRE], add_bos=False, neighbor_target="clean")
    assert row["neighborhood_prompts_correct"] == [True, False, True, True, True, True]
    assert summary["neighborhood_acc"] == pytest.approx(100 * 5 / 6)
    # The paper's string path gives the same here (prefix-stable tokenizer, no BOS on re-tokenisation).
    (row,), _ = evaluate_zsre(ScriptedLM(tok, script), tok, [ZSRE], add_bos=False, neighbor_target="paper",
                              paper_rule="first")
    assert row["neighborhood_prompts_correct"] == [True, False, True, True, True, True]


def test_zsre_ignores_prefixes():
    tok = SpaceCharTokenizer()
    model = ScriptedLM(tok, ZSRE_SCRIPT)
    bare, s_bare = evaluate_zsre(model, tok, [ZSRE], add_bos=False, neighbor_target="clean")
    pref, s_pref = evaluate_zsre(model, tok, [ZSRE], add_bos=False, neighbor_target="clean",
                                 prefixes=["Something else. ", "Other. "])
    assert [r["means"] for r in pref] == [r["means"] for r in bare]
    assert s_pref["prefixes_ignored"] == 2 and s_bare["prefixes_ignored"] == 0
    assert s_pref["n_scored_items"] == s_bare["n_scored_items"] == 2 + 1


def test_zsre_paper_mode_string_path():
    tok = SpaceCharTokenizer()
    model = ScriptedLM(tok, ZSRE_SCRIPT)
    clean, _ = evaluate_zsre(model, tok, [ZSRE], add_bos=False, neighbor_target="clean")
    # Without a BOS on re-tokenisation, the authors' "first column" rule recovers the answer ids.
    first, s = evaluate_zsre(model, tok, [ZSRE], add_bos=False, neighbor_target="paper", paper_rule="first")
    assert first[0]["neighborhood_prompts_correct"] == clean[0]["neighborhood_prompts_correct"]
    assert s["paper_rule"] == "first" and s["n_scored_items"] == 2 + 6
    # Eff./Gen. do not depend on the switch.
    assert first[0]["means"]["rewrite_acc"] == 1.0 and first[0]["means"]["paraphrase_acc"] == 0.0
    # A rule that reads a column the re-tokenised single tokens do not have finds only padding.
    dropped, _ = evaluate_zsre(model, tok, [ZSRE], add_bos=False, neighbor_target="paper", paper_rule="drop_bos")
    assert dropped[0]["neighborhood_prompts_correct"] == [False] * 6
    with pytest.raises(ValueError):
        evaluate_zsre(model, tok, [ZSRE], add_bos=False, neighbor_target="sloppy")


class TableTokenizer:
    """Fixed tokenisations of a few strings, to pin down the padded-column rules."""

    def __init__(self, table):
        self.table = table

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": list(self.table[text])}


def test_paper_expected_ids_columns():
    # LLaMA-2 style: BOS then the re-tokenised piece; "ter" re-tokenises to two pieces (a "▁" split).
    tok = TableTokenizer({"Wal": [1, 50], "ter": [1, 60, 61], "S": [1, 70]})
    strings = ["Wal", "ter", "S"]
    assert paper_expected_ids(tok, strings, "first") == [1, 1, 1]
    assert paper_expected_ids(tok, strings, "drop_bos") == [50, 60, 70]
    # The last column of the right-padded batch: padding for the shorter rows (quirk 12).
    assert paper_expected_ids(tok, strings, "last_column") == [-1, 61, -1]
    assert paper_expected_ids(tok, ["Wal", "S"], "last_column") == [50, 70]
    assert paper_expected_ids(tok, [], "first") == []
    with pytest.raises(ValueError):
        paper_expected_ids(tok, strings, "middle")


def test_authors_paper_rule():
    class LlamaTokenizerFast:
        name_or_path = "meta-llama/Llama-2-7b-hf"

    assert authors_paper_rule(LlamaTokenizerFast()) == "last_column"
    # DeepSeek shares the tokenizer class but the authors' name check comes first.
    assert authors_paper_rule(LlamaTokenizerFast(), "deepseek-ai/deepseek-llm-7b-base") == "first"
    assert authors_paper_rule(SpaceCharTokenizer(), "meta-llama/Llama-3.1-8B") == "drop_bos"
    assert authors_paper_rule(SpaceCharTokenizer(), "google/gemma-7b") == "drop_bos"
    assert authors_paper_rule(SpaceCharTokenizer(), "Qwen/Qwen2.5-7B") == "first"


# ------------------------------------------------------------------------------------------ Wiki-recent

def test_alias_and_item_rules():
    # A single-token alias passes with the quirk whatever the model says.
    assert alias_passes([False], last_token_quirk=True)
    assert not alias_passes([False], last_token_quirk=False)
    # Only the last token is exempt.
    assert alias_passes([True, True, False], last_token_quirk=True)
    assert not alias_passes([True, False, True], last_token_quirk=True)
    assert not alias_passes([True, True, False], last_token_quirk=False)
    assert alias_passes([True, True], last_token_quirk=False)
    # Any alias.
    assert item_correct([[False, True], [True, True]], last_token_quirk=False)
    assert not item_correct([[False, True], [True, False]], last_token_quirk=False)
    assert item_correct([[False, True], [True, False]], last_token_quirk=True)


WR = {
    "case_id": 11, "subject": "Narnia", "prompt": "The capital of {} is", "target_new": "Cair",
    "target_true": None, "relation": None, "paraphrase_prompts": [], "neighborhood": [],
    "generation_prompts": [],
    "portability": [
        {"prompt": "P1 is", "targets": ["Ab", "Cd"]},   # " A" right, last token "b" wrong; "Cd" wrong at once
        {"prompt": "P2 is", "targets": ["Q"]},          # single token, wrong
        {"prompt": "P3 is", "targets": ["Zz", "Mn"]},   # second alias right
        {"prompt": "P4 is", "targets": ["Hello"]},      # wrong in the middle
    ],
    "locality": [{"prompt": "L1 is", "targets": ["Yes"]}],
}
WR_SCRIPT = {
    "Pre. The capital of Narnia is": " Cair",
    "P1 is": " Ax", "P3 is": " Mn", "P4 is": " Hxllo", "L1 is": " Yes",
}
PREFIXES = ["Pre. ", "Fix. "]


@pytest.mark.parametrize("quirk, portability", [(True, [True, True, True, False]),
                                                (False, [False, False, True, False])])
def test_wikirecent_portability_locality(quirk, portability):
    tok = SpaceCharTokenizer()
    model = ScriptedLM(tok, WR_SCRIPT)
    other = dict(WR, case_id=12)
    del other["portability"]
    other["locality"] = []
    rows, summary = evaluate_wikirecent(model, tok, [WR, other], PREFIXES, add_bos=False, batch_size=3,
                                        fluency_max_new_tokens=0, last_token_quirk=quirk)
    first, second = rows
    # Eff.: only the "Pre. " variant is scripted; the bare prompt is not scored when prefixes are on.
    assert first["rewrite_prompts_correct"] == [True, False]
    assert first["portability_prompts_correct"] == portability
    assert first["locality_prompts_correct"] == [True]
    assert first["means"]["portability_acc"] == pytest.approx(sum(portability) / 4)
    # The record without items has no Por./Loc. and is left out of those means.
    assert second["portability_prompts_correct"] == [] and second["means"]["portability_acc"] is None
    assert second["means"]["locality_acc"] is None
    assert summary["rewrite_acc"] == pytest.approx(50.0)
    assert summary["portability_acc"] == pytest.approx(100 * sum(portability) / 4)
    assert summary["locality_acc"] == pytest.approx(100.0)
    assert summary["n_portability_records"] == summary["n_locality_records"] == 1
    assert summary["n_scored_items"] == 2 * 2 + (2 + 1 + 2 + 1) + 1
    assert summary["last_token_quirk"] is quirk
    assert summary["fluency"] is None and not summary["fluency_available"]
    assert "disabled" in summary["fluency_unavailable_reason"]


def test_wikirecent_fluency_from_rephrase():
    from massedit.testing import tiny_model, tiny_tokenizer

    tok = tiny_tokenizer("gpt2")
    model = tiny_model("llama", tok)
    with_rephrase = dict(WR, generation_prompts=["The capital city of Narnia is"])
    rows, summary = evaluate_wikirecent(model, tok, [with_rephrase, dict(WR, case_id=12)], [], add_bos=False,
                                        batch_size=2, fluency_max_new_tokens=8, last_token_quirk=False)
    assert len(rows[0]["generated_texts"]) == 1
    assert rows[0]["generated_texts"][0].startswith("The capital city of Narnia is")
    assert rows[0]["generation_ngram_entropy"] > 0
    assert rows[1]["generation_ngram_entropy"] is None and rows[1]["generated_texts"] == []
    assert summary["fluency"] == pytest.approx(rows[0]["generation_ngram_entropy"])
    assert summary["fluency_available"] and summary["fluency_unavailable_reason"] is None
    assert summary["n_generation_prompts"] == 1
    # No prefixes: the bare rewrite prompt, once per record.
    assert len(rows[0]["rewrite_prompts_correct"]) == 1
    _, none = evaluate_wikirecent(model, tok, [dict(WR, case_id=12)], [], add_bos=False, fluency_max_new_tokens=8)
    assert none["fluency"] is None and "rephrase" in none["fluency_unavailable_reason"]


# ------------------------------------------------------------------------------------------ consistency

VOCAB = {"paris": 0, "france": 1, "capital": 2, "a": 3}
IDF = np.array([1.0, 2.0, 3.0, 5.0])


def test_tfidf_hand_example():
    model = consistency.TfidfModel(vocab=VOCAB, idf=IDF)
    # Lower-cased words of two or more characters: the single letter "a" never counts.
    assert consistency.tokenize("Paris is a CAPITAL, France!") == ["paris", "is", "capital", "france"]
    # paris ×2, capital ×1, france ×1 → (2·1, 1·2, 1·3) = (2, 2, 3); "France capital" → (0, 2, 3).
    a = "Paris is the capital of France. Paris! a a a"
    b = "France capital"
    vec = consistency.tfidf_vector(a, model)
    assert vec == pytest.approx({0: 2 / math.sqrt(17), 1: 2 / math.sqrt(17), 2: 3 / math.sqrt(17)})
    assert consistency.tfidf_similarity(a, b, model) == pytest.approx(13 / math.sqrt(17 * 13))
    assert consistency.tfidf_similarity(a, "nothing known here", model) is None


def test_fit_idf_smooth():
    model = consistency.fit_idf(["paris france", "paris"])
    # df(paris) = 2, df(france) = 1, n = 2: ln(3/3) + 1 = 1 and ln(3/2) + 1.
    assert model.idf[model.vocab["paris"]] == pytest.approx(1.0)
    assert model.idf[model.vocab["france"]] == pytest.approx(math.log(1.5) + 1)
    assert not model.comparable and model.source == "refit"


def _write_resources(tmp_path):
    snippets = [
        {"relation_id": "P36", "target_id": "Q90", "samples": [{"name": "France", "text": "France capital"}]},
        {"relation_id": "P36", "target_id": "Q90", "samples": [{"name": "Gaul", "text": "capital"}]},
    ]
    (tmp_path / "attribute_snippets.json").write_text(json.dumps(snippets))
    np.save(tmp_path / "idf.npy", IDF)
    (tmp_path / "tfidf_vocab.json").write_text(json.dumps(VOCAB))
    return tmp_path / "attribute_snippets.json", tmp_path / "idf.npy", tmp_path / "tfidf_vocab.json"


def test_consistency_end_to_end(tmp_path):
    snips, idf, vocab = _write_resources(tmp_path)
    texts = [["Paris is the capital", "of France. Paris!"], ["whatever"], ["Paris"]]
    keys = [("P36", "Q90"), ("P36", "Q90"), ("P17", "Q1")]
    out = consistency.evaluate_consistency(texts, keys, snips, idf, vocab)
    assert out["available"] and out["reason"] is None and out["comparable"] and out["source"] == "canonical"
    # Record 1: as the hand example, the snippets joined: "France capital capital" → (0, 2, 6).
    expected = (2 * 0 + 2 * 2 + 3 * 6) / math.sqrt(17 * 40)
    assert out["per_record"][0] == pytest.approx(expected)
    # Record 2 has no known word; record 3 has no snippets for its key.
    assert out["per_record"][1:] == [None, None]
    assert out["consistency"] == pytest.approx(100 * expected)
    assert out["n_scored"] == 1 and out["n_missing_snippets"] == 1 and out["n_records"] == 3


def test_consistency_skips_with_reason(tmp_path):
    snips, idf, vocab = _write_resources(tmp_path)
    texts, keys = [["Paris"]], [("P36", "Q90")]
    out = consistency.evaluate_consistency(texts, keys, snips, None, vocab)
    assert not out["available"] and out["consistency"] is None
    assert "idf.npy" in out["reason"] and "not configured" in out["reason"]
    out = consistency.evaluate_consistency(texts, keys, tmp_path / "nope.json", idf, vocab)
    assert not out["available"] and "attribute_snippets.json" in out["reason"] and "not found" in out["reason"]
    out = consistency.evaluate_consistency(texts, [None], snips, idf, vocab)
    assert not out["available"] and "snippet key" in out["reason"]
    out = consistency.evaluate_consistency([[]], keys, snips, idf, vocab)
    assert not out["available"] and "generated" in out["reason"]
    # Checksums: the test files are not the canonical ones.
    out = consistency.evaluate_consistency(texts, keys, snips, idf, vocab, verify_sha256=True)
    assert not out["available"] and "sha256" in out["reason"]
    # Refitting the IDF on the snippets is allowed on request, and marked as not comparable.
    out = consistency.evaluate_consistency([["the capital of France"]], keys, snips, None, None, allow_refit=True)
    assert out["available"] and out["comparable"] is False and out["source"] == "refit"
    assert out["per_record"][0] is not None and 0 < out["consistency"] <= 100
    with pytest.raises(ValueError):
        consistency.evaluate_consistency(texts, [], snips, idf, vocab)
