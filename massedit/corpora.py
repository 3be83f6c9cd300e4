"""Text corpora for the preservation statistics.

Kinds:
* ``hf_datasets``: a Hugging Face ``datasets`` corpus such as ``wikimedia/wikipedia`` ``20231101.en``
  (real runs; the dataset's revision and fingerprint are recorded). Needs the optional ``datasets``
  package and network access to the hub.
* ``text_files``: local text files, e.g. the WikiText-103 files of the data mirror, split into documents
  by ``format`` (``TEXT_FORMATS``). A file the package pins (massedit.datasets.checksums; relative paths
  are mirror paths) is refused when its sha256 differs; any other file is the user's own, accepted, and
  its sha256 recorded in the provenance with ``verified: false``.
* ``model_sample``: text sampled from the model itself with a seed; needs no data at all (quick start).

In every case the documents are the first N of a seeded permutation, and the provenance is returned.
"""
from __future__ import annotations

import os
import random
import re
from pathlib import Path

from massedit.datasets.checksums import mirror_relative, pinned_sha256, restore_advice, verify

WIKITEXT_JOINERS = [(" @-@ ", "-"), (" @,@ ", ","), (" @.@ ", ".")]
SAMPLE_SEEDS = ["The", "In", "A", "It", "This", "He", "She", "When", "After", "There", "One", "Many"]


def detokenize_wikitext(text: str) -> str:
    for token, plain in WIKITEXT_JOINERS:
        text = text.replace(token, plain)
    text = re.sub(r" ([.,;:!?)'])", r"\1", text)
    return re.sub(r"\( ", "(", text)


def split_wikitext_articles(text: str) -> list[str]:
    """Articles start at lines ` = Title = ` (one '=' on each side; deeper levels are section headings)."""
    articles, current = [], []
    for line in text.splitlines():
        if re.fullmatch(r" = [^=].* = ", line) and current:
            articles.append("".join(current).strip())
            current = []
        current.append(line + "\n")
    if current:
        articles.append("".join(current).strip())
    return [a for a in articles if a]


def split_wikitext_paragraphs(text: str) -> list[str]:
    """The rows Hugging Face ``datasets`` makes of a WikiText file, less the blank ones.

    Its ``wikitext`` builder yields every line of the file as one row, newline included, and a blank line as
    an empty row; the authors' statistics sample these rows as documents (``wikitext-103-raw-v1``). So a
    document here is one line, verbatim: a paragraph, or a heading line such as `` = = History = = ``.
    Blank rows are dropped: they hold no token, and the statistics skip empty documents anyway."""
    lines = text.split("\n")
    rows = [line + "\n" for line in lines[:-1]] + ([lines[-1]] if lines[-1] else [])
    return [row for row in rows if row.strip()]


def _wikitext_articles(text: str) -> list[str]:
    return [detokenize_wikitext(a) for a in split_wikitext_articles(text)]


def _blank_line_paragraphs(text: str) -> list[str]:
    return [p.strip() for p in text.split("\n\n") if p.strip()]


# format of a ``text_files`` corpus -> how a file's text becomes documents
TEXT_FORMATS = {
    "wikitext": _wikitext_articles,                  # one document per article, detokenised
    "wikitext_paragraphs": split_wikitext_paragraphs,  # one per non-blank line, as datasets' wikitext rows
    "paragraphs": _blank_line_paragraphs,            # plain text split at blank lines
}


def _resolve(path: str, mirror_dir: str | None) -> Path:
    """A relative path is a path in the mirror (in the working directory when no mirror is set)."""
    candidate = Path(path)
    if not candidate.is_absolute() and mirror_dir:
        candidate = Path(mirror_dir) / path
    return candidate


def _pin_key(path: str, resolved: Path, mirror_dir: str | None) -> str:
    """The pin-table key of a corpus path: the path itself when relative, else its place in the mirror."""
    return path if not Path(path).is_absolute() else (mirror_relative(resolved, mirror_dir) or path)


def input_files(spec: dict, mirror_dir: str | None) -> list[str]:
    """The files a ``text_files`` corpus reads, as present now (the statistics job's inputs); none for the
    other kinds. A missing file is left to the job, which names it."""
    if spec.get("kind") != "text_files":
        return []
    resolved = (_resolve(path, mirror_dir) for path in spec.get("paths", []))
    return [str(path) for path in resolved if path.is_file()]


def _text_files(spec: dict, n_docs: int, seed: int, mirror_dir: str | None) -> tuple[list[str], dict]:
    fmt = spec.get("format", "wikitext")
    if fmt not in TEXT_FORMATS:
        raise ValueError(f"text_files corpus: unknown format {fmt!r}; expected one of {sorted(TEXT_FORMATS)}")
    docs, files = [], []
    for path in spec["paths"]:
        resolved = _resolve(path, mirror_dir)
        if not resolved.is_file():
            raise FileNotFoundError(
                f"corpus file {path!r} not found (looked at {resolved}); set mirror_dir in the config or "
                "MASSEDIT_MIRROR to the data mirror, or give an absolute path"
            )
        key = _pin_key(path, resolved, mirror_dir)
        expected = pinned_sha256(key)
        sha256 = verify(resolved, expected, restore_advice(key))
        pieces = TEXT_FORMATS[fmt](resolved.read_text(encoding="utf-8"))
        docs.extend(pieces)
        files.append({"path": path, "sha256": sha256, "verified": expected is not None, "documents": len(pieces)})
    order = list(range(len(docs)))
    random.Random(seed).shuffle(order)
    chosen = [docs[i] for i in order[:n_docs]]
    return chosen, {"kind": "text_files", "format": fmt, "files": files, "available_documents": len(docs)}


def _hf_datasets(spec: dict, n_docs: int, seed: int) -> tuple[list[str], dict]:
    try:
        import datasets
    except ImportError as err:
        raise RuntimeError("corpus kind 'hf_datasets' needs the 'datasets' package: pip install datasets") from err
    ds = datasets.load_dataset(spec["path"], spec.get("name"), split=spec.get("split", "train"),
                               revision=spec.get("revision"))
    rng = random.Random(seed)
    order = list(range(len(ds)))
    rng.shuffle(order)
    field = spec.get("text_field", "text")
    chosen = [ds[i][field] for i in order[:n_docs]]
    return chosen, {"kind": "hf_datasets", "path": spec["path"], "name": spec.get("name"),
                    "revision": spec.get("revision"), "fingerprint": getattr(ds, "_fingerprint", None),
                    "available_documents": len(ds)}


def _model_sample(spec: dict, n_docs: int, seed: int, model, tokenizer, add_bos: bool) -> tuple[list[str], dict]:
    from massedit.templates import sample_continuations

    seeds = [SAMPLE_SEEDS[i % len(SAMPLE_SEEDS)] for i in range(n_docs)]
    docs = sample_continuations(
        model, tokenizer, seeds, max_new_tokens=int(spec.get("doc_tokens", 128)), seed=seed, add_bos=add_bos,
        temperature=float(spec.get("temperature", 1.0)), top_k=int(spec.get("top_k", 0)),
        top_p=float(spec.get("top_p", 1.0)), batch_size=int(spec.get("batch_size", 32)),
    )
    return docs, {"kind": "model_sample", "seeds": "cycled " + ",".join(SAMPLE_SEEDS), **spec}


def load_documents(
    spec: dict, n_docs: int, seed: int, mirror_dir: str | None = None, model=None, tokenizer=None,
    add_bos: bool = False,
) -> tuple[list[str], dict]:
    """``n_docs`` documents of the corpus described by ``spec`` and a provenance record."""
    kind = spec.get("kind")
    if kind == "text_files":
        return _text_files(spec, n_docs, seed, mirror_dir or os.environ.get("MASSEDIT_MIRROR"))
    if kind == "hf_datasets":
        return _hf_datasets(spec, n_docs, seed)
    if kind == "model_sample":
        if model is None:
            raise ValueError("corpus kind 'model_sample' needs the model")
        return _model_sample(spec, n_docs, seed, model, tokenizer, add_bos)
    raise ValueError(f"unknown corpus kind {kind!r}; expected text_files, hf_datasets or model_sample")
