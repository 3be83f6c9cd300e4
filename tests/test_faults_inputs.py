"""Faults in the data inputs.

A pinned data file with one byte flipped is refused, naming the file, both checksums and what to do; the
mirror's files are inputs of the jobs that read them, so a damaged or restored file replans those jobs; a
user's own file is accepted and its sha256 recorded. Also the WikiText by-paragraph corpus format.
Everything that damages a file works on a copy of the mirror under tmp_path.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from massedit.corpora import load_documents, split_wikitext_paragraphs
from massedit.datasets import dataset_mirror_files, prepare_dataset
from massedit.datasets.checksums import ChecksumError, pins
from massedit.datasets.general_tasks import prepare_task

ROOT = Path(__file__).resolve().parents[1]
MIRROR = Path(os.environ.get("MASSEDIT_MIRROR") or ROOT / ".." / "shared" / "data")
needs_mirror = pytest.mark.skipif(not (MIRROR / "PROVENANCE.md").is_file(),
                                  reason=f"no data mirror at {MIRROR} (set MASSEDIT_MIRROR)")

CF_500 = "counterfact/memit_schema/counterfact_500.json"
WIKI_VALID = "corpus/wikitext-103/wiki.valid.tokens"
COLA = "glue_eval/cola.json"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def copy_mirror(dest: Path, *files: str) -> Path:
    for rel in files:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(MIRROR / rel, dest / rel)
    return dest


def flip_byte(path: Path, offset: int = 100) -> bytes:
    """Flip the lowest bit of one byte; return the original content."""
    original = path.read_bytes()
    damaged = bytearray(original)
    damaged[offset] ^= 0x01
    path.write_bytes(bytes(damaged))
    return original


# --- the pin table ------------------------------------------------------------------------------------

@needs_mirror
def test_pins_agree_with_provenance_and_the_mirror():
    """Every file the mirror's PROVENANCE.md lists with a sha256 and the mirror holds is pinned with that
    sha256, and the mirror's copy has it."""
    listed = {}
    for line in (MIRROR / "PROVENANCE.md").read_text().splitlines():
        path = re.match(r"\| `([^`]+)`", line)
        shas = re.findall(r"\b[0-9a-f]{64}\b", line)
        if path and shas and (MIRROR / path.group(1)).is_file():
            listed[path.group(1)] = shas[0]
    assert len(listed) == 19
    table = pins()
    for rel, sha in listed.items():
        assert table.get(rel) == sha, rel
        assert sha256(MIRROR / rel) == sha, rel


# --- a flipped byte is refused ------------------------------------------------------------------------

@needs_mirror
def test_flipped_byte_in_a_pinned_dataset_file_is_refused(tmp_path):
    mirror = copy_mirror(tmp_path / "mirror", CF_500)
    spec = {"kind": "counterfact", "schema": "memit", "source": "counterfact_500"}
    records, manifest = prepare_dataset(spec, str(mirror), str(tmp_path / "dl"))
    assert len(records) == 500 and manifest["sources"][0]["verified"] is True

    flip_byte(mirror / CF_500)
    with pytest.raises(ChecksumError) as err:
        prepare_dataset(spec, str(mirror), str(tmp_path / "dl"))
    msg = str(err.value)
    assert str(mirror / CF_500) in msg
    assert f"expected {pins()[CF_500]}" in msg and f"found {sha256(mirror / CF_500)}" in msg
    assert "restore <mirror>/" + CF_500 in msg and "PROVENANCE.md" in msg
    assert "download it again from https://" in msg
    assert not (tmp_path / "dl").exists()  # refused, not silently replaced by a download


@needs_mirror
def test_flipped_byte_in_a_pinned_general_task_file_is_refused(tmp_path):
    mirror = copy_mirror(tmp_path / "mirror", COLA)
    examples, provenance = prepare_task("cola", str(mirror), str(tmp_path / "dl"))
    assert len(examples) == 644 and provenance["verified"] is True
    flip_byte(mirror / COLA, offset=500)
    with pytest.raises(ChecksumError, match=rf"{re.escape(str(mirror / COLA))}: sha256 mismatch: "
                                            rf"expected {pins()[COLA]}, found {sha256(mirror / COLA)}"):
        prepare_task("cola", str(mirror), str(tmp_path / "dl"))


@needs_mirror
def test_flipped_byte_in_a_pinned_corpus_file_is_refused(tmp_path):
    mirror = copy_mirror(tmp_path / "mirror", WIKI_VALID)
    spec = {"kind": "text_files", "paths": [WIKI_VALID], "format": "wikitext_paragraphs"}
    docs, provenance = load_documents(spec, 5, seed=1, mirror_dir=str(mirror))
    assert len(docs) == 5 and provenance["files"][0]["verified"] is True

    flip_byte(mirror / WIKI_VALID)
    for path in (WIKI_VALID, str(mirror / WIKI_VALID)):  # relative to the mirror, or absolute inside it
        with pytest.raises(ChecksumError) as err:
            load_documents({**spec, "paths": [path]}, 5, seed=1, mirror_dir=str(mirror))
        msg = str(err.value)
        assert str(mirror / WIKI_VALID) in msg and pins()[WIKI_VALID] in msg
        assert sha256(mirror / WIKI_VALID) in msg and "restore <mirror>/" + WIKI_VALID in msg


# --- a user's own file --------------------------------------------------------------------------------

def test_users_unpinned_corpus_file_is_accepted_and_its_sha256_recorded(tmp_path):
    own = tmp_path / "my_corpus.txt"
    own.write_text("First paragraph of my own.\n\nSecond one.\n\nThird.\n")
    docs, provenance = load_documents({"kind": "text_files", "paths": [str(own)], "format": "paragraphs"}, 10,
                                      seed=0, mirror_dir=str(tmp_path / "mirror"))
    assert sorted(docs) == ["First paragraph of my own.", "Second one.", "Third."]
    assert provenance["files"] == [{"path": str(own), "sha256": sha256(own), "verified": False, "documents": 3}]


def test_users_unpinned_dataset_file_is_accepted_and_its_sha256_recorded(tmp_path):
    rel = "mine/cf.json"
    (tmp_path / "mirror" / "mine").mkdir(parents=True)
    _write_memit_record(tmp_path / "mirror" / rel)
    spec = {"kind": "counterfact", "schema": "memit", "source": {"mirror_path": rel}}
    records, manifest = prepare_dataset(spec, str(tmp_path / "mirror"), str(tmp_path / "dl"))
    source = manifest["sources"][0]
    assert len(records) == 1 and source["verified"] is False
    assert source["sha256"] == sha256(tmp_path / "mirror" / rel)
    assert dataset_mirror_files(spec, str(tmp_path / "mirror")) == [str(tmp_path / "mirror" / rel)]


def _write_memit_record(path: Path) -> None:
    path.write_text(json.dumps([{
        "case_id": 7, "requested_rewrite": {"prompt": "{} is located in", "relation_id": "P30",
                                            "target_new": {"str": "Asia"}, "target_true": {"str": "Europe"},
                                            "subject": "Paris"},
        "paraphrase_prompts": ["Paris lies in"], "neighborhood_prompts": ["Lyon is located in"],
        "generation_prompts": ["Paris is"]}]))


# --- WikiText by paragraph ----------------------------------------------------------------------------

WIKITEXT = (
    "\n"
    " = Alpha Beta = \n"
    "\n"
    " Alpha is a 1 @,@ 000 @-@ year old <unk> . It stands .\n"
    " Its second paragraph .\n"
    "\n"
    " = = History = = \n"
    "\n"
    " Built in 1200 .\n"
    "   \n"
    " = Gamma = \n"
    "\n"
    " Gamma follows ."
)
PARAGRAPHS = [
    " = Alpha Beta = \n",
    " Alpha is a 1 @,@ 000 @-@ year old <unk> . It stands .\n",
    " Its second paragraph .\n",
    " = = History = = \n",
    " Built in 1200 .\n",
    " = Gamma = \n",
    " Gamma follows .",
]


def test_wikitext_paragraphs_are_the_non_blank_rows_verbatim():
    assert split_wikitext_paragraphs(WIKITEXT) == PARAGRAPHS


def test_wikitext_paragraphs_corpus_samples_a_seeded_permutation(tmp_path):
    path = tmp_path / "wiki.tokens"
    path.write_text(WIKITEXT)
    spec = {"kind": "text_files", "paths": [str(path)], "format": "wikitext_paragraphs"}
    every, provenance = load_documents(spec, 100, seed=3)
    assert sorted(every) == sorted(PARAGRAPHS) and provenance["available_documents"] == 7
    assert provenance["format"] == "wikitext_paragraphs" and provenance["files"][0]["documents"] == 7
    head, _ = load_documents(spec, 3, seed=3)
    assert head == every[:3]  # the first n of the same permutation
    others = {tuple(load_documents(spec, 7, seed=s)[0]) for s in range(6)}
    assert len(others) > 1  # the seed chooses the order
    articles, _ = load_documents({**spec, "format": "wikitext"}, 100, seed=3)
    assert len(articles) == 2  # the article format on the same text, for contrast


def test_unknown_text_format_is_a_clear_error(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("x\n")
    with pytest.raises(ValueError, match="unknown format 'lines'.*wikitext_paragraphs"):
        load_documents({"kind": "text_files", "paths": [str(path)], "format": "lines"}, 1, 0)


# --- the workflow: mirror files are inputs ------------------------------------------------------------

def snakemake(workdir: Path, *args: str, check: bool = True) -> str:
    cmd = [sys.executable, "-m", "snakemake", *args, "-d", str(workdir), "-s", str(ROOT / "Snakefile"),
           "--configfile", str(workdir / "config.yaml")]
    env = {k: v for k, v in os.environ.items() if k != "MASSEDIT_MIRROR"}  # the config's mirror_dir counts
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    output = proc.stdout + proc.stderr
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited {proc.returncode}:\n{output[-6000:]}")
    return output


def planned(output: str) -> dict[str, str]:
    """rule -> reason of each job of a dry run."""
    jobs, rule = {}, None
    for line in output.splitlines():
        match = re.fullmatch(r"(?:local)?rule (\w+):", line.strip())
        if match:
            rule = match.group(1)
        elif rule and line.strip().startswith("reason:"):
            jobs[rule] = line.strip()
    return jobs


@needs_mirror
def test_damaged_and_restored_mirror_files_replan_their_jobs(tmp_path):
    """Dataset and corpus files of the mirror are inputs: a flipped byte replans the jobs that read them,
    which refuse the file; restoring it plans them again and they succeed. A user's own corpus file is an
    input too, and editing it reruns the statistics."""
    from massedit.testing import save_tiny_model

    workdir = tmp_path / "run"
    mirror = copy_mirror(tmp_path / "mirror", CF_500, WIKI_VALID)
    own = tmp_path / "own.txt"
    own.write_text("One paragraph here.\n\nAnother one there.\n")
    small = {"layers": [0, 1], "v_num_grad_steps": 2, "templates": {"seeds": ["The"], "max_new_tokens": 4}}
    config = {
        "mirror_dir": str(mirror),
        "models": {"tiny": {"source": {"kind": "local", "path": str(save_tiny_model(tmp_path / "tiny"))},
                            "dtype": "float32", "bos": False}},
        "datasets": {"cf": {"kind": "counterfact", "schema": "memit", "source": "counterfact_500",
                            "keep_known": False}},
        "corpora": {"wt": {"kind": "text_files", "paths": [WIKI_VALID], "format": "wikitext_paragraphs"},
                    "own": {"kind": "text_files", "paths": [str(own)], "format": "paragraphs"}},
        "stats": {"corpus": "wt", "n_docs": 8, "maxlen": 16, "batch_tokens": 256},
        "methods": {"memit": {"defaults": small}},
        "evaluation": {"prefix_len": 2, "n_prefixes": 1, "fluency_max_new_tokens": 4, "batch_size": 8},
        "grid": {"models": ["tiny"], "datasets": ["cf"], "methods": ["memit"], "n_edits": [2]},
    }
    workdir.mkdir()
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    records = "resources/datasets/cf/records.jsonl"
    stats = "resources/stats/tiny/wt/L0-1_d8_t16_float32.npz"
    own_stats = "resources/stats/tiny/own/L0-1_d2_t16_float32.npz"
    targets = [records, stats, own_stats]

    snakemake(workdir, *targets, "--cores", "1")
    assert "Nothing to be done" in snakemake(workdir, *targets, "-n")
    stats_json = json.loads((workdir / own_stats).with_suffix(".json").read_text())
    assert stats_json["corpus_provenance"]["files"][0]["sha256"] == sha256(own)

    saved = {rel: flip_byte(mirror / rel) for rel in (CF_500, WIKI_VALID)}
    jobs = planned(snakemake(workdir, *targets, "-n"))
    assert jobs["prepare_dataset"] == f"reason: Updated input files: {mirror / CF_500}"
    assert jobs["compute_layer_stats"] == f"reason: Updated input files: {mirror / WIKI_VALID}"

    output = snakemake(workdir, *targets, "--cores", "1", "--keep-going", check=False)
    for rel in (CF_500, WIKI_VALID):
        assert f"{mirror / rel}: sha256 mismatch: expected {pins()[rel]}, found {sha256(mirror / rel)}" in output
    assert not (workdir / records).exists() and not (workdir / stats).exists()

    for rel, content in saved.items():
        (mirror / rel).write_bytes(content)
    jobs = planned(snakemake(workdir, *targets, "-n"))
    assert set(jobs) == {"prepare_dataset", "compute_layer_stats"}
    snakemake(workdir, *targets, "--cores", "1")
    assert "Nothing to be done" in snakemake(workdir, *targets, "-n")

    own.write_text("One paragraph here.\n\nAnother one, edited.\n")
    jobs = planned(snakemake(workdir, *targets, "-n"))
    assert jobs == {"compute_layer_stats": f"reason: Updated input files: {own}"}
