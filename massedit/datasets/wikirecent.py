"""Wiki-recent loader: KnowEdit's WikiData_recent test split, as the authors read it (evaluation.md §1.6).

Dataset spec (``kind: wikirecent``):

``source``  a source spec (massedit.datasets.sources) or the name of one in ``KNOWN_SOURCES``; default
            ``"recent_test"``: KnowEdit ``benchmark/wiki_recent/recent_test.json`` on Hugging Face
            (1,266 records; no published sha256, so it is unpinned and the provenance records the
            sha256 of the file actually used).

Raw record: ``subject, prompt (subject filled in), target_new, rephrase (optional), portability,
locality``; ``portability`` and ``locality`` map a category name (Logical_Generalization, Reasoning,
Subject_Aliasing; Relation_Specificity) to a list of ``{prompt, ground_truth}`` items, where
``ground_truth`` is a list of alias lists.

Mapping, following the authors' loader:

* case_id = position in the file; prompt = ``prompt`` with the subject replaced by ``{}`` (one slot);
* target_true = None (the authors use a dummy; no lenient metric for Wiki-recent);
* ``portability`` / ``locality``: the items of all categories pooled into one list each, in file order;
  each item's alias lists are flattened into one list of acceptable ``targets`` (order kept, duplicates
  removed, which cannot change an "any alias passes" test);
* ``rephrase`` is only the fluency generation prompt; a record without it gets no generation prompt
  (the public KnowEdit example has none, so nothing is invented for it);
* no paraphrase prompts and no neighbourhood: locality is the ``locality`` field, scored against its own
  answers.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from massedit.io import read_json

from .records import field_getter, record_error, validate_record
from .sources import named_source, resolve_named_source

SPEC_KEYS = frozenset({"source"})

KNOWN_SOURCES: dict[str, dict] = {
    "recent_test": {
        "mirror_path": "wiki_recent/recent_test.json",
        "url": "https://huggingface.co/datasets/zjunlp/KnowEdit/resolve/main/benchmark/wiki_recent/recent_test.json",
    },
}
DEFAULT_SOURCE = "recent_test"


def source_specs(spec: dict) -> list[dict]:
    """The source spec of the file the spec reads (without resolving it)."""
    return [named_source(spec.get("source", DEFAULT_SOURCE), KNOWN_SOURCES, "wikirecent")]


def prepare(spec: dict, mirror_dir: str | None, download_dir: str) -> tuple[list[dict], list[dict]]:
    """Resolve the spec's file and load it; return (records, [provenance])."""
    source = spec.get("source", DEFAULT_SOURCE)
    path, prov = resolve_named_source(source, KNOWN_SOURCES, "wikirecent", mirror_dir, download_dir)
    return load_wikirecent(path), [prov]


def load_wikirecent(path: str | Path) -> list[dict]:
    """KnowEdit WikiData_recent records to normalised records (with portability and locality), in file order."""
    where = str(path)
    data = read_json(path)
    if not isinstance(data, list):
        raise ValueError(f"{where}: expected a JSON list of records, got {type(data).__name__}")
    out = []
    for i, raw in enumerate(data):
        get = field_getter(raw, where, i, case_id=i)

        def fail(field: str, problem: str) -> ValueError:
            return record_error(where, i, i, field, problem)

        subject, prompt = get("subject", str), get("prompt", str)
        if not subject:
            raise fail("subject", "empty")
        template = prompt.replace(subject, "{}")
        if template.count("{}") != 1:
            raise fail("prompt", f"subject {subject!r} must occur exactly once in {prompt!r} "
                                 f"(gives {template.count('{}')} slots)")
        rephrase = get("rephrase", str, optional=True)
        rec = {
            "case_id": i,
            "subject": subject,
            "prompt": template,
            "target_new": get("target_new", str),
            "target_true": None,
            "relation": None,
            "paraphrase_prompts": [],
            "neighborhood": [],
            "generation_prompts": [] if rephrase is None else [rephrase],
            "portability": _pooled(get("portability", dict), "portability", fail),
            "locality": _pooled(get("locality", dict), "locality", fail),
        }
        out.append(validate_record(rec, where, i))
    return out


def _pooled(categories: dict, field: str, fail) -> list[dict]:
    """All categories' items in one list, each with its alias lists flattened into ``targets``."""
    items = []
    for category, entries in categories.items():
        name = f"{field}.{category}"
        if not isinstance(entries, list):
            raise fail(name, f"expected a list of items, got {type(entries).__name__}")
        for j, entry in enumerate(entries):
            if not isinstance(entry, dict) or "prompt" not in entry or "ground_truth" not in entry:
                raise fail(f"{name}[{j}]", "expected an object with 'prompt' and 'ground_truth'")
            if not isinstance(entry["prompt"], str) or not entry["prompt"].strip():
                raise fail(f"{name}[{j}].prompt", "expected a non-empty string")
            items.append({"prompt": entry["prompt"],
                          "targets": _flatten(entry["ground_truth"], f"{name}[{j}].ground_truth", fail)})
    return items


def _flatten(ground_truth: Any, field: str, fail) -> list[str]:
    """A list of alias lists to one list of strings, first occurrence kept (leading spaces ignored)."""
    if not isinstance(ground_truth, list):
        raise fail(field, f"expected a list of alias lists, got {type(ground_truth).__name__}")
    targets: list[str] = []
    for k, aliases in enumerate(ground_truth):
        if not isinstance(aliases, list):
            raise fail(f"{field}[{k}]", f"expected a list of aliases, got {type(aliases).__name__}")
        for m, alias in enumerate(aliases):
            if not isinstance(alias, str):
                raise fail(f"{field}[{k}][{m}]", f"expected str, got {type(alias).__name__}")
            alias = alias.lstrip(" ")
            if not alias.strip():
                raise fail(f"{field}[{k}][{m}]", "empty alias")
            if alias not in targets:
                targets.append(alias)
    if not targets:
        raise fail(field, "no aliases (an item needs at least one acceptable answer)")
    return targets
