"""The normalised record every dataset loader returns (docs/architecture.md, "The normalised record").

```
case_id             int, unique within a dataset
subject             non-empty str
prompt              str with exactly one "{}" where the subject goes
target_new          non-empty str, no leading space (the space belongs to the tokenisation rules)
target_true         str (same rules) or None when the dataset has no original object (zsRE)
relation            str or None
paraphrase_prompts  list[str], full texts
neighborhood        list of {"prompt": str, "target": str}, full texts with their own expected answers
generation_prompts  list[str], full texts (may be empty)
```

Optional fields, present only for datasets that have them (Wiki-recent, evaluation.md §1.6 and §3.6);
records without them keep their exact shape (and hashes):

```
portability         list of {"prompt": str, "targets": [str, ...]}: full texts; any target counts
locality            list of {"prompt": str, "targets": [str, ...]}: the same shape
```
"""
from __future__ import annotations

from typing import Any, Iterable

FIELDS = (
    "case_id",
    "subject",
    "prompt",
    "target_new",
    "target_true",
    "relation",
    "paraphrase_prompts",
    "neighborhood",
    "generation_prompts",
)
OPTIONAL_FIELDS = ("portability", "locality")


def record_error(where: str, index: int | None, case_id: Any, field: str, problem: str) -> ValueError:
    """One message format for every record problem: file, record position and id, field."""
    pos = f"record {index}" if index is not None else "record"
    return ValueError(f"{where}: {pos} (case_id {case_id!r}): field {field!r}: {problem}")


def field_getter(raw: Any, where: str, index: int, case_id: Any = None):
    """``get(dotted, type, optional=False)`` on a raw record, failing with file, record and field named.

    ``case_id`` is the id to name in errors (default: the raw record's own ``case_id``, if any)."""
    if case_id is None and isinstance(raw, dict):
        case_id = raw.get("case_id")
    if not isinstance(raw, dict):
        raise record_error(where, index, case_id, "<record>", f"expected an object, got {type(raw).__name__}")

    def get(dotted: str, kind: type, optional: bool = False):
        value: Any = raw
        for part in dotted.split("."):
            if not isinstance(value, dict) or part not in value:
                if optional:
                    return None
                raise record_error(where, index, case_id, dotted, "missing")
            value = value[part]
        if optional and value is None:
            return None
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise record_error(where, index, case_id, dotted,
                               f"expected {kind.__name__}, got {type(value).__name__}")
        return value

    return get


def validate_record(rec: dict, where: str, index: int | None = None) -> dict:
    """Check ``rec`` against the normalised shape and return a clean copy (fields in canonical order,
    leading spaces stripped from every target). ``where`` names the source file or dataset in errors."""
    case_id = rec.get("case_id") if isinstance(rec, dict) else None

    def fail(field: str, problem: str) -> ValueError:
        return record_error(where, index, case_id, field, problem)

    if not isinstance(rec, dict):
        raise fail("<record>", f"expected an object, got {type(rec).__name__}")
    missing = [f for f in FIELDS if f not in rec]
    if missing:
        raise fail(missing[0], "missing")
    extra = sorted(set(rec) - set(FIELDS) - set(OPTIONAL_FIELDS))
    if extra:
        raise fail(extra[0], "unexpected field (not part of the normalised record)")

    # bool is an int subclass; a True case_id is always a bug upstream
    if not isinstance(case_id, int) or isinstance(case_id, bool):
        raise fail("case_id", f"expected int, got {type(case_id).__name__}")
    subject = rec["subject"]
    if not isinstance(subject, str) or not subject.strip():
        raise fail("subject", "expected a non-empty string")
    prompt = rec["prompt"]
    if not isinstance(prompt, str):
        raise fail("prompt", f"expected str, got {type(prompt).__name__}")
    if prompt.count("{}") != 1:
        raise fail("prompt", f"must contain exactly one '{{}}', found {prompt.count('{}')} in {prompt!r}")

    out = {"case_id": case_id, "subject": subject, "prompt": prompt}
    out["target_new"] = _target(rec["target_new"], "target_new", fail)
    out["target_true"] = None if rec["target_true"] is None else _target(rec["target_true"], "target_true", fail)
    relation = rec["relation"]
    if relation is not None and (not isinstance(relation, str) or not relation):
        raise fail("relation", "expected a non-empty string or null")
    out["relation"] = relation
    out["paraphrase_prompts"] = _texts(rec["paraphrase_prompts"], "paraphrase_prompts", fail)

    hood = rec["neighborhood"]
    if not isinstance(hood, list):
        raise fail("neighborhood", f"expected a list, got {type(hood).__name__}")
    items = []
    for j, item in enumerate(hood):
        name = f"neighborhood[{j}]"
        if not isinstance(item, dict) or set(item) != {"prompt", "target"}:
            raise fail(name, "expected an object with exactly the keys 'prompt' and 'target'")
        if not isinstance(item["prompt"], str) or not item["prompt"].strip():
            raise fail(f"{name}.prompt", "expected a non-empty string")
        items.append({"prompt": item["prompt"], "target": _target(item["target"], f"{name}.target", fail)})
    out["neighborhood"] = items
    out["generation_prompts"] = _texts(rec["generation_prompts"], "generation_prompts", fail)
    for field in OPTIONAL_FIELDS:
        if field in rec:
            out[field] = _multi_target_items(rec[field], field, fail)
    return out


def validate_records(records: Iterable[dict], where: str) -> list[dict]:
    """Validate every record and require unique case_ids (selection and result files key on them)."""
    out, seen = [], {}
    for i, rec in enumerate(records):
        clean = validate_record(rec, where, i)
        if clean["case_id"] in seen:
            raise record_error(where, i, clean["case_id"], "case_id",
                               f"duplicate of record {seen[clean['case_id']]}")
        seen[clean["case_id"]] = i
        out.append(clean)
    return out


def _target(value: Any, field: str, fail) -> str:
    if not isinstance(value, str):
        raise fail(field, f"expected str, got {type(value).__name__}")
    value = value.lstrip(" ")
    if not value.strip():
        raise fail(field, "empty target")
    return value


def _texts(value: Any, field: str, fail) -> list[str]:
    if not isinstance(value, list):
        raise fail(field, f"expected a list of strings, got {type(value).__name__}")
    for j, text in enumerate(value):
        if not isinstance(text, str) or not text.strip():
            raise fail(f"{field}[{j}]", "expected a non-empty string")
    return list(value)


def _multi_target_items(value: Any, field: str, fail) -> list[dict]:
    """A list of {"prompt", "targets"} items: non-empty prompt, non-empty list of acceptable targets."""
    if not isinstance(value, list):
        raise fail(field, f"expected a list, got {type(value).__name__}")
    items = []
    for j, item in enumerate(value):
        name = f"{field}[{j}]"
        if not isinstance(item, dict) or set(item) != {"prompt", "targets"}:
            raise fail(name, "expected an object with exactly the keys 'prompt' and 'targets'")
        if not isinstance(item["prompt"], str) or not item["prompt"].strip():
            raise fail(f"{name}.prompt", "expected a non-empty string")
        targets = item["targets"]
        if not isinstance(targets, list) or not targets:
            raise fail(f"{name}.targets", "expected a non-empty list of strings")
        items.append({"prompt": item["prompt"],
                      "targets": [_target(t, f"{name}.targets[{k}]", fail) for k, t in enumerate(targets)]})
    return items
