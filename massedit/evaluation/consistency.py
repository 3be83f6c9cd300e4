"""TF-IDF consistency, MEMIT's reference score RS (reference evaluation.md §3.8; not reported by EAMET).

Per record: the cosine similarity between the TF-IDF vectors of (a) all the record's generated texts joined
with spaces and (b) all Wikipedia snippets about ``target_new`` for the record's relation joined with
spaces (``attribute_snippets[relation_id][target_id]``, each a ``{name, text}`` entry); ×100 in the
summary, like MEMIT's tables.

The vectoriser reproduces scikit-learn's ``TfidfVectorizer`` defaults as MEMIT loads it (no sklearn
dependency): lower-casing, tokens matching ``(?u)\\b\\w\\w+\\b``, raw term counts times the IDF weights of
``idf.npy`` for the words of ``tfidf_vocab.json`` (others ignored), L2 normalisation; the cosine of two
such vectors is their dot product.

The canonical ``attribute_snippets.json``, ``idf.npy`` and ``tfidf_vocab.json`` are large downloads
(§1.9). When one is missing (or fails its checksum, when asked to verify) the result says so in
``reason`` and carries no score: it is never silently dropped. ``allow_refit=True`` instead refits the
IDF on the snippets (smooth IDF, ``ln((1 + n) / (1 + df)) + 1``) when only the IDF or vocabulary is
missing; such results are marked ``comparable: False``.

The normalised record has no Wikidata id for ``target_new``, so the caller passes the snippet key
``(relation_id, target_id)`` of each record (CounterFact's ``requested_rewrite.relation_id`` and
``target_new.id``), or None where it has none.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from massedit.evaluation import metrics

# evaluation.md §1.9 (Git LFS pointers of scalable-model-editing/rebuilding-rome @ 01d0c9f).
KNOWN_SHA256 = {
    "attribute_snippets.json": "10b5c1cd105e54d5983c72de1b45bfc88bc7af786f7b99def2557886ff23385b",
    "idf.npy": "c073d642589d4ac6432f467230329b36364a01e72de63a77a3624b745b923dda",
    "tfidf_vocab.json": "8a78c4f20d8d85dadfd14e283d71af255482ff18aa0eb8a81716024c05ff888b",
}

_TOKEN = re.compile(r"(?u)\b\w\w+\b")


@dataclass
class TfidfModel:
    """IDF weights indexed by ``vocab`` (word → column). ``comparable`` is False for a refitted IDF."""

    vocab: dict[str, int]
    idf: np.ndarray
    comparable: bool = True
    source: str = "canonical"


def tokenize(text: str) -> list[str]:
    """scikit-learn's default analyser: lower-case, then runs of two or more word characters."""
    return _TOKEN.findall(text.lower())


def tfidf_vector(text: str, model: TfidfModel) -> dict[int, float]:
    """Sparse L2-normalised TF-IDF vector (column → weight); empty when no word is in the vocabulary."""
    counts = Counter(model.vocab[w] for w in tokenize(text) if w in model.vocab)
    vec = {col: n * float(model.idf[col]) for col, n in counts.items()}
    norm = math.sqrt(sum(v * v for v in vec.values()))
    return {col: v / norm for col, v in vec.items()} if norm > 0 else {}


def tfidf_similarity(text_a: str, text_b: str, model: TfidfModel) -> float | None:
    """Cosine similarity of the two texts' TF-IDF vectors; None when either has no known word (MEMIT's
    code would give NaN there)."""
    a, b = tfidf_vector(text_a, model), tfidf_vector(text_b, model)
    if not a or not b:
        return None
    if len(b) < len(a):
        a, b = b, a
    return sum(v * b.get(col, 0.0) for col, v in a.items())


def fit_idf(documents: list[str]) -> TfidfModel:
    """Smooth IDF fitted on ``documents`` (scikit-learn's default): idf = ln((1 + n) / (1 + df)) + 1."""
    df: Counter = Counter()
    for doc in documents:
        df.update(set(tokenize(doc)))
    words = sorted(df)
    vocab = {w: i for i, w in enumerate(words)}
    n = len(documents)
    idf = np.array([math.log((1 + n) / (1 + df[w])) + 1 for w in words], dtype=np.float64)
    return TfidfModel(vocab=vocab, idf=idf, comparable=False, source="refit")


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_tfidf(idf_path: str | Path, vocab_path: str | Path) -> TfidfModel:
    """The canonical IDF weights and vocabulary (``idf.npy``, ``tfidf_vocab.json``: word → column)."""
    idf = np.load(idf_path)
    with open(vocab_path, encoding="utf-8") as f:
        vocab = json.load(f)
    if not isinstance(vocab, dict):
        raise ValueError(f"{vocab_path}: expected a JSON object word → column, got {type(vocab).__name__}")
    bad = [w for w, col in vocab.items() if not isinstance(col, int) or not 0 <= col < len(idf)]
    if bad:
        raise ValueError(f"{vocab_path}: {len(bad)} vocabulary entries point outside idf of length {len(idf)}, "
                         f"e.g. {bad[0]!r}")
    return TfidfModel(vocab=vocab, idf=np.asarray(idf, dtype=np.float64))


def load_snippets(path: str | Path) -> dict[str, dict[str, list[str]]]:
    """Snippet texts by relation id and target id.

    Accepts MEMIT's file (a list of ``{relation_id, target_id, samples: [{name, text}, ...]}``) or the
    nested form ``{relation_id: {target_id: [{text, ...}, ...]}}``."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    out: dict[str, dict[str, list[str]]] = {}
    if isinstance(data, list):
        for el in data:
            texts = out.setdefault(str(el["relation_id"]), {}).setdefault(str(el["target_id"]), [])
            texts += [s["text"] for s in el["samples"]]
    elif isinstance(data, dict):
        for rid, by_target in data.items():
            for tid, samples in by_target.items():
                out.setdefault(str(rid), {}).setdefault(str(tid), []).extend(s["text"] for s in samples)
    else:
        raise ValueError(f"{path}: expected a JSON list or object, got {type(data).__name__}")
    return out


def _skipped(reason: str, n_records: int) -> dict[str, Any]:
    return {"available": False, "reason": reason, "comparable": None, "source": None, "consistency": None,
            "per_record": [None] * n_records, "n_records": n_records, "n_scored": 0, "n_missing_snippets": 0}


def _missing(paths: dict[str, str | Path | None]) -> list[str]:
    return [name for name, p in paths.items() if p is None or not Path(p).is_file()]


def evaluate_consistency(
    generated_texts: list[list[str]],
    snippet_keys: list[tuple[str, str] | None],
    snippets_path: str | Path | None,
    idf_path: str | Path | None,
    vocab_path: str | Path | None,
    allow_refit: bool = False,
    verify_sha256: bool = False,
) -> dict[str, Any]:
    """RS per record and its mean ×100; or a skipped result whose ``reason`` says why.

    ``generated_texts[i]`` are record i's generations (e.g. a CounterFact row's ``generated_texts``);
    ``snippet_keys[i]`` its ``(relation_id, target_new_id)`` or None. Returns ``available``, ``reason``
    (None when available), ``comparable`` (False for a refitted IDF), ``source`` (canonical | refit),
    ``consistency`` (mean over scored records ×100), ``per_record`` (unscaled cosine or None),
    ``n_records``, ``n_scored`` and ``n_missing_snippets`` (records whose key has no snippets).
    """
    n = len(generated_texts)
    if len(snippet_keys) != n:
        raise ValueError(f"{n} records of generated texts but {len(snippet_keys)} snippet keys")
    if not any(texts for texts in generated_texts):
        return _skipped("no generated texts (generation disabled or no generation prompts)", n)
    if all(key is None for key in snippet_keys):
        return _skipped("no record has a snippet key (relation_id, target_new id); the dataset has none", n)
    files = {"attribute_snippets.json": snippets_path, "idf.npy": idf_path, "tfidf_vocab.json": vocab_path}
    missing = _missing(files)
    if "attribute_snippets.json" in missing or (missing and not allow_refit):
        return _skipped("canonical TF-IDF files unavailable: " + ", ".join(
            f"{name} ({'not configured' if files[name] is None else f'not found at {files[name]}'})"
            for name in missing), n)
    if verify_sha256:
        for name, path in files.items():
            if name in missing:
                continue
            digest = sha256_file(path)
            if digest != KNOWN_SHA256[name]:
                return _skipped(f"{name} at {path} has sha256 {digest}, expected {KNOWN_SHA256[name]}", n)

    snippets = load_snippets(snippets_path)
    if missing:
        model = fit_idf([t for by_target in snippets.values() for texts in by_target.values() for t in texts])
    else:
        model = load_tfidf(idf_path, vocab_path)

    per_record: list[float | None] = []
    n_missing = 0
    for texts, key in zip(generated_texts, snippet_keys):
        refs = snippets.get(str(key[0]), {}).get(str(key[1]), []) if key is not None else []
        if key is not None and not refs:
            n_missing += 1
        if not texts or not refs:
            per_record.append(None)
            continue
        per_record.append(tfidf_similarity(" ".join(texts), " ".join(refs), model))
    return {
        "available": True,
        "reason": None,
        "comparable": model.comparable,
        "source": model.source,
        "consistency": metrics.aggregate(per_record, 100.0),
        "per_record": per_record,
        "n_records": n,
        "n_scored": sum(v is not None for v in per_record),
        "n_missing_snippets": n_missing,
    }
