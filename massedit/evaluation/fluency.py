"""Fluency: greedy generation and n-gram entropy (reference evaluation.md §3.7).

Word tokenisation. The reference splits generated text with NLTK's ``word_tokenize``, whose Punkt model
cannot be downloaded here (and NLTK is not a dependency). ``word_tokenize`` below approximates it:

* sentences are split after a whitespace-delimited chunk ending in ``.``, ``?`` or ``!`` (closing quotes
  or brackets allowed), unless the chunk is a single letter (an initial), holds an inner period (``U.S.``)
  or is a common abbreviation. This stands in for Punkt, which breaks after every non-abbreviation period;
* each sentence then goes through the Penn Treebank rules NLTK applies: quotes become ````` / ``''``,
  punctuation, brackets and ``--`` are split off, the sentence-final period is split off (so ``etc.`` or
  ``3.14`` inside a sentence stay whole), ``,`` and ``:`` are split unless a digit follows (``1,000``),
  contractions are split the Treebank way (``don't`` → ``do n't``, ``it's`` → ``it 's``,
  ``cannot`` → ``can not``), hyphenated words stay whole.

The entropy is insensitive to the spelling of tokens, only to where they are cut, so the remaining
differences (Punkt's learned abbreviation list, its orthographic heuristics) move scores very little.
"""
from __future__ import annotations

import copy
import math
import re
from collections import Counter

import torch

from massedit.evaluation.scoring import input_device, pad_id
from massedit.tokens import encode_plain

_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof st jr sr vs etc inc ltd co corp no nos fig figs vol pp ed eds gen col lt sgt "
    "capt rev gov sen rep ave blvd dept est approx jan feb mar apr jun jul aug sep sept oct nov dec "
    "e.g i.e cf al".split()
)
_CHUNK_END = re.compile(r"[.?!][\"')\]}»”’]*$")
_LEAD = re.compile(r"^[\"'(\[{«“‘`]+")

# Treebank rules, applied in this order (NLTK's NLTKWordTokenizer).
_STARTING_QUOTES = [
    (re.compile(r"([«“‘„]|[`]+)"), r" \1 "),
    (re.compile(r'^"'), r"``"),
    (re.compile(r"(``)"), r" \1 "),
    (re.compile(r"([ (\[{<])(\"|'{2})"), r"\1 `` "),
    (re.compile(r"(?i)(')(?!re|ve|ll|m|t|s|d|n)(\w)\b"), r"\1 \2"),
]
_PUNCTUATION = [
    (re.compile(r"([^.])(\.)([\]\)}>\"']*)\s*$"), r"\1 \2 \3 "),
    (re.compile(r"([:,])([^\d])"), r" \1 \2"),
    (re.compile(r"([:,])$"), r" \1 "),
    (re.compile(r"\.{2,}"), r" \g<0> "),
    (re.compile(r"[;@#$%&]"), r" \g<0> "),
    (re.compile(r"[?!]"), r" \g<0> "),
    (re.compile(r"([^'])' "), r"\1 ' "),
    (re.compile(r"[*]"), r" \g<0> "),
    (re.compile(r"[\]\[(){}<>]"), r" \g<0> "),
    (re.compile(r"--"), r" -- "),
]
_ENDING_QUOTES = [
    (re.compile(r"([»”’])"), r" \1 "),
    (re.compile(r"''"), " '' "),
    (re.compile(r'"'), " '' "),
    (re.compile(r"([^' ])('[sS]|'[mM]|'[dD]|') "), r"\1 \2 "),
    (re.compile(r"([^' ])('ll|'LL|'re|'RE|'ve|'VE|n't|N'T) "), r"\1 \2 "),
]
_CONTRACTIONS = [
    re.compile(p)
    for p in (
        r"(?i)\b(can)(not)\b",
        r"(?i)\b(d)('ye)\b",
        r"(?i)\b(gim)(me)\b",
        r"(?i)\b(gon)(na)\b",
        r"(?i)\b(got)(ta)\b",
        r"(?i)\b(lem)(me)\b",
        r"(?i)\b(more)('n)\b",
        r"(?i)\b(wan)(na)(?=\s)",
        r"(?i) ('t)(is)\b",
        r"(?i) ('t)(was)\b",
    )
]


def _is_abbreviation(chunk: str) -> bool:
    word = _LEAD.sub("", chunk).rstrip("\"')]}»”’")
    if not word.endswith("."):
        return False
    stem = word[:-1]
    return (len(stem) == 1 and stem.isalpha()) or "." in stem or stem.lower() in _ABBREVIATIONS


def split_sentences(text: str) -> list[str]:
    """Approximate Punkt sentence split (see the module docstring)."""
    sentences, start = [], 0
    for m in re.finditer(r"\S+", text):
        chunk = m.group()
        if _CHUNK_END.search(chunk) and not _is_abbreviation(chunk):
            sentences.append(text[start : m.end()])
            start = m.end()
    sentences.append(text[start:])
    return [s.strip() for s in sentences if s.strip()]


def _treebank(sentence: str) -> list[str]:
    text = sentence
    for pattern, repl in _STARTING_QUOTES:
        text = pattern.sub(repl, text)
    for pattern, repl in _PUNCTUATION:
        text = pattern.sub(repl, text)
    # The ending-quote and contraction rules look for a following space.
    text = " " + text + " "
    for pattern, repl in _ENDING_QUOTES:
        text = pattern.sub(repl, text)
    for pattern in _CONTRACTIONS:
        text = pattern.sub(r" \1 \2 ", text)
    return text.split()


def word_tokenize(text: str) -> list[str]:
    """Regex approximation of NLTK's ``word_tokenize`` (see the module docstring)."""
    return [tok for sentence in split_sentences(text) for tok in _treebank(sentence)]


def ngram_entropy(tokens: list[str], n: int) -> float:
    """H_n = −Σ_g f_g log₂ f_g over the relative n-gram frequencies f_g; 0 when there are no n-grams."""
    counts = Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
    total = sum(counts.values())
    return -sum(c / total * math.log2(c / total) for c in counts.values()) if total else 0.0


def text_entropy(text: str) -> float:
    """Fluency score of one text: mean(⅔·H_2, ⁴⁄₃·H_3) over its words (§3.7)."""
    tokens = word_tokenize(text)
    return (2 / 3 * ngram_entropy(tokens, 2) + 4 / 3 * ngram_entropy(tokens, 3)) / 2


def _greedy_config(model, max_new_tokens: int, pad: int):
    cfg = copy.deepcopy(model.generation_config)
    cfg.do_sample = False
    cfg.num_beams = 1
    # Sampling knobs left in a checkpoint's config only trigger warnings under greedy decoding.
    cfg.temperature = cfg.top_p = cfg.top_k = None
    cfg.max_new_tokens = max_new_tokens
    cfg.max_length = None
    cfg.pad_token_id = pad
    return cfg


def generate_greedy(
    model,
    tokenizer,
    prompts: list[str],
    add_bos: bool,
    max_new_tokens: int = 64,
    max_input_tokens: int = 256,
    batch_size: int = 16,
    use_cache: bool = True,
) -> list[str]:
    """Greedy continuation of each prompt; returns the decoded full texts (prompt included, special
    tokens skipped), in input order.

    Inputs keep their first ``max_input_tokens`` ids (BOS included, the tokenizer's default truncation
    side) and are left-padded in batches of similar length; generation uses the KV cache.
    """
    seqs = [encode_plain(tokenizer, p, add_bos).ids[:max_input_tokens] for p in prompts]
    if any(not s for s in seqs):
        raise ValueError("a prompt encodes to no tokens and add_bos is off")
    model.eval()
    device = input_device(model)
    pad = pad_id(tokenizer)
    cfg = _greedy_config(model, max_new_tokens, pad)
    cfg.use_cache = use_cache
    eos = cfg.eos_token_id
    eos_ids = set(eos if isinstance(eos, (list, tuple)) else [] if eos is None else [eos])

    texts = [""] * len(seqs)
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
    with torch.no_grad():
        for b in range(0, len(order), batch_size):
            batch = order[b : b + batch_size]
            width = max(len(seqs[i]) for i in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):
                ids[row, width - len(seqs[i]) :] = torch.tensor(seqs[i], dtype=torch.long)
                mask[row, width - len(seqs[i]) :] = 1
            out = model.generate(
                input_ids=ids.to(device), attention_mask=mask.to(device), generation_config=cfg
            )
            for row, i in enumerate(batch):
                new = out[row, width:].tolist()
                # A finished row is filled with padding after its EOS; the padding may not be special.
                cut = next((k + 1 for k, t in enumerate(new) if t in eos_ids), len(new))
                texts[i] = tokenizer.decode(seqs[i] + new[:cut], skip_special_tokens=True)
    return texts
