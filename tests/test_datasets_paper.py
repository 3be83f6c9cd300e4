"""The paper's other datasets (ZsRE, Wiki-recent), the subject filters (CounterFact dedup, facts per subject)
and the optional portability/locality record fields, on small hand-made records in each schema."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from massedit.datasets import REGISTRY, prepare_dataset, subject_counts, validate_record
from massedit.datasets.grouping import apply_subject_filters, dedup_subjects, filter_facts_per_subject
from massedit.datasets.records import FIELDS
from massedit.datasets.wikirecent import KNOWN_SOURCES as WR_SOURCES, load_wikirecent
from massedit.datasets.zsre import KNOWN_SOURCES as ZSRE_SOURCES, load_zsre
from massedit.io import sha256_file


def write(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


def zsre_raw(subject: str = "UniFirst", answer: str = "uniform") -> dict:
    """One record in MEND's evaluation schema."""
    return {"subject": subject, "src": f"What is the product made by {subject}?", "pred": "shirts",
            "rephrase": f"What will be the product of {subject}?", "alt": "unmanned aircraft",
            "answers": [answer, "uniforms"], "loc": "nq question: john goodman's character in the big lebowski",
            "loc_ans": "Walter Sobchak", "cond": f"shirts >> unmanned aircraft || What is made by {subject}?"}


def wr_raw(subject: str = "Leo Arons", rephrase: str | None = "Leo Arons died in the city of") -> dict:
    """One record in KnowEdit's WikiData_recent schema (after its README example)."""
    rec = {
        "subject": subject, "prompt": f"The place of death of {subject} is", "target_new": "Berlin",
        "portability": {
            "Logical_Generalization": [{"prompt": f"Is {subject} still alive?",
                                        "ground_truth": [["no"], ["incorrect"], ["no"]]}],
            "Reasoning": [{"prompt": f"The continent of the place of death of {subject} is",
                           "ground_truth": [["Europe", "European continent"], ["Europe", " Old Continent"]]}],
            "Subject_Aliasing": [{"prompt": f"The place of death of Martin {subject} is",
                                  "ground_truth": [["Berlin", "Berlin, Germany"]]}],
        },
        "locality": {"Relation_Specificity": [
            {"prompt": f"The name of the father of {subject} is", "ground_truth": [["Albert Arons"]]},
            {"prompt": f"The field of work of {subject} is", "ground_truth": [["experimental physics", "physics"]]},
        ]},
    }
    if rephrase is not None:
        rec["rephrase"] = rephrase
    return rec


def easyedit_raw(case_id: int, subject: str) -> dict:
    return {"case_id": case_id, "prompt": f"The mother tongue of {subject} is", "target_new": "English",
            "subject": subject, "ground_truth": "French", "rephrase_prompt": f"{subject} speaks",
            "locality_prompt": "Michel Rocard speaks", "locality_ground_truth": "French"}


def assert_names(err: pytest.ExceptionInfo, path, index: int, field: str) -> None:
    msg = str(err.value)
    assert str(path) in msg, msg
    assert f"record {index} (case_id {index})" in msg, msg
    assert repr(field) in msg, msg


# --- ZsRE -----------------------------------------------------------------------------------------------

def test_zsre_record_mapping(tmp_path):
    path = write(tmp_path / "zsre.json", [zsre_raw(), zsre_raw("Arcade Pool", " Hasbro Interactive")])
    recs = load_zsre(path)
    assert recs[0] == {
        "case_id": 0, "subject": "UniFirst", "prompt": "What is the product made by {}?",
        "target_new": "uniform",                     # answers[0], not alt
        "target_true": None, "relation": None,
        "paraphrase_prompts": ["What will be the product of UniFirst?"],
        "neighborhood": [{"prompt": "nq question: john goodman's character in the big lebowski?",
                          "target": "Walter Sobchak"}],
        "generation_prompts": [],
    }
    assert recs[1]["case_id"] == 1 and recs[1]["target_new"] == "Hasbro Interactive"
    assert recs[1]["prompt"] == "What is the product made by {}?" and recs[1]["subject"] == "Arcade Pool"


@pytest.mark.parametrize("mutate, field", [
    (lambda r: r.update(src="What does the company make?"), "src"),               # subject absent
    (lambda r: r.update(src="Is UniFirst the maker of UniFirst shirts?"), "src"),  # two slots
    (lambda r: r.update(loc="john goodman's character"), "loc"),
    (lambda r: r.update(answers=[]), "answers"),
    (lambda r: r.pop("rephrase"), "rephrase"),
    (lambda r: r.update(loc_ans=3), "loc_ans"),
    (lambda r: r.update(answers=["  "]), "target_new"),
])
def test_zsre_errors_name_file_record_and_field(tmp_path, mutate, field):
    bad = zsre_raw("Arcade Pool")
    mutate(bad)
    path = write(tmp_path / "zsre.json", [zsre_raw(), bad])
    with pytest.raises(ValueError) as err:
        load_zsre(path)
    assert_names(err, path, 1, field)


def test_zsre_prepare_sources_and_facts_per_subject(tmp_path):
    mirror = tmp_path / "mirror"
    subjects = ["A Co", "B Co", "A Co", "C Co", "B Co", "D Co", "C Co", "C Co"]
    f = write(mirror / "zsre" / "z.json", [zsre_raw(s) for s in subjects])
    source = {"mirror_path": "zsre/z.json", "sha256": sha256_file(f)}
    recs, man = prepare_dataset({"kind": "zsre", "source": source}, str(mirror), str(tmp_path / "dl"))
    assert man["n_records"] == 8 and man["sources"][0]["sha256"] == sha256_file(f)
    assert subject_counts(recs) == {"A Co": 2, "B Co": 2, "C Co": 3, "D Co": 1}

    # the authors' order: subjects by first appearance, each subject's records in file order; ids kept
    recs, man = prepare_dataset({"kind": "zsre", "source": source, "facts_per_subject": 2},
                                str(mirror), str(tmp_path / "dl"))
    assert [r["case_id"] for r in recs] == [0, 2, 1, 4]
    recs, _ = prepare_dataset({"kind": "zsre", "source": source, "facts_per_subject": 3},
                              str(mirror), str(tmp_path / "dl"))
    assert [r["case_id"] for r in recs] == [3, 6, 7]
    with pytest.raises(ValueError, match=r"no subject has exactly 4 facts .*\[1, 2, 3\]"):
        prepare_dataset({"kind": "zsre", "source": source, "facts_per_subject": 4}, str(mirror), str(tmp_path))
    with pytest.raises(ValueError, match="positive int"):
        prepare_dataset({"kind": "zsre", "source": source, "facts_per_subject": 0}, str(mirror), str(tmp_path))
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['dedup_subjects'\]"):
        prepare_dataset({"kind": "zsre", "source": source, "dedup_subjects": True}, str(mirror), str(tmp_path))
    with pytest.raises(ValueError, match="unknown source name 'zsre'"):
        prepare_dataset({"kind": "zsre", "source": "zsre"}, str(mirror), str(tmp_path))


def test_zsre_known_sources_match_reference():
    assert ZSRE_SOURCES["zsre_mend_eval"]["url"] == "https://memit.baulab.info/data/dsets/zsre_mend_eval.json"
    assert "sha256" not in ZSRE_SOURCES["zsre_mend_eval"]  # unknown upstream; provenance records it
    sample = ZSRE_SOURCES["zsre_mend_train_1k"]
    assert sample["mirror_path"] == "zsre/zsre_mend_train-1k.json"
    assert sample["sha256"] == "e62596101d8ed551889c26c0d2a5277f92eaef3b14416d8eaee39b04a244ab60"


# --- Wiki-recent ------------------------------------------------------------------------------------------

def test_wikirecent_pools_and_flattens(tmp_path):
    path = write(tmp_path / "recent_test.json", [wr_raw(), wr_raw("Ada Lovelace", rephrase=None)])
    recs = load_wikirecent(path)
    r = recs[0]
    assert (r["case_id"], r["subject"], r["prompt"], r["target_new"], r["target_true"], r["relation"]) == \
        (0, "Leo Arons", "The place of death of {} is", "Berlin", None, None)
    assert r["paraphrase_prompts"] == [] and r["neighborhood"] == []
    assert r["generation_prompts"] == ["Leo Arons died in the city of"]
    # categories pooled in file order; alias lists flattened, order kept, duplicates (after the
    # leading-space rule) removed
    assert r["portability"] == [
        {"prompt": "Is Leo Arons still alive?", "targets": ["no", "incorrect"]},
        {"prompt": "The continent of the place of death of Leo Arons is",
         "targets": ["Europe", "European continent", "Old Continent"]},
        {"prompt": "The place of death of Martin Leo Arons is", "targets": ["Berlin", "Berlin, Germany"]},
    ]
    assert r["locality"] == [
        {"prompt": "The name of the father of Leo Arons is", "targets": ["Albert Arons"]},
        {"prompt": "The field of work of Leo Arons is", "targets": ["experimental physics", "physics"]},
    ]
    assert list(r) == list(FIELDS) + ["portability", "locality"]
    # no rephrase: no generation prompt, nothing invented
    assert recs[1]["case_id"] == 1 and recs[1]["generation_prompts"] == []
    assert recs[1]["prompt"] == "The place of death of {} is"


def test_wikirecent_empty_categories_give_empty_lists(tmp_path):
    raw = wr_raw()
    raw["portability"] = {"Reasoning": []}
    raw["locality"] = {}
    rec = load_wikirecent(write(tmp_path / "r.json", [raw]))[0]
    assert rec["portability"] == [] and rec["locality"] == []


@pytest.mark.parametrize("mutate, field", [
    (lambda r: r.update(prompt="The place of death of him is"), "prompt"),
    (lambda r: r.pop("portability"), "portability"),
    (lambda r: r.update(locality=[]), "locality"),
    (lambda r: r["portability"]["Reasoning"][0].update(ground_truth=["Europe"]),
     "portability.Reasoning[0].ground_truth[0]"),
    (lambda r: r["locality"]["Relation_Specificity"][1].update(ground_truth=[[]]),
     "locality.Relation_Specificity[1].ground_truth"),
    (lambda r: r["locality"]["Relation_Specificity"][0].update(ground_truth=[["Albert", " "]]),
     "locality.Relation_Specificity[0].ground_truth[0][1]"),
    (lambda r: r["portability"]["Subject_Aliasing"][0].pop("ground_truth"), "portability.Subject_Aliasing[0]"),
    (lambda r: r["portability"]["Subject_Aliasing"][0].update(prompt=""), "portability.Subject_Aliasing[0].prompt"),
    (lambda r: r.update(rephrase=""), "generation_prompts[0]"),
    (lambda r: r.update(target_new=["Berlin"]), "target_new"),
])
def test_wikirecent_errors_name_file_record_and_field(tmp_path, mutate, field):
    bad = wr_raw("Ada Lovelace")
    mutate(bad)
    path = write(tmp_path / "recent_test.json", [wr_raw(), bad])
    with pytest.raises(ValueError) as err:
        load_wikirecent(path)
    assert_names(err, path, 1, field)


def test_wikirecent_prepare_and_source(tmp_path):
    mirror = tmp_path / "mirror"
    f = write(mirror / "wr.json", [wr_raw(), wr_raw("Ada Lovelace")])
    recs, man = prepare_dataset({"kind": "wikirecent", "source": {"mirror_path": "wr.json"}},
                                str(mirror), str(tmp_path / "dl"))
    assert [r["case_id"] for r in recs] == [0, 1] and len(recs[1]["portability"]) == 3
    assert man["sources"][0]["sha256"] == sha256_file(f)  # unpinned, but recorded
    src = WR_SOURCES["recent_test"]
    assert src["url"] == ("https://huggingface.co/datasets/zjunlp/KnowEdit/resolve/main/"
                          "benchmark/wiki_recent/recent_test.json") and "sha256" not in src
    assert set(REGISTRY) >= {"quickstart", "counterfact", "zsre", "wikirecent"}


# --- optional record fields ---------------------------------------------------------------------------------

def base_record(**over) -> dict:
    rec = {"case_id": 7, "subject": "France", "prompt": "The capital of {} is", "target_new": "Rome",
           "target_true": None, "relation": None, "paraphrase_prompts": [], "neighborhood": [],
           "generation_prompts": []}
    rec.update(over)
    return rec


def test_optional_fields_absent_stay_absent_and_present_are_cleaned():
    plain = validate_record(base_record(), "x.json", 0)
    assert list(plain) == list(FIELDS)  # no keys added: hashes of existing datasets are unchanged
    out = validate_record(base_record(locality=[{"prompt": "Italy's capital is", "targets": [" Rome", "Roma"]}],
                                      portability=[]), "x.json", 0)
    assert list(out)[-2:] == ["portability", "locality"]  # canonical order whatever the input order
    assert out["locality"] == [{"prompt": "Italy's capital is", "targets": ["Rome", "Roma"]}]


@pytest.mark.parametrize("value, field", [
    ({"prompt": "p", "targets": ["a"]}, "portability"),
    ([{"prompt": "p"}], "portability[0]"),
    ([{"prompt": "p", "targets": ["a"], "extra": 1}], "portability[0]"),
    ([{"prompt": " ", "targets": ["a"]}], "portability[0].prompt"),
    ([{"prompt": "p", "targets": []}], "portability[0].targets"),
    ([{"prompt": "p", "targets": "a"}], "portability[0].targets"),
    ([{"prompt": "p", "targets": ["a", 2]}], "portability[0].targets[1]"),
    ([{"prompt": "p", "targets": ["a"]}, {"prompt": "q", "targets": [""]}], "portability[1].targets[0]"),
])
def test_optional_fields_errors_name_where_record_and_field(value, field):
    with pytest.raises(ValueError) as err:
        validate_record(base_record(portability=value), "data/x.json", 3)
    msg = str(err.value)
    assert "data/x.json" in msg and "record 3" in msg and "case_id 7" in msg and repr(field) in msg


# --- subject filters --------------------------------------------------------------------------------------

RECS = [{"case_id": i, "subject": s} for i, s in enumerate(["Bo", "Al", "bo", "Cy", "Al", "Bo", "Al"])]


def test_subject_counts_and_facts_per_subject():
    assert subject_counts(RECS) == {"Bo": 2, "Al": 3, "bo": 1, "Cy": 1}  # exact strings, first-seen order
    assert [r["case_id"] for r in filter_facts_per_subject(RECS, 1, "w")] == [2, 3]
    assert [r["case_id"] for r in filter_facts_per_subject(RECS, 2, "w")] == [0, 5]
    assert [r["case_id"] for r in filter_facts_per_subject(RECS, 3, "w")] == [1, 4, 6]


def test_dedup_subjects_first_of_each_lowercased_subject():
    assert [r["case_id"] for r in dedup_subjects(RECS)] == [0, 1, 3]
    assert dedup_subjects([]) == []


def test_apply_subject_filters_spec_checks():
    assert apply_subject_filters(RECS, {}, "w") is RECS
    assert [r["case_id"] for r in apply_subject_filters(RECS, {"dedup_subjects": True}, "w")] == [0, 1, 3]
    with pytest.raises(ValueError, match="exclude each other"):
        apply_subject_filters(RECS, {"dedup_subjects": True, "facts_per_subject": 2}, "w")
    with pytest.raises(ValueError, match="'dedup_subjects' must be true or false"):
        apply_subject_filters(RECS, {"dedup_subjects": "yes"}, "w")
    with pytest.raises(ValueError, match="positive int"):
        apply_subject_filters(RECS, {"facts_per_subject": True}, "w")


def test_counterfact_dedup_and_facts_per_subject(tmp_path):
    mirror = tmp_path / "mirror"
    files = [{"mirror_path": "e/train.json"}, {"mirror_path": "e/val.json"}]
    write(mirror / "e" / "train.json", [easyedit_raw(3, "ann lee"), easyedit_raw(0, "Ann Lee"),
                                        easyedit_raw(4, "Cy Ng")])
    write(mirror / "e" / "val.json", [easyedit_raw(2, "Bo Li"), easyedit_raw(1, "Cy Ng")])
    spec = {"kind": "counterfact", "schema": "easyedit", "files": files}
    recs, _ = prepare_dataset({**spec, "dedup_subjects": True}, str(mirror), str(tmp_path))
    # in case_id order: 0 Ann Lee, 1 Cy Ng, 2 Bo Li, 3 ann lee (duplicate), 4 Cy Ng (duplicate)
    assert [(r["case_id"], r["subject"]) for r in recs] == [(0, "Ann Lee"), (1, "Cy Ng"), (2, "Bo Li")]
    recs, man = prepare_dataset({**spec, "facts_per_subject": 2}, str(mirror), str(tmp_path))
    assert [r["case_id"] for r in recs] == [1, 4] and man["spec"]["facts_per_subject"] == 2
    recs, _ = prepare_dataset({**spec, "dedup_subjects": False}, str(mirror), str(tmp_path))
    assert len(recs) == 5


# --- the real mirror --------------------------------------------------------------------------------------

def _mirror_dir() -> str | None:
    """MASSEDIT_MIRROR, else the mirror next to the checkout (where CI finds it, .ci/)."""
    env = os.environ.get("MASSEDIT_MIRROR")
    if env:
        return env
    beside = Path(__file__).resolve().parents[2] / "shared" / "data"
    return str(beside) if beside.is_dir() else None


MIRROR = _mirror_dir()
needs_mirror = pytest.mark.skipif(MIRROR is None, reason="no data mirror: set MASSEDIT_MIRROR")


@needs_mirror
def test_real_mirror_zsre_sample(tmp_path):
    recs, man = prepare_dataset({"kind": "zsre", "source": "zsre_mend_train_1k"}, MIRROR, str(tmp_path))
    assert man["n_records"] == 1000 and man["sources"][0]["origin"] == "mirror"
    assert man["sources"][0]["sha256"] == "e62596101d8ed551889c26c0d2a5277f92eaef3b14416d8eaee39b04a244ab60"
    assert recs[0] == {
        "case_id": 0, "subject": "UniFirst", "prompt": "What is the product made by {}?",
        "target_new": "uniform", "target_true": None, "relation": None,
        "paraphrase_prompts": ["What will be the product of UniFirst?"],
        "neighborhood": [{"prompt": "nq question: john goodman's character in the big lebowski?",
                          "target": "Walter Sobchak"}],
        "generation_prompts": [],
    }
    last = recs[999]
    assert (last["subject"], last["prompt"], last["target_new"]) == \
        ("Arcade Pool", "What is the publisher of {}?", "Hasbro Interactive")
    assert last["neighborhood"] == [{"prompt": "nq question: when last did the sharks win the currie cup?",
                                     "target": "2013"}]
    counts = subject_counts(recs)
    assert sorted(counts.values()).count(2) == 7 and sorted(counts.values()).count(3) == 1
    twos, _ = prepare_dataset({"kind": "zsre", "source": "zsre_mend_train_1k", "facts_per_subject": 2},
                              MIRROR, str(tmp_path))
    assert len(twos) == 14 and all(counts[r["subject"]] == 2 for r in twos)


@needs_mirror
def test_real_mirror_counterfact_mcf_approx(tmp_path):
    recs, man = prepare_dataset({"kind": "counterfact", "schema": "easyedit", "dedup_subjects": True},
                                MIRROR, str(tmp_path))
    assert man["n_records"] == 20391  # evaluation.md §1.4, "MCF-approx"
    ids = [r["case_id"] for r in recs]
    assert ids == sorted(ids) and ids[:2] == [0, 1]

