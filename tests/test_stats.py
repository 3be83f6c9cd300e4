"""Second-moment statistics against a brute-force computation."""
import torch

from massedit.architectures import arch_for
from massedit.corpora import detokenize_wikitext, load_documents, split_wikitext_articles
from massedit.stats import second_moments
from massedit.testing import tiny_model, tiny_tokenizer

DOCS = ["The capital of France is Paris.", "Berlin is a city in Germany with many old streets and parks.",
        "A short one.", "Rome is located in Italy, and Madrid is the capital of Spain."]


def _brute_force(model, tok, layer, docs, maxlen):
    """Run every document alone (no padding) and sum k kᵀ over its tokens."""
    total, count = None, 0
    module = model.model.layers[layer].mlp.down_proj
    for doc in docs:
        ids = tok(doc, add_special_tokens=False)["input_ids"][:maxlen]
        seen = []
        handle = module.register_forward_pre_hook(lambda _m, args: seen.append(args[0][0]))
        with torch.no_grad():
            model(input_ids=torch.tensor([ids]))
        handle.remove()
        k = seen[0].double()
        total = k.T @ k if total is None else total + k.T @ k
        count += len(ids)
    return total, count


def test_second_moments_match_unbatched_sum_and_ignore_padding():
    tok = tiny_tokenizer("gpt2")
    model = tiny_model("llama", tok, n_layers=3, seed=2)
    sums, count, info = second_moments(model, tok, arch_for(model), [0, 2], DOCS, maxlen=12, add_bos=False,
                                       dtype="float64", batch_tokens=30, progress=False)
    assert info["n_batches"] > 1  # several padded batches were really used
    for layer in (0, 2):
        expected, expected_count = _brute_force(model, tok, layer, DOCS, 12)
        assert count == expected_count
        assert torch.allclose(sums[layer], expected, rtol=1e-6, atol=1e-8)


def test_forward_stops_after_deepest_layer():
    tok = tiny_tokenizer("gpt2")
    model = tiny_model("llama", tok, n_layers=3, seed=2)
    calls = []
    model.model.layers[2].register_forward_pre_hook(lambda *_: calls.append(1))
    second_moments(model, tok, arch_for(model), [0], DOCS, maxlen=12, add_bos=False, progress=False)
    assert calls == []


def test_wikitext_articles_and_detokenisation(tmp_path):
    text = " = Alpha = \n text 1 @,@ 000 @-@ long @.@ 5 .\n = = Section = = \n more .\n = Beta = \n other .\n"
    articles = split_wikitext_articles(text)
    assert len(articles) == 2 and "Section" in articles[0]
    assert detokenize_wikitext(" 1 @,@ 000 @-@ long @.@ 5 .") == " 1,000-long.5."
    path = tmp_path / "corpus.tokens"
    path.write_text("".join(f" = Title {i} = \n body {i} .\n" for i in range(12)))
    docs, prov = load_documents({"kind": "text_files", "paths": [str(path)]}, 4, seed=1)
    again, _ = load_documents({"kind": "text_files", "paths": [str(path)]}, 4, seed=1)
    other, _ = load_documents({"kind": "text_files", "paths": [str(path)]}, 4, seed=2)
    assert docs == again and len(set(docs)) == 4 and prov["available_documents"] == 12
    assert prov["files"][0]["sha256"]
    assert docs != other  # the seed chooses the sample


def test_unknown_corpus_kind_is_a_clear_error():
    import pytest

    with pytest.raises(ValueError, match="unknown corpus kind"):
        load_documents({"kind": "nope"}, 1, 0)


def test_bfloat16_products_with_fp32_sums_stay_close_to_fp32(monkeypatch):
    """The GPU setting (bfloat16 matrix products, fp32 running sums, chunks of tokens) against fp32 on the
    same sample: an fp32 result within bfloat16's rounding, and chunking changes nothing else."""
    import massedit.stats as stats

    monkeypatch.setattr(stats, "HALF_CHUNK", 5)  # several chunks per batch even on this tiny sample
    tok = tiny_tokenizer("gpt2")
    model = tiny_model("llama", tok, n_layers=2, seed=3)
    kw = dict(maxlen=12, add_bos=False, batch_tokens=30, progress=False)
    exact, count, _ = second_moments(model, tok, arch_for(model), [1], DOCS, dtype="float32", **kw)
    half, half_count, _ = second_moments(model, tok, arch_for(model), [1], DOCS, dtype="bfloat16", **kw)
    assert half[1].dtype == torch.float32 and half_count == count
    rel = (half[1] - exact[1]).norm() / exact[1].norm()
    assert 0 < rel < 1e-2, rel  # different (bf16 has an 8-bit mantissa) but close
