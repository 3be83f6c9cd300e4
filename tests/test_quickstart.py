"""The embedded quick-start fact set: size, shape and seeded determinism."""
from __future__ import annotations

from collections import defaultdict

import pytest

from massedit.datasets import prepare_dataset, validate_record
from massedit.datasets.quickstart import RELATIONS, build_records, load_facts


@pytest.fixture(scope="module")
def facts():
    return load_facts()


@pytest.fixture(scope="module")
def records():
    return build_records(seed=0)


def test_table_size_and_relations(facts):
    assert len(facts) >= 220
    relations = {f.relation for f in facts}
    assert len(relations) >= 8 and relations == set(RELATIONS)
    assert len({(f.relation, f.subject) for f in facts}) == len(facts)


def test_templates_have_one_slot():
    for name, rel in RELATIONS.items():
        for template in (rel.prompt, *rel.paraphrases, *rel.generation):
            assert template.count("{}") == 1, (name, template)
        assert len(rel.paraphrases) == 2 and rel.generation


def test_records_shape(facts, records):
    assert len(records) == len(facts)
    objects = defaultdict(set)
    for f in facts:
        objects[f.relation].add(f.object)
    true_of = {(f.relation, f.subject): f.object for f in facts}
    for i, (rec, fact) in enumerate(zip(records, facts)):
        assert validate_record(rec, "quickstart", i) == rec
        assert rec["case_id"] == i and rec["subject"] == fact.subject and rec["relation"] == fact.relation
        assert rec["target_true"] == fact.object
        assert rec["target_new"] != rec["target_true"] and rec["target_new"] in objects[fact.relation]
        assert len(rec["paraphrase_prompts"]) == 2
        assert all(fact.subject in p for p in rec["paraphrase_prompts"] + rec["generation_prompts"])
        hood = rec["neighborhood"]
        assert len(hood) >= 5 and len({n["prompt"] for n in hood}) == len(hood)
        prompt_of = {RELATIONS[fact.relation].prompt.format(f.subject): f for f in facts
                     if f.relation == fact.relation}
        for n in hood:
            other = prompt_of[n["prompt"]]  # a prompt of the same relation, filled with another subject
            assert other.subject != fact.subject
            assert n["target"] == true_of[(fact.relation, other.subject)] != rec["target_new"]


def test_neighbours_prefer_same_true_object(facts, records):
    for rec in records:
        same = sum(1 for f in facts if f.relation == rec["relation"] and f.object == rec["target_true"]) - 1
        n_same = sum(n["target"] == rec["target_true"] for n in rec["neighborhood"])
        assert n_same == min(same, len(rec["neighborhood"]))


def test_deterministic_per_seed_and_different_across_seeds(records):
    assert build_records(seed=0) == records
    other = build_records(seed=1)
    assert [r["case_id"] for r in other] == [r["case_id"] for r in records]
    assert [r["target_new"] for r in other] != [r["target_new"] for r in records]


def test_prepare_dataset_quickstart(tmp_path, records):
    recs, man = prepare_dataset({"kind": "quickstart", "keep_known": True}, None, str(tmp_path))
    assert recs == records and man["n_records"] == len(records)
    assert man["sources"][0]["origin"] == "package" and len(man["sources"][0]["sha256"]) == 64
    recs3, man3 = prepare_dataset({"kind": "quickstart", "seed": 3}, None, str(tmp_path))
    assert man3["records_sha256"] != man["records_sha256"] and man3["ordered_ids_sha256"] == man["ordered_ids_sha256"]
    with pytest.raises(ValueError, match="'seed' must be an int"):
        prepare_dataset({"kind": "quickstart", "seed": "0"}, None, str(tmp_path))


def test_load_facts_reports_bad_lines(tmp_path):
    bad = tmp_path / "facts.tsv"
    bad.write_text("relation\tsubject\tobject\ncapital\tFrance\tParis\ncapital\tFrance\tLyon\n")
    with pytest.raises(ValueError, match=r"facts\.tsv:3: duplicate fact"):
        load_facts(bad)
    bad.write_text("relation\tsubject\tobject\nmoons\tMars\tPhobos\n")
    with pytest.raises(ValueError, match=r"facts\.tsv:2: unknown relation 'moons'"):
        load_facts(bad)
