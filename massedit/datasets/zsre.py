"""ZsRE loader: MEND's evaluation schema, as MEMIT, AlphaEdit and EAMET read it (evaluation.md §1.5).

Dataset spec (``kind: zsre``):

``source``             a source spec (massedit.datasets.sources) or the name of one in ``KNOWN_SOURCES``;
                       default ``"zsre_mend_eval"`` (the paper's 19,086-record file, unpinned upstream).
                       ``"zsre_mend_train_1k"`` is the mirror's 1,000-record sample of the train split,
                       same schema, sha256-pinned.
``facts_per_subject``  int >= 1 or null (default): keep only records whose subject occurs exactly N
                       times in the file (the authors' Figure 6 filter; massedit.datasets.grouping).

Raw record: ``subject, src, pred, rephrase, alt, answers, loc, loc_ans, cond``. The mapping follows the
authors' loader:

* case_id = position in the file (kept through the facts-per-subject filter);
* prompt = ``src`` with the subject replaced by ``{}`` (exactly one slot required);
* target_new = ``answers[0]``, the true answer (ZsRE inserts knowledge, it is not counterfactual);
  ``alt``, ``pred`` and ``cond`` are unused;
* target_true = None (the authors' dummy ``<|endoftext|>``: there is no lenient metric for ZsRE);
* paraphrase = ``[rephrase]``; no generation prompts;
* one neighbourhood item: prompt ``loc + "?"`` (``loc`` keeps its ``"nq question: "`` prefix), target
  ``loc_ans``. The authors split it per answer token t into ``loc + "?" + decode(ids[:t])`` →
  ``decode(ids[t])`` with ids = ids(" " + loc_ans); that needs the tokenizer, so the metrics code
  (Spe., §3.5) expands this item. Teacher-forcing ``loc + "?"`` ⊕ ids(" " + loc_ans) gives the same
  texts.
"""
from __future__ import annotations

from pathlib import Path

from massedit.io import read_json

from .grouping import filter_facts_per_subject
from .records import field_getter, record_error, validate_record
from .sources import named_source, pinned_source, resolve_named_source

SPEC_KEYS = frozenset({"source", "facts_per_subject"})

NQ_PREFIX = "nq question: "   # every neighbourhood question starts with it; the authors assert it
NEIGHBOR_SUFFIX = "?"         # the authors append it to ``loc`` before the answer

KNOWN_SOURCES: dict[str, dict] = {
    # sha256 unknown upstream (evaluation.md §1.9): the provenance records whatever was obtained
    "zsre_mend_eval": {
        "mirror_path": "zsre/zsre_mend_eval.json",
        "url": "https://memit.baulab.info/data/dsets/zsre_mend_eval.json",
    },
    "zsre_mend_train_1k": pinned_source("zsre/zsre_mend_train-1k.json",
                                        "https://raw.githubusercontent.com/Jometeorie/KnowledgeSpread/"
                                        "51d7402617c2e52bde0dc11b76e400c3725a181a/data/zsre/zsre_mend_train-1k.json"),
}
DEFAULT_SOURCE = "zsre_mend_eval"


def source_specs(spec: dict) -> list[dict]:
    """The source spec of the file the spec reads (without resolving it)."""
    return [named_source(spec.get("source", DEFAULT_SOURCE), KNOWN_SOURCES, "zsre")]


def prepare(spec: dict, mirror_dir: str | None, download_dir: str) -> tuple[list[dict], list[dict]]:
    """Resolve the spec's file, load it and apply the facts-per-subject filter."""
    source = spec.get("source", DEFAULT_SOURCE)
    path, prov = resolve_named_source(source, KNOWN_SOURCES, "zsre", mirror_dir, download_dir)
    records = load_zsre(path)
    if spec.get("facts_per_subject") is not None:
        records = filter_facts_per_subject(records, spec["facts_per_subject"], f"zsre spec ({path})")
    return records, [prov]


def load_zsre(path: str | Path) -> list[dict]:
    """MEND-schema ZsRE to normalised records, in file order."""
    where = str(path)
    data = read_json(path)
    if not isinstance(data, list):
        raise ValueError(f"{where}: expected a JSON list of records, got {type(data).__name__}")
    out = []
    for i, raw in enumerate(data):
        get = field_getter(raw, where, i, case_id=i)
        subject, src = get("subject", str), get("src", str)
        if not subject:
            raise record_error(where, i, i, "subject", "empty")
        template = src.replace(subject, "{}")
        if template.count("{}") != 1:
            raise record_error(where, i, i, "src", f"subject {subject!r} must occur exactly once in {src!r} "
                                                   f"(gives {template.count('{}')} slots)")
        answers = get("answers", list)
        if not answers or not isinstance(answers[0], str):
            raise record_error(where, i, i, "answers", f"expected a non-empty list of strings, got {answers!r}")
        loc = get("loc", str)
        if not loc.startswith(NQ_PREFIX):
            raise record_error(where, i, i, "loc", f"expected to start with {NQ_PREFIX!r}, got {loc!r}")
        rec = {
            "case_id": i,
            "subject": subject,
            "prompt": template,
            "target_new": answers[0],
            "target_true": None,
            "relation": None,
            "paraphrase_prompts": [get("rephrase", str)],
            "neighborhood": [{"prompt": loc + NEIGHBOR_SUFFIX, "target": get("loc_ans", str)}],
            "generation_prompts": [],
        }
        out.append(validate_record(rec, where, i))
    return out
