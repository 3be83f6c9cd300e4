"""CounterFact loaders (reference evaluation.md §1.2–§1.4).

Dataset spec (``kind: counterfact``):

``schema``  ``memit``: the full ROME/MEMIT schema (``counterfact.json``, ``multi_counterfact.json`` or the
            mirror's 500-record sample), records kept in file order;
            ``easyedit``: EasyEdit's reduced schema, three disjoint files whose union sorted by case_id
            gives the order of ``counterfact.json`` (21,919 records).
``source``  memit only: a source spec (massedit.datasets.sources) or the name of one in ``KNOWN_SOURCES``;
            default ``"counterfact"`` (the canonical full file, sha256-pinned).
``files``   easyedit only: list of source specs; default ``EASYEDIT_FILES`` (train, val, edit).
``dedup_subjects``     bool, default false: keep the first record of each lower-cased subject (record
                       order as above). On the EasyEdit union this is the "MCF-approx" set (20,391), the
                       EMMET authors' unique-subject CounterFact (§1.4); label results accordingly.
``facts_per_subject``  int >= 1 or null (default): keep only records whose subject occurs exactly N times
                       (Figure 6). Excludes ``dedup_subjects``. Both filters: massedit.datasets.grouping.
"""
from __future__ import annotations

from pathlib import Path

from massedit.io import read_json

from .grouping import apply_subject_filters
from .records import field_getter, record_error, validate_record
from .sources import named_source, pinned_source, resolve_named_source, resolve_source

SPEC_KEYS = frozenset({"schema", "source", "files", "dedup_subjects", "facts_per_subject"})

_EASYEDIT_REPO = ("https://raw.githubusercontent.com/Jometeorie/KnowledgeSpread/"
                  "51d7402617c2e52bde0dc11b76e400c3725a181a/data/counterfact")

# Canonical files and the mirror's copies; checksums from the pin table (massedit.datasets.checksums, after
# evaluation.md §1.9 and the mirror's PROVENANCE.md); raw GitHub URLs are pinned to the commit the mirror
# copied from.
KNOWN_SOURCES: dict[str, dict] = {
    "counterfact": pinned_source("counterfact/memit_schema/counterfact.json",
                                 "https://rome.baulab.info/data/dsets/counterfact.json"),
    # sha256 unknown upstream: the provenance records whatever was downloaded
    "multi_counterfact": {
        "mirror_path": "counterfact/memit_schema/multi_counterfact.json",
        "url": "https://memit.baulab.info/data/dsets/multi_counterfact.json",
    },
    "counterfact_500": pinned_source("counterfact/memit_schema/counterfact_500.json",
                                     "https://raw.githubusercontent.com/furonglegend/Met/"
                                     "3cafe6f48801444aae7bb353367821671967782a/data/counterfact_500.json"),
}
DEFAULT_MEMIT_SOURCE = "counterfact"

EASYEDIT_FILES: list[dict] = [
    pinned_source(f"counterfact/easyedit_schema/counterfact-{part}.json", f"{_EASYEDIT_REPO}/counterfact-{part}.json")
    for part in ("train", "val", "edit")
]


def source_specs(spec: dict) -> list[dict]:
    """The source specs of the files the spec reads (without resolving them)."""
    if spec.get("schema") == "memit":
        return [named_source(spec.get("source", DEFAULT_MEMIT_SOURCE), KNOWN_SOURCES, "counterfact")]
    if spec.get("schema") == "easyedit":
        files = spec.get("files", EASYEDIT_FILES)
        return list(files) if isinstance(files, list) else []
    return []


def prepare(spec: dict, mirror_dir: str | None, download_dir: str) -> tuple[list[dict], list[dict]]:
    """Resolve the spec's files, load them and apply the subject filters; return (records, provenance
    of each file)."""
    records, sources = _load(spec, mirror_dir, download_dir)
    return apply_subject_filters(records, spec, "counterfact spec"), sources


def _load(spec: dict, mirror_dir: str | None, download_dir: str) -> tuple[list[dict], list[dict]]:
    schema = spec.get("schema")
    if schema == "memit":
        if "files" in spec:
            raise ValueError("counterfact spec: 'files' belongs to schema 'easyedit'; use 'source' for 'memit'")
        source = spec.get("source", DEFAULT_MEMIT_SOURCE)
        path, prov = resolve_named_source(source, KNOWN_SOURCES, "counterfact", mirror_dir, download_dir)
        return load_memit(path), [prov]
    if schema == "easyedit":
        if "source" in spec:
            raise ValueError("counterfact spec: 'source' belongs to schema 'memit'; use 'files' for 'easyedit'")
        files = spec.get("files", EASYEDIT_FILES)
        if not isinstance(files, list) or not files:
            raise ValueError("counterfact spec: 'files' must be a non-empty list of source specs")
        resolved = [resolve_source(f, mirror_dir, download_dir) for f in files]
        return load_easyedit([p for p, _ in resolved]), [prov for _, prov in resolved]
    raise ValueError(f"counterfact spec: 'schema' must be 'memit' or 'easyedit', got {schema!r}")


def load_memit(path: str | Path) -> list[dict]:
    """Full-schema CounterFact to normalised records, in file order. Neighbourhood prompts share the
    subject's true object, so each one's expected answer is ``target_true``."""
    where = str(path)
    data = read_json(path)
    if not isinstance(data, list):
        raise ValueError(f"{where}: expected a JSON list of records, got {type(data).__name__}")
    out = []
    for i, raw in enumerate(data):
        get = field_getter(raw, where, i)
        true_obj = get("requested_rewrite.target_true.str", str)
        rec = {
            "case_id": get("case_id", int),
            "subject": get("requested_rewrite.subject", str),
            "prompt": get("requested_rewrite.prompt", str),
            "target_new": get("requested_rewrite.target_new.str", str),
            "target_true": true_obj,
            "relation": get("requested_rewrite.relation_id", str, optional=True),
            "paraphrase_prompts": get("paraphrase_prompts", list),
            "neighborhood": [{"prompt": p, "target": true_obj}
                             for p in get("neighborhood_prompts", list)],
            "generation_prompts": get("generation_prompts", list),
        }
        out.append(validate_record(rec, where, i))
    return out


def load_easyedit(paths: list[str | Path]) -> list[dict]:
    """EasyEdit-schema CounterFact (files with disjoint case_ids) to normalised records sorted by case_id.

    The reduced schema keeps one paraphrase and one neighbour and no generation prompts (§1.4)."""
    out, origin = [], {}
    for path in paths:
        where = str(path)
        data = read_json(path)
        if not isinstance(data, list):
            raise ValueError(f"{where}: expected a JSON list of records, got {type(data).__name__}")
        for i, raw in enumerate(data):
            get = field_getter(raw, where, i)
            case_id, subject, prompt = get("case_id", int), get("subject", str), get("prompt", str)
            if not subject:
                raise record_error(where, i, case_id, "subject", "empty")
            template = prompt.replace(subject, "{}")
            if template.count("{}") != 1:
                raise record_error(where, i, case_id, "prompt",
                                   f"subject {subject!r} must occur exactly once in {prompt!r} "
                                   f"(gives {template.count('{}')} slots)")
            if case_id in origin:
                raise record_error(where, i, case_id, "case_id", f"also in {origin[case_id]}")
            origin[case_id] = f"{where} record {i}"
            rec = {
                "case_id": case_id,
                "subject": subject,
                "prompt": template,
                "target_new": get("target_new", str),
                "target_true": get("ground_truth", str),
                "relation": None,
                "paraphrase_prompts": [get("rephrase_prompt", str)],
                "neighborhood": [{"prompt": get("locality_prompt", str),
                                  "target": get("locality_ground_truth", str)}],
                "generation_prompts": [],
            }
            out.append(validate_record(rec, where, i))
    out.sort(key=lambda r: r["case_id"])
    return out
