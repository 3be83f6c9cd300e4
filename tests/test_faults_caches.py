"""Faults injected into the caches and the file I/O: a statistics file made under other settings copied under
the expected name, truncated and bit-flipped files, stale residuals and projections, a full disk, a refused
permission; and two runs of the tiny workflow in two directories giving byte-identical outputs.

The workflow runs once per directory (about a minute each); the fault cases work on copies of the first run.
"""
from __future__ import annotations

import builtins
import errno
import hashlib
import json
import shutil
import zipfile
from pathlib import Path

import pytest
import yaml

from massedit import caches, io, steps
from test_workflow import snakemake, tiny_config

STATS = "resources/stats/tiny/model-sample/L0-1_d16_t32_float32.npz"
RESIDUALS = "results/residuals/tiny/quickstart/memit/n8/residuals.pt"
RECORDS = "resources/edits/tiny/quickstart/n8/records.jsonl"
MODEL_DIR = "resources/models/tiny/hf"
# What a run writes that may differ between runs: Snakemake's own records, logs, and the declared timings.
VOLATILE = (".snakemake/", "logs/", "benchmarks/")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def output_hashes(workdir: Path) -> dict[str, str]:
    """sha256 of every file a run left, except Snakemake's records, the logs and the timings files."""
    hashes = {}
    for path in sorted(workdir.rglob("*")):
        rel = path.relative_to(workdir).as_posix()
        if path.is_file() and not rel.startswith(VOLATILE) and not rel.endswith("timings.json") \
                and rel != "config.yaml":
            hashes[rel] = _sha(path)
    return hashes


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """The tiny workflow run in two directories with the same config (the model sits outside both)."""
    from massedit.testing import save_tiny_model

    base = tmp_path_factory.mktemp("caches")
    model_dir = save_tiny_model(base / "tiny-model", arch="llama", n_layers=2, seed=0, style="gpt2")
    config = yaml.safe_dump(tiny_config(model_dir), sort_keys=False)
    runs = []
    for name in ("run1", "run2"):
        workdir = base / name
        workdir.mkdir()
        (workdir / "config.yaml").write_text(config)
        snakemake(workdir, workdir / "config.yaml", "--cores", "2", "--max-threads", "1", "--resources", "gpu=2")
        runs.append(workdir)
    return runs


@pytest.fixture
def run_copy(two_runs, tmp_path):
    """A copy of the first run (outputs, Snakemake's metadata, mtimes) to break things in."""
    copy = tmp_path / "run"
    shutil.copytree(two_runs[0], copy, symlinks=True)
    return copy


def edit_outputs(workdir: Path) -> dict[str, str]:
    return {p.relative_to(workdir).as_posix(): _sha(p) for p in sorted((workdir / "results/edits").rglob("*"))
            if p.is_file()}


def stats_of_other_settings(workdir: Path, out: Path, n_docs: int = 8, maxlen: int = 16, seed: int = 1) -> Path:
    """A statistics file computed for the same model under other settings."""
    config = yaml.safe_load((workdir / "config.yaml").read_text())
    steps.compute_stats(str(workdir / MODEL_DIR), config["models"]["tiny"], [0, 1], "model-sample",
                        {"kind": "model_sample", "doc_tokens": 32}, {"n_docs": n_docs, "maxlen": maxlen,
                                                                     "dtype": "float32"},
                        None, seed, str(out), str(out.with_suffix(".json")))
    return out


def flip_byte_in_entry(path: Path, entry_suffix: str | None = None) -> None:
    """Flip one byte inside the data of the zip entry whose name ends with ``entry_suffix`` (the largest)."""
    with zipfile.ZipFile(path) as archive:
        infos = [i for i in archive.infolist() if entry_suffix is None or i.filename.endswith(entry_suffix)]
        info = max(infos, key=lambda i: i.file_size)
    data = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data[start + info.file_size // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


# ------------------------------------------------------------------------------------------ determinism


def test_two_runs_give_byte_identical_outputs(two_runs):
    first, second = (output_hashes(run) for run in two_runs)
    assert first.keys() == second.keys()
    differing = [rel for rel in first if first[rel] != second[rel]]
    assert not differing, f"outputs differ between two runs of the same config: {differing}"
    assert any(rel.endswith(".pt") for rel in first) and any(rel.endswith(".npz") for rel in first)
    # the timings are there, in their own files, and nowhere in the results
    for rel in ("results/edits/tiny/quickstart/eamet/n8/timings.json", "results/eval/tiny/quickstart/memit/n4/timings.json",
                STATS.replace(".npz", ".timings.json"), "results/residuals/tiny/quickstart/eamet/n8/timings.json"):
        timings = io.read_json(two_runs[0] / rel)
        assert timings and all(value >= 0 for value in timings.values()), rel
    summary = io.read_json(two_runs[0] / "results/eval/tiny/quickstart/memit/n8/summary.json")
    assert not [key for key in summary if key.endswith("_seconds") or key == "wall_s"]


def test_torch_archives_have_a_fixed_folder_and_zip_entries_a_fixed_time(two_runs):
    with zipfile.ZipFile(two_runs[0] / "results/edits/tiny/quickstart/eamet/n8/deltas.pt") as archive:
        assert {name.split("/")[0] for name in archive.namelist()} == {"archive"}
    with zipfile.ZipFile(two_runs[0] / STATS) as archive:
        assert {info.date_time for info in archive.infolist()} == {io.ZIP_DATE_TIME}


def test_an_edit_records_the_statistics_sha256_and_key(two_runs):
    meta = io.read_json(two_runs[0] / "results/edits/tiny/quickstart/memit/n8/edit.json")
    assert meta["stats_sha256"] == _sha(two_runs[0] / STATS)
    assert meta["stats_key"] == caches.read_stats_key(str(two_runs[0] / STATS))
    assert meta["stats_key"]["n_docs"] == 16 and meta["stats_key"]["maxlen"] == 32


# ------------------------------------------------------------------------------------------ statistics


def test_stats_of_other_settings_under_the_expected_name_are_refused_and_the_edits_kept(run_copy, tmp_path):
    """Refused while Snakemake builds its DAG: no edit reruns (and loses its outputs) on the bad file."""
    before = edit_outputs(run_copy)
    foreign = stats_of_other_settings(run_copy, tmp_path / "other.npz", n_docs=8, maxlen=16)
    shutil.copy(foreign, run_copy / STATS)
    output = snakemake(run_copy, run_copy / "config.yaml", "--cores", "1")
    assert f"Refusing {STATS}: computed under other settings" in output
    assert "n_docs: expected 16, found 8; maxlen: expected 32, found 16" in output
    assert f"rm '{STATS}' && snakemake --cores all --forcerun '{STATS}'" in output
    assert edit_outputs(run_copy) == before
    # an edit whose outputs are missing and asked for fails with the refusal as its error
    edit = "results/edits/tiny/quickstart/memit/n8/deltas.pt"
    shutil.rmtree((run_copy / edit).parent)
    output = snakemake(run_copy, run_copy / "config.yaml", "-n", "--cores", "1", edit, check=False)
    assert "InputFunctionException in rule edit_model" in output and "n_docs: expected 16, found 8" in output


def test_a_truncated_stats_file_is_refused_and_the_edits_kept(run_copy):
    before = edit_outputs(run_copy)
    truncate(run_copy / STATS)
    output = snakemake(run_copy, run_copy / "config.yaml", "--cores", "1")
    assert f"Refusing {STATS}: corrupt or truncated (BadZipFile" in output
    assert edit_outputs(run_copy) == before


def test_stats_of_another_seed_are_refused_by_the_edit_before_it_writes(run_copy, tmp_path):
    """The seed is not in the file name: the job checks it, before loading the model or writing anything."""
    foreign = stats_of_other_settings(run_copy, tmp_path / "seed7.npz", n_docs=16, maxlen=32, seed=7)
    config = yaml.safe_load((run_copy / "config.yaml").read_text())
    settings = {"corpus": "model-sample", "corpus_spec": {"kind": "model_sample", "doc_tokens": 32},
                "layers": [0, 1], "n_docs": 16, "maxlen": 32, "dtype": "float32", "seed": 1}
    out = {name: tmp_path / name for name in ("deltas.pt", "artefacts.npz", "edit.json", "timings.json")}
    with pytest.raises(io.CacheKeyError) as err:
        steps.edit_model("memit", {"layers": [0, 1]}, str(run_copy / MODEL_DIR), config["models"]["tiny"],
                         str(run_copy / RECORDS), str(foreign), 0, *map(str, out.values()),
                         stats_settings=settings)
    assert str(foreign) in str(err.value) and "seed: expected 1, found 7" in str(err.value)
    assert "n_docs" not in err.value.differences
    assert not any(path.exists() for path in out.values())


def test_a_stats_file_without_a_key_is_refused(run_copy, tmp_path):
    legacy = tmp_path / "legacy.npz"
    data = io.load_npz(run_copy / STATS)
    io.save_npz(legacy, **{name: value for name, value in data.items() if name != "key"})
    with pytest.raises(io.CacheKeyError, match="predates stored keys"):
        steps.load_moments(str(legacy), [0, 1])


def test_flipped_bytes_in_a_stats_file_are_caught_by_the_crc(run_copy):
    path = run_copy / STATS
    flip_byte_in_entry(path, "sum_1.npy")
    caches.read_stats_key(str(path))  # the key itself is intact: the DAG-time check passes
    with pytest.raises(io.CorruptArtefactError, match="CRC") as err:
        steps.load_moments(str(path), [0], str(run_copy / MODEL_DIR))
    assert str(path) in str(err.value)


# ------------------------------------------------------------------------------------------ projections, residuals


def test_projections_of_another_threshold_or_other_statistics_are_refused(run_copy, tmp_path):
    stats = str(run_copy / STATS)
    pt = tmp_path / "proj.pt"
    steps.null_space_projections(stats, [0, 1], 0.01, str(pt), str(tmp_path / "proj.json"))
    key = caches.read_stats_key(stats)
    good = {"threshold": 0.01, "stats_key": key, "stats_sha256": _sha(Path(stats))}
    assert set(steps.load_projections(str(pt), [0, 1], good)) == {0, 1}
    with pytest.raises(io.CacheKeyError, match=r"threshold: expected 0\.02, found 0\.01"):
        steps.load_projections(str(pt), [0, 1], {**good, "threshold": 0.02})
    with pytest.raises(io.CacheKeyError, match="stats_sha256: expected 0+, found"):
        steps.load_projections(str(pt), [0, 1], {**good, "stats_sha256": "0" * 64})
    # projections made from statistics of other settings
    with pytest.raises(io.CacheKeyError, match="stats_key: expected"):
        steps.load_projections(str(pt), [0, 1], {**good, "stats_key": {**key, "n_docs": 8}})


def test_residuals_of_another_seed_or_other_records_are_refused(run_copy):
    config = yaml.safe_load((run_copy / "config.yaml").read_text())
    model_cfg, model_dir = config["models"]["tiny"], str(run_copy / MODEL_DIR)
    rows = io.read_jsonl(run_copy / RECORDS)
    hparams = io.read_json(run_copy / "results/edits/tiny/quickstart/memit/n8/edit.json")["hparams"]
    path = str(run_copy / RESIDUALS)
    assert len(steps.load_residual_head(path, rows[:4], model_dir, hparams, 0, model_cfg).iterations) == 4
    with pytest.raises(io.CacheKeyError, match="seed: expected 3, found 0"):
        steps.load_residual_head(path, rows, model_dir, hparams, 3, model_cfg)
    with pytest.raises(io.CacheKeyError, match="add_bos: expected true, found false"):
        steps.load_residual_head(path, rows, model_dir, hparams, 0, {**model_cfg, "bos": True})
    changed = [dict(rows[0], target_new="something else"), *rows[1:4]]
    with pytest.raises(io.CacheKeyError, match="record content.*case id"):
        steps.load_residual_head(path, changed, model_dir, hparams, 0, model_cfg)


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_damaged_residual_file_is_refused_naming_it(run_copy, damage):
    path = run_copy / RESIDUALS
    truncate(path) if damage == "truncate" else flip_byte_in_entry(path)
    rows = io.read_jsonl(run_copy / RECORDS)
    with pytest.raises(io.CorruptArtefactError) as err:
        steps.load_residual_head(str(path), rows, str(run_copy / MODEL_DIR))
    message = str(err.value)
    assert str(path) in message and "optimise_residuals" in message
    assert ("BadZipFile" in message) if damage == "truncate" else ("CRC" in message)


@pytest.mark.parametrize("name", ["summary.json", "records.jsonl"])
def test_truncated_json_is_refused_naming_the_file(run_copy, name):
    path = run_copy / "results/eval/tiny/quickstart/memit/n8" / name
    truncate(path)
    with pytest.raises(io.CorruptArtefactError) as err:
        io.read_jsonl(path) if name.endswith(".jsonl") else io.read_json(path)
    assert str(path) in str(err.value) and "invalid JSON" in str(err.value)


# ------------------------------------------------------------------------------------------ disk full, permission


@pytest.fixture
def disk_full(monkeypatch):
    """Every file massedit.io opens for writing is /dev/full (writes fail with ENOSPC)."""
    def full_open(file, mode="r", *args, **kwargs):
        return builtins.open("/dev/full", mode) if any(c in mode for c in "wax") else builtins.open(file, mode, *args,
                                                                                                    **kwargs)
    monkeypatch.setattr(io, "open", full_open, raising=False)


@pytest.mark.parametrize("writer", ["json", "torch", "npz"])
def test_a_full_disk_names_the_file_and_leaves_nothing(tmp_path, disk_full, writer):
    import numpy as np
    import torch

    target = tmp_path / f"out.{writer}"
    with pytest.raises(io.ArtefactIOError) as err:
        if writer == "json":
            io.write_json(target, {"a": list(range(10000))})
        elif writer == "torch":
            io.save_torch(target, {"deltas": torch.zeros(100_000)})
        else:
            io.save_npz(target, a=np.zeros(100_000))
    assert err.value.errno == errno.ENOSPC
    assert str(target) in str(err.value) and "no space left on the device" in str(err.value)
    assert list(tmp_path.iterdir()) == []  # neither the file nor a temporary part


def test_torchs_unexpected_pos_on_a_full_disk_becomes_no_space(tmp_path, monkeypatch):
    import torch

    def failing_save(obj, fh):
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 4160 vs 4054")

    monkeypatch.setattr(torch, "save", failing_save)
    monkeypatch.setattr(io.shutil, "disk_usage", lambda folder: shutil._ntuple_diskusage(10**9, 10**9, 0))
    with pytest.raises(io.ArtefactIOError) as err:
        io.save_torch(tmp_path / "deltas.pt", {"x": torch.zeros(3)})
    assert err.value.errno == errno.ENOSPC and "deltas.pt: cannot write it: no space left" in str(err.value)
    # with room to spare it is not blamed on space, but still names the file and torch's message
    monkeypatch.setattr(io.shutil, "disk_usage", lambda folder: shutil._ntuple_diskusage(10**12, 0, 10**12))
    with pytest.raises(io.ArtefactIOError, match=r"deltas\.pt: cannot write it: torch's writer failed .*unexpected pos"):
        io.save_torch(tmp_path / "deltas.pt", {"x": torch.zeros(3)})


@pytest.mark.parametrize("action", ["write", "read"])
def test_permission_denied_names_the_file(tmp_path, monkeypatch, action):
    target = tmp_path / "edit.json"
    target.write_text("{}")

    def refusing_open(file, mode="r", *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(file))

    monkeypatch.setattr(io, "open", refusing_open, raising=False)
    with pytest.raises(io.ArtefactIOError) as err:
        io.write_json(target, {}) if action == "write" else io.read_json(target)
    assert err.value.errno == errno.EACCES
    assert str(target) in str(err.value) and "permission denied" in str(err.value)


def test_a_missing_file_stays_a_file_not_found_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.json"):
        io.read_json(tmp_path / "nowhere.json")


def test_a_key_mismatch_lists_every_differing_field():
    with pytest.raises(io.CacheKeyError) as err:
        io.verify_key("f.npz", {"n_docs": 8, "maxlen": 32, "seed": 1}, {"n_docs": 16, "maxlen": 32, "seed": 2,
                                                                       "dtype": "float32"}, "compute_layer_stats")
    assert set(err.value.differences) == {"n_docs", "seed", "dtype"}
    assert "dtype: expected float32, found <not recorded>" in str(err.value)
    assert json.dumps({"b": 1, "a": 2}) != io.dumps_json({"b": 1, "a": 2}, indent=None)  # keys sorted
