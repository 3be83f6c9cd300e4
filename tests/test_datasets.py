"""Dataset sources, CounterFact loaders, record validation and selection, on small hand-made files."""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest

from massedit.datasets import prepare_dataset, validate_record, validate_records
from massedit.datasets.counterfact import KNOWN_SOURCES, load_easyedit, load_memit
from massedit.datasets.selection import ordered_ids_hash, select_records
from massedit.datasets.sources import resolve_source
from massedit.io import sha256_file


def memit_raw(case_id: int, subject: str = "Angola", new: str = "Antarctica", true: str = "Africa") -> dict:
    return {
        "case_id": case_id, "pararel_idx": 1,
        "requested_rewrite": {"prompt": "{} is located in", "relation_id": "P30", "subject": subject,
                              "target_new": {"str": new, "id": "Q51"}, "target_true": {"str": true, "id": "Q15"}},
        "paraphrase_prompts": [f"Hello. {subject} is part of the continent of", f"So {subject} is in"],
        "neighborhood_prompts": ["Ghana is in", "Kenya is located in"],
        "attribute_prompts": ["Ross Island is in"],
        "generation_prompts": [f"{subject} is known for"],
    }


def easyedit_raw(case_id: int, subject: str) -> dict:
    return {"case_id": case_id, "prompt": f"The mother tongue of {subject} is", "target_new": "English",
            "subject": subject, "ground_truth": "French",
            "rephrase_prompt": f"Where {subject} is from, people speak", "locality_prompt": "Michel Rocard speaks",
            "locality_ground_truth": "French"}


def write(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


def good_record(**over) -> dict:
    rec = {"case_id": 7, "subject": "France", "prompt": "The capital of {} is", "target_new": " Rome",
           "target_true": "Paris", "relation": "capital", "paraphrase_prompts": ["France's capital is"],
           "neighborhood": [{"prompt": "The capital of Italy is", "target": " Rome"}],
           "generation_prompts": ["France is known for"]}
    rec.update(over)
    return rec


# --- record validation -------------------------------------------------------------------------------

def test_validate_record_strips_leading_spaces_and_keeps_shape():
    out = validate_record(good_record(), "x.json", 3)
    assert out["target_new"] == "Rome" and out["neighborhood"][0]["target"] == "Rome"
    assert list(out) == ["case_id", "subject", "prompt", "target_new", "target_true", "relation",
                         "paraphrase_prompts", "neighborhood", "generation_prompts"]
    assert validate_record(good_record(target_true=None, relation=None), "x")["target_true"] is None


@pytest.mark.parametrize("over, field", [
    ({"prompt": "The capital of {} is {}"}, "prompt"),
    ({"prompt": "The capital of France is"}, "prompt"),
    ({"target_new": "   "}, "target_new"),
    ({"target_true": 3}, "target_true"),
    ({"paraphrase_prompts": "one"}, "paraphrase_prompts"),
    ({"neighborhood": [{"prompt": "p"}]}, "neighborhood[0]"),
    ({"generation_prompts": [""]}, "generation_prompts[0]"),
    ({"extra": 1}, "extra"),
])
def test_validate_record_error_names_where_record_and_field(over, field):
    with pytest.raises(ValueError) as err:
        validate_record(good_record(**over), "data/x.json", 3)
    msg = str(err.value)
    assert "data/x.json" in msg and "record 3" in msg and "case_id 7" in msg and repr(field) in msg


def test_validate_records_rejects_duplicate_case_ids():
    with pytest.raises(ValueError, match="record 1 .*duplicate of record 0"):
        validate_records([good_record(), good_record()], "ds")


# --- CounterFact loaders --------------------------------------------------------------------------------

def test_load_memit_normalises_in_file_order(tmp_path):
    path = write(tmp_path / "cf.json", [memit_raw(20952), memit_raw(5, "Peru", " Asia", " South America")])
    recs = load_memit(path)
    assert [r["case_id"] for r in recs] == [20952, 5]
    first = recs[0]
    assert (first["subject"], first["prompt"], first["target_new"], first["target_true"], first["relation"]) == \
        ("Angola", "{} is located in", "Antarctica", "Africa", "P30")
    assert first["neighborhood"] == [{"prompt": "Ghana is in", "target": "Africa"},
                                     {"prompt": "Kenya is located in", "target": "Africa"}]
    assert len(first["paraphrase_prompts"]) == 2 and first["generation_prompts"] == ["Angola is known for"]
    assert recs[1]["target_new"] == "Asia" and recs[1]["neighborhood"][0]["target"] == "South America"


@pytest.mark.parametrize("mutate, field", [
    (lambda r: r["requested_rewrite"]["target_new"].pop("str"), "requested_rewrite.target_new.str"),
    (lambda r: r.pop("neighborhood_prompts"), "neighborhood_prompts"),
    (lambda r: r["requested_rewrite"].update(prompt="{} is in {}"), "prompt"),
    (lambda r: r["requested_rewrite"].update(subject=3), "requested_rewrite.subject"),
])
def test_load_memit_errors_name_file_record_and_field(tmp_path, mutate, field):
    bad = memit_raw(41)
    mutate(bad)
    path = write(tmp_path / "cf.json", [memit_raw(40), bad])
    with pytest.raises(ValueError) as err:
        load_memit(path)
    msg = str(err.value)
    assert str(path) in msg and "record 1" in msg and "case_id 41" in msg and repr(field) in msg


def test_load_memit_requires_a_list(tmp_path):
    with pytest.raises(ValueError, match="expected a JSON list"):
        load_memit(write(tmp_path / "cf.json", {"case_id": 0}))


def test_load_easyedit_union_sorted_by_case_id(tmp_path):
    files = [write(tmp_path / "train.json", [easyedit_raw(4, "Ann Lee"), easyedit_raw(0, "Bo Li")]),
             write(tmp_path / "val.json", [easyedit_raw(2, "Cy Ng")]),
             write(tmp_path / "edit.json", [easyedit_raw(3, "Di Wu"), easyedit_raw(1, "Ed Yu")])]
    recs = load_easyedit(files)
    assert [r["case_id"] for r in recs] == [0, 1, 2, 3, 4]
    r = recs[0]
    assert r["prompt"] == "The mother tongue of {} is" and r["subject"] == "Bo Li"
    assert (r["target_new"], r["target_true"], r["relation"]) == ("English", "French", None)
    assert r["paraphrase_prompts"] == ["Where Bo Li is from, people speak"]
    assert r["neighborhood"] == [{"prompt": "Michel Rocard speaks", "target": "French"}]
    assert r["generation_prompts"] == []


@pytest.mark.parametrize("subject_in_prompt", ["Someone Else", "Ann Ann"])
def test_load_easyedit_subject_must_fill_exactly_one_slot(tmp_path, subject_in_prompt):
    bad = easyedit_raw(9, "Ann")
    bad["prompt"] = f"The mother tongue of {subject_in_prompt} is"
    path = write(tmp_path / "val.json", [easyedit_raw(8, "Bo"), bad])
    with pytest.raises(ValueError) as err:
        load_easyedit([path])
    msg = str(err.value)
    assert str(path) in msg and "record 1" in msg and "case_id 9" in msg and "'prompt'" in msg


def test_load_easyedit_missing_field_and_cross_file_duplicate(tmp_path):
    bad = easyedit_raw(5, "Bo")
    del bad["locality_ground_truth"]
    path = write(tmp_path / "edit.json", [bad])
    with pytest.raises(ValueError, match=r"edit\.json: record 0 \(case_id 5\): field 'locality_ground_truth'"):
        load_easyedit([path])
    a = write(tmp_path / "a.json", [easyedit_raw(1, "Bo")])
    b = write(tmp_path / "b.json", [easyedit_raw(1, "Cy")])
    with pytest.raises(ValueError, match=r"b\.json: record 0 \(case_id 1\).*also in .*a\.json"):
        load_easyedit([a, b])


# --- sources --------------------------------------------------------------------------------------------

def test_resolve_source_prefers_mirror_and_verifies(tmp_path):
    f = write(tmp_path / "mirror" / "sub" / "d.json", [1, 2])
    spec = {"mirror_path": "sub/d.json", "url": "file:///nonexistent/d.json", "sha256": sha256_file(f)}
    path, prov = resolve_source(spec, str(tmp_path / "mirror"), str(tmp_path / "dl"))
    assert path == f and prov["origin"] == "mirror" and prov["sha256"] == spec["sha256"]
    assert prov["bytes"] == f.stat().st_size and not (tmp_path / "dl").exists()


def test_resolve_source_sha_mismatch_names_file_and_both_hashes(tmp_path):
    f = write(tmp_path / "mirror" / "d.json", [1])
    actual = sha256_file(f)
    with pytest.raises(ValueError) as err:
        resolve_source({"mirror_path": "d.json", "sha256": "0" * 64}, str(tmp_path / "mirror"), str(tmp_path))
    msg = str(err.value)
    assert "d.json" in msg and "0" * 64 in msg and actual in msg


def test_resolve_source_unreachable_everywhere_explains_how_to_fix(tmp_path):
    url = (tmp_path / "nowhere" / "cf.json").as_uri()
    spec = {"mirror_path": "counterfact/cf.json", "url": url}
    with pytest.raises(FileNotFoundError) as err:
        resolve_source(spec, str(tmp_path / "mirror"), str(tmp_path / "dl"))
    msg = str(err.value)
    assert str(tmp_path / "mirror" / "counterfact" / "cf.json") in msg and url in msg
    assert "mirror_dir" in msg and "MASSEDIT_MIRROR" in msg
    with pytest.raises(FileNotFoundError, match="no mirror configured"):
        resolve_source(spec, None, str(tmp_path / "dl"))


def test_resolve_source_downloads_via_url_atomically_and_verifies(tmp_path):
    remote = write(tmp_path / "remote" / "cf.json", [memit_raw(0)])
    sha = sha256_file(remote)
    spec = {"mirror_path": "cf.json", "url": remote.as_uri(), "sha256": sha}
    path, prov = resolve_source(spec, str(tmp_path / "empty_mirror"), str(tmp_path / "dl"))
    assert path == tmp_path / "dl" / "cf.json" and path.read_bytes() == remote.read_bytes()
    assert prov == {"path": str(path), "origin": "url", "url": remote.as_uri(), "sha256": sha,
                    "bytes": remote.stat().st_size, "verified": True}
    assert [p.name for p in (tmp_path / "dl").iterdir()] == ["cf.json"]  # no .part left behind

    with pytest.raises(ValueError, match=f"expected {'f' * 64}, found {sha}"):
        resolve_source({**spec, "sha256": "f" * 64, "filename": "other.json"}, None, str(tmp_path / "dl"))
    assert sorted(p.name for p in (tmp_path / "dl").iterdir()) == ["cf.json"]


def test_resolve_source_rejects_bad_specs(tmp_path):
    with pytest.raises(ValueError, match="unknown key"):
        resolve_source({"url": "file:///x", "sha": "1"}, None, str(tmp_path))
    with pytest.raises(ValueError, match="needs 'mirror_path' or 'url'"):
        resolve_source({"sha256": "1"}, None, str(tmp_path))


# --- prepare_dataset -------------------------------------------------------------------------------------

def test_prepare_dataset_counterfact_both_schemas(tmp_path):
    mirror = tmp_path / "mirror"
    f = write(mirror / "m" / "cf.json", [memit_raw(3), memit_raw(1, "Peru")])
    spec = {"kind": "counterfact", "schema": "memit",
            "source": {"mirror_path": "m/cf.json", "sha256": sha256_file(f)}}
    recs, man = prepare_dataset(spec, str(mirror), str(tmp_path / "dl"))
    assert [r["case_id"] for r in recs] == [3, 1]
    assert man["kind"] == "counterfact" and man["n_records"] == 2
    assert man["sources"][0]["sha256"] == sha256_file(f) and man["sources"][0]["origin"] == "mirror"
    assert man["ordered_ids_sha256"] == ordered_ids_hash(recs) and len(man["records_sha256"]) == 64

    files = [{"mirror_path": f"e/{n}.json"} for n in ("train", "val", "edit")]
    for i, fs in enumerate(files):
        write(mirror / fs["mirror_path"], [easyedit_raw(2 - i, f"Person {i}")])
    recs, man = prepare_dataset({"kind": "counterfact", "schema": "easyedit", "files": files},
                                str(mirror), str(tmp_path / "dl"))
    assert [r["case_id"] for r in recs] == [0, 1, 2] and len(man["sources"]) == 3


def test_prepare_dataset_rejects_unknown_kind_keys_and_schema(tmp_path):
    with pytest.raises(ValueError, match="unknown kind 'nope'"):
        prepare_dataset({"kind": "nope"}, None, str(tmp_path))
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['sed'\]"):
        prepare_dataset({"kind": "quickstart", "sed": 1}, None, str(tmp_path))
    with pytest.raises(ValueError, match="'schema' must be"):
        prepare_dataset({"kind": "counterfact", "schema": "rome"}, None, str(tmp_path))
    with pytest.raises(ValueError, match="unknown source name"):
        prepare_dataset({"kind": "counterfact", "schema": "memit", "source": "cf"}, None, str(tmp_path))


def test_canonical_counterfact_constant_matches_reference():
    cf = KNOWN_SOURCES["counterfact"]
    assert cf["url"] == "https://rome.baulab.info/data/dsets/counterfact.json"
    assert cf["sha256"] == "d017056125178a13728594e66a801357a8db9ed7973a7425554bb4271de9fc6f"


# --- selection ----------------------------------------------------------------------------------------

RECS = [{"case_id": i * 10} for i in range(20)]


def test_select_first_and_sample():
    assert [r["case_id"] for r in select_records(RECS, 3)] == [0, 10, 20]
    a = select_records(RECS, 5, "sample", seed=1)
    assert a == select_records(RECS, 5, "sample", seed=1)
    ids = [r["case_id"] for r in a]
    assert ids == sorted(ids) and len(set(ids)) == 5  # file order kept
    assert ids != [r["case_id"] for r in select_records(RECS, 5, "sample", seed=2)]
    assert len(select_records(RECS, 20, "sample")) == 20


def test_select_errors():
    with pytest.raises(ValueError, match="cannot select 21 records: the dataset has only 20"):
        select_records(RECS, 21)
    with pytest.raises(ValueError, match="mode"):
        select_records(RECS, 2, "random")
    with pytest.raises(ValueError, match="positive int"):
        select_records(RECS, 0)


def test_ordered_ids_hash_depends_on_order():
    assert ordered_ids_hash(RECS[:3]) == ordered_ids_hash(copy.deepcopy(RECS[:3]))
    assert ordered_ids_hash(RECS[:3]) != ordered_ids_hash(RECS[:3][::-1])


# --- the real mirror --------------------------------------------------------------------------------------

@pytest.mark.skipif(not os.environ.get("MASSEDIT_MIRROR"),
                    reason="MASSEDIT_MIRROR is not set; point it at the offline data mirror to run this test")
def test_real_mirror_files(tmp_path):
    mirror = os.environ["MASSEDIT_MIRROR"]
    recs, man = prepare_dataset({"kind": "counterfact", "schema": "memit", "source": "counterfact_500"},
                                mirror, str(tmp_path))
    assert man["n_records"] == 500 and man["sources"][0]["origin"] == "mirror"
    assert all(len(r["neighborhood"]) == 10 and len(r["paraphrase_prompts"]) == 2 for r in recs)
    recs, man = prepare_dataset({"kind": "counterfact", "schema": "easyedit"}, mirror, str(tmp_path))
    assert man["n_records"] == 21919 and [r["case_id"] for r in recs] == list(range(21919))
    assert [s["origin"] for s in man["sources"]] == ["mirror"] * 3
