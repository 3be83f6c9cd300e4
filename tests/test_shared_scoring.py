"""The shared-prefix scorer (stems, bodies, tails over key/value caches) against one sequence per item,
on tiny random models of several architectures, and the fast evaluation against the straightforward one."""
import pytest

from massedit.evaluation.counterfact import evaluate_records, item_groups
from massedit.evaluation.scoring import score_targets
from massedit.evaluation.shared_scoring import _stems
from massedit.testing import tiny_model, tiny_tokenizer

PREFIXES = ["Alpha beta gamma. ", "Delta epsilon zeta eta. "]
BASE = [
    ("The capital of France is", "Paris"),
    ("The Eiffel Tower is located in", "Paris, France"),
    ("Danielle Darrieux speaks", "French and English"),
    ("The", "piano and the guitar"),
]


def _items():
    items, groups = [], []
    for head in PREFIXES + [""]:
        for prompt, target in BASE:
            # Two targets per prompt, as target_new and target_true are scored.
            items += [(head + prompt, target), (head + prompt, "Rome is")]
            groups += [head or None] * 2
    return items, groups


def test_stems_are_the_common_prefix_and_leave_a_body_token():
    prompts = [[5, 6, 7, 8], [5, 6, 9], [5, 6], [1, 2, 3], [4]]
    stems, stem_of = _stems(prompts, ["a", "a", "a", "b", "c"])
    # group "a": common prefix [5, 6] but [5, 6] itself needs a body token, so the stem is [5]
    assert stems == [[5]] and stem_of == [0, 0, 0, None, None]
    stems, stem_of = _stems(prompts[:2], ["a", "a"])
    assert stems == [[5, 6]] and stem_of == [0, 0]


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gemma3_text", "falcon", "qwen2"])
@pytest.mark.parametrize("add_bos", [False, True])
def test_shared_equals_flat(arch, add_bos):
    tokenizer = tiny_tokenizer("llama" if arch != "gpt2" else "gpt2")
    model = tiny_model(arch, tokenizer, seed=0)
    items, groups = _items()
    flat = score_targets(model, tokenizer, items, add_bos, mode="flat")
    # A batch size that splits groups, so caches of different widths meet in one batch.
    shared = score_targets(model, tokenizer, items, add_bos, batch_size=3, groups=groups)
    for a, b in zip(shared, flat):
        assert a.token_ids == b.token_ids
        assert a.argmax_ids == b.argmax_ids
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-5)


def test_item_groups_by_prefix():
    items = [("Alpha beta gamma. The", "x"), ("The", "y"), ("Delta epsilon zeta eta. X", "z")]
    assert item_groups(items, PREFIXES) == [PREFIXES[0], None, PREFIXES[1]]
    assert item_groups(items, []) == [None, None, None]


def test_fast_and_straightforward_evaluation_agree():
    tokenizer = tiny_tokenizer("llama")
    model = tiny_model("llama", tokenizer, seed=1)
    records = [
        {"case_id": i, "subject": s, "prompt": "{} is located in", "target_new": "Rome", "target_true": "Paris",
         "paraphrase_prompts": [f"Where is {s}? It is in"],
         "neighborhood": [{"prompt": "The Louvre is located in", "target": "Paris"}],
         "generation_prompts": [f"{s} is"]}
        for i, s in enumerate(["The Eiffel Tower", "Notre Dame"])
    ]
    fast = evaluate_records(model, tokenizer, records, PREFIXES, add_bos=True, fluency_max_new_tokens=5)
    slow = evaluate_records(model, tokenizer, records, PREFIXES, add_bos=True, fluency_max_new_tokens=5,
                            mode="straightforward")
    for a, b in zip(fast[0], slow[0]):
        assert a["generated_texts"] == b["generated_texts"]
        for key in ("rewrite_prompts_correct", "paraphrase_prompts_correct", "neighborhood_prompts_correct",
                    "rewrite_prompts_lenient", "neighborhood_prompts_lenient"):
            assert a[key] == b[key]
    for key in ("rewrite_acc", "neighborhood_acc", "EM", "NM", "fluency"):
        assert fast[1][key] == pytest.approx(slow[1][key], abs=1e-4)
    with pytest.raises(ValueError, match="evaluation mode"):
        evaluate_records(model, tokenizer, records, PREFIXES, add_bos=True, mode="quick")
