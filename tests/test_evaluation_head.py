"""The head of an evaluation (what the workflow gives a smaller batch of the unedited model) against
evaluating that smaller batch directly, for each dataset kind."""
import pytest

from massedit.evaluation.counterfact import evaluate_records
from massedit.evaluation.head import head_rows, head_summary, summary_scales
from massedit.evaluation.wikirecent import evaluate_wikirecent
from massedit.evaluation.zsre import evaluate_zsre
from massedit.testing import tiny_model, tiny_tokenizer
from test_metrics import RECORD
from test_metrics_paper import PREFIXES, WR, WR_SCRIPT, ZSRE, ZSRE_SCRIPT, ScriptedLM, SpaceCharTokenizer


def _assert_head_is_direct(kind, evaluate, records, k):
    rows, summary = evaluate(records)
    direct_rows, direct = evaluate(records[:k])
    head = head_summary(kind, summary, head_rows(rows, [r["case_id"] for r in records[:k]], "test"))
    for key in summary_scales(kind):
        assert head[key] == pytest.approx(direct[key], abs=1e-9), key
    for key in ("n_records", "n_neighborhood_tokens", "n_portability_records", "n_locality_records"):
        assert head.get(key) == direct.get(key), key
    assert "scoring_seconds" not in head and "n_scored_items" not in head
    # The whole batch differs from its head, so the recomputation is what makes them agree.
    assert any(summary[key] != direct[key] for key in summary_scales(kind)) or summary["n_records"] != k
    return head


def test_counterfact_head():
    tokenizer = tiny_tokenizer("llama")
    model = tiny_model("llama", tokenizer, seed=0)
    records = [dict(RECORD, case_id=i, target_new=new) for i, new in enumerate(["Rome", "Lima", "Oslo", "Bern"])]
    records[3]["target_true"] = None
    head = _assert_head_is_direct(
        "counterfact",
        lambda recs: evaluate_records(model, tokenizer, recs, PREFIXES, add_bos=False, fluency_max_new_tokens=3),
        records, 2)
    assert head["fluency"] is not None


def test_zsre_head():
    tok = SpaceCharTokenizer()
    other = dict(ZSRE, case_id=4, subject="Peru", paraphrase_prompts=["Q: Peru capital?"])
    _assert_head_is_direct(
        "zsre", lambda recs: evaluate_zsre(ScriptedLM(tok, ZSRE_SCRIPT), tok, recs, add_bos=False,
                                           neighbor_target="clean"),
        [ZSRE, other], 1)


def test_wikirecent_head():
    tok = SpaceCharTokenizer()
    other = dict(WR, case_id=12, locality=[])
    del other["portability"]
    _assert_head_is_direct(
        "wikirecent", lambda recs: evaluate_wikirecent(ScriptedLM(tok, WR_SCRIPT), tok, recs, PREFIXES,
                                                       add_bos=False, fluency_max_new_tokens=4),
        [WR, other], 1)


def test_head_of_other_records_is_refused():
    rows = [{"case_id": 1}, {"case_id": 2}]
    assert head_rows(rows, [1], "x") == [{"case_id": 1}]
    with pytest.raises(ValueError, match="do not start with the 1 records"):
        head_rows(rows, [2], "x")
