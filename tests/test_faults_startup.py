"""Configuration faults are reported when the workflow starts, not by a job after others have run.

Each bad config runs the real `snakemake` (not a dry run) in an empty directory: it must exit at parse time
naming the config key, the value and the limit, and leave no job output behind. The checks a parse cannot
make (a model not acquired yet, the facts the known-fact filter keeps) run inside the job through the same
function (massedit.preflight.check_job). Also here: the table's N is the number of edits made, and the
thread count a model job gets on a workstation and inside a cluster job.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from massedit import config as mc
from massedit import io, preflight
from test_workflow import ROOT, SNAKEFILE, tiny_config

MIRROR_ENV = "MASSEDIT_MIRROR"
JOB_OUTPUTS = ("resources", "results", "logs", "benchmarks")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from massedit.testing import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("faults") / "tiny-model", arch="llama", n_layers=2)


@pytest.fixture
def config(model_dir):
    return tiny_config(model_dir)


def start(workdir: Path, config: dict, timeout: int = 300) -> subprocess.CompletedProcess:
    """A real run of the default target (no -n): a fault found at parse time stops it before any job."""
    workdir.mkdir(parents=True, exist_ok=True)
    configfile = workdir / "config.yaml"
    configfile.write_text(yaml.safe_dump(config, sort_keys=False))
    cmd = [sys.executable, "-m", "snakemake", "-d", str(workdir), "-s", str(SNAKEFILE), "--configfile",
           str(configfile), "--cores", "1"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def assert_refused_at_start(proc: subprocess.CompletedProcess, workdir: Path, *messages: str) -> None:
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output[-3000:]
    for message in messages:
        assert message in output, f"{message!r} not in:\n{output[-3000:]}"
    assert "Job stats" not in output and "rule " not in output, output[-3000:]
    assert not [name for name in JOB_OUTPUTS if (workdir / name).exists()], sorted(p.name for p in workdir.iterdir())


# ----------------------------------------------------------------------------------------------------
# Parse time


def test_layers_and_sizes_are_refused_together_at_start(tmp_path, config, model_dir):
    """Layers beyond the model's depth (an override, a default, the z-layer, v_loss_layer) and batches larger
    than the dataset, all in one message."""
    config["methods"]["eamet"]["models"] = {"tiny": {"layers": [0, 5]}}
    config["methods"]["memit"]["defaults"]["layers"] = [0, 2]
    config["methods"]["memit"]["defaults"]["v_loss_layer"] = 0  # a block, but not the last
    config["grid"]["n_edits"] = [4, 500]
    config["analyses"] = {"prefix_robustness": {"models": ["tiny"], "datasets": ["quickstart"],
                                                "methods": ["eamet"], "n_edits": 600, "prefix_lens": [5]}}
    proc = start(tmp_path, config)
    depth = f"which has 2 (0 to 1; num_hidden_layers in {model_dir / 'config.json'})"
    assert_refused_at_start(
        proc, tmp_path,
        "5 configuration problem(s), found before any job ran",
        f"methods.eamet.models.tiny.layers[1]: layer 5 (the z-layer) is not a block of model 'tiny', {depth}",
        f"methods.memit.defaults.layers[1]: layer 2 (the z-layer) is not a block of model 'tiny', {depth}",
        "methods.memit.defaults.v_loss_layer: v_loss_layer 0 is not the last block of model 'tiny', which has 2 "
        f"(only 1 is implemented; num_hidden_layers in {model_dir / 'config.json'})",
        "grid.n_edits[1]: 500 edits of dataset 'quickstart', which has 455 records (the embedded table",
        "analyses.prefix_robustness.n_edits: 600 edits of dataset 'quickstart', which has 455 records",
    )


@pytest.mark.parametrize("fault, message", [
    (lambda c: c["datasets"]["quickstart"].update(kind="quikstart"),
     "datasets.quickstart.kind: 'quikstart' is not one of ['quickstart', 'counterfact', 'zsre', 'wikirecent']"),
    (lambda c: c["datasets"]["quickstart"].update(keep_knwon=True), "datasets.quickstart.keep_knwon: unknown key"),
    (lambda c: c["datasets"].update(cf={"kind": "counterfact", "schema": "easyedit", "seed": 3}),
     "datasets.cf.seed: unknown key"),
], ids=["unknown kind", "typo", "key of another kind"])
def test_dataset_entry_faults_are_refused_at_start(tmp_path, config, fault, message):
    fault(config)
    assert_refused_at_start(start(tmp_path, config), tmp_path, message)


@pytest.mark.parametrize("fault, message", [
    (lambda c: c["datasets"]["quickstart"].update(at_mots=True), "datasets.quickstart.at_mots: unknown key"),
    (lambda c: c["datasets"]["quickstart"].update(kind="cf"), "datasets.quickstart.kind: 'cf' is not one of"),
    (lambda c: c["datasets"].update(cf={"kind": "counterfact"}), "datasets.cf: 'schema' is a required property"),
    (lambda c: c["models"]["tiny"].update(dtpye="float32"), "models.tiny.dtpye: unknown key"),
    (lambda c: c["models"]["tiny"]["source"].update(pth="x"), "models.tiny.source.pth: unknown key"),
    (lambda c: c["corpora"]["model-sample"].update(doc_token=3), "corpora.model-sample.doc_token: unknown key"),
    (lambda c: c["evaluation"].update(prefix_lne=3), "evaluation.prefix_lne: unknown key"),
    (lambda c: c.update(analyses={"misalignment": {"method": ["eamet"]}}), "analyses.misalignment.method: unknown key"),
])
def test_schema_names_typos_inside_entries(config, fault, message):
    fault(config)
    with pytest.raises(mc.ConfigError) as err:
        mc.validate(config)
    assert message in str(err.value)


def test_schema_dataset_keys_are_the_loaders_keys():
    """The schema's per-kind keys and the loaders' SPEC_KEYS are one list, written twice: they must agree."""
    from massedit.datasets import COMMON_KEYS, REGISTRY

    schema = yaml.safe_load((ROOT / "config" / "schema.yaml").read_text())["$defs"]["dataset"]
    assert set(schema["properties"]) == set(COMMON_KEYS)
    assert set(schema["properties"]["kind"]["enum"]) == set(REGISTRY)
    for branch in schema["allOf"]:
        kind = branch["if"]["properties"]["kind"]["const"]
        assert set(branch["then"]["properties"]) == set(REGISTRY[kind].SPEC_KEYS), kind


def test_valid_config_passes_and_is_fast(config):
    import time

    mc.validate(config)
    started = time.perf_counter()
    preflight.check_config(config)
    assert time.perf_counter() - started < 0.5


# ----------------------------------------------------------------------------------------------------
# What only a job can know, checked there with the same function


def test_model_not_acquired_is_checked_by_its_job(tmp_path, config, model_dir):
    """A model from a package has no depth before acquisition: the parse lets it through, and the job that
    first has the model refuses its layers, naming the key."""
    config["models"]["tiny"]["source"] = {"kind": "pypi_gguf", "package": "llm-tiny==1.0", "file": "tiny.gguf"}
    config["methods"]["eamet"]["models"] = {"tiny": {"layers": [3]}}
    mc.validate(config)
    preflight.check_config(config, tmp_path)
    preflight.check_job(config, model="tiny", method="memit", model_dir=model_dir)  # memit's layers are fine
    with pytest.raises(preflight.PreflightError) as err:
        preflight.check_job(config, model="tiny", method="eamet", model_dir=model_dir)
    assert ("methods.eamet.models.tiny.layers[0]: layer 3 (the z-layer) is not a block of model 'tiny', which has 2"
            in str(err.value))

    # Once acquired (the manifest names the configured source), the parse knows the depth.
    acquired = tmp_path / "resources" / "models" / "tiny"
    shutil.copytree(model_dir, acquired / "hf")
    io.write_json(acquired / "manifest.json", {"source": config["models"]["tiny"]["source"]})
    with pytest.raises(preflight.PreflightError, match=r"methods\.eamet\.models\.tiny\.layers\[0\]: layer 3"):
        preflight.check_config(config, tmp_path)
    # Acquired from another source, the model will be acquired again: its depth is not known yet.
    io.write_json(acquired / "manifest.json", {"source": {"kind": "local", "path": "elsewhere"}})
    preflight.check_config(config, tmp_path)


def test_known_fact_filter_is_checked_by_select_edits(tmp_path, config):
    """With keep_known the parse knows an upper bound only; the batch larger than the known facts fails in
    select_edits, naming the key, and a batch that fits passes."""
    config["datasets"]["quickstart"]["keep_known"] = True
    config["grid"]["n_edits"] = [4, 200]
    mc.validate(config)
    preflight.check_config(config, tmp_path)
    known = tmp_path / "known.jsonl"
    io.write_jsonl(known, [{"case_id": i} for i in range(179)])
    preflight.check_job(config, model="tiny", dataset="quickstart", n=4, records=str(known))
    with pytest.raises(preflight.PreflightError) as err:
        preflight.check_job(config, model="tiny", dataset="quickstart", n=200, records=str(known))
    assert f"grid.n_edits[1]: 200 edits of dataset 'quickstart', which has 179 records ({known})" in str(err.value)
    config["grid"]["n_edits"] = [4, 500]
    with pytest.raises(preflight.PreflightError, match=r"which has 455 records before the known-fact filter"):
        preflight.check_config(config, tmp_path)
    # at_most takes what there is.
    config["datasets"]["quickstart"]["at_most"] = True
    preflight.check_config(config, tmp_path)
    preflight.check_job(config, model="tiny", dataset="quickstart", n=500, records=str(known))


def test_prepared_manifest_gives_the_size_only_for_the_configured_spec(tmp_path, config):
    config["datasets"]["zsre"] = {"kind": "zsre", "source": {"mirror_path": "zsre/other.json"}}
    config["grid"]["datasets"] = ["zsre"]
    mc.validate(config)
    assert preflight.dataset_size(config, "zsre", tmp_path) is None
    manifest = tmp_path / "resources" / "datasets" / "zsre" / "manifest.json"
    io.write_json(manifest, {"spec": mc.dataset_spec(config, "zsre"), "n_records": 6})
    with pytest.raises(preflight.PreflightError, match=rf"grid\.n_edits\[1\]: 8 edits of dataset 'zsre', which has "
                                                        rf"6 records \({re.escape(str(manifest))}\)"):
        preflight.check_config(config, tmp_path)
    io.write_json(manifest, {"spec": {**mc.dataset_spec(config, "zsre"), "facts_per_subject": 2}, "n_records": 6})
    preflight.check_config(config, tmp_path)


def test_pinned_sizes_are_the_sources_sizes():
    """The fixed sizes the parse uses are those the loaders give (from the data mirror)."""
    import os

    from massedit.datasets import prepare_dataset
    from massedit.datasets.quickstart import build_records

    assert preflight.dataset_size({"datasets": {"q": {"kind": "quickstart"}}}, "q", Path("/nonexistent")).value \
        == len(build_records())
    mirror = os.environ.get(MIRROR_ENV)
    if not mirror or not Path(mirror, "zsre").is_dir():
        pytest.skip(f"{MIRROR_ENV} does not point at the data mirror")
    specs = [{"kind": "counterfact", "schema": "easyedit"},
             {"kind": "counterfact", "schema": "memit", "source": "counterfact_500"},
             {"kind": "zsre", "source": "zsre_mend_train_1k"}]
    for spec in specs:
        records, _ = prepare_dataset(spec, mirror, str(Path(mirror) / "nonexistent-downloads"))
        assert preflight.dataset_size({"datasets": {"d": spec}}, "d", Path("/nonexistent")).value == len(records), spec


# ----------------------------------------------------------------------------------------------------
# The table's N


def test_table_n_is_the_number_of_edits_made(tmp_path):
    """A dataset with at_most and fewer records than requested: select_edits edits what there is, and the
    table's N says so next to the requested N."""
    from massedit import steps

    records = tmp_path / "records.jsonl"
    io.write_jsonl(records, [{"case_id": i} for i in range(10)])
    steps.select_edits(str(records), None, {"kind": "quickstart", "at_most": True}, 12, 0,
                       str(tmp_path / "sel.jsonl"), str(tmp_path / "sel.json"))
    made = io.read_json(tmp_path / "sel.json")
    assert (made["n"], made["n_requested"], len(io.read_jsonl(tmp_path / "sel.jsonl"))) == (10, 12, 10)

    summaries = []
    for n, evaluated in ((4, 4), (12, made["n"])):
        for method in ("unedited", "eamet"):
            path = tmp_path / f"{method}-{n}.json"
            io.write_json(path, {"model": "m", "dataset": "d", "method": method, "n_edits": n,
                                 "n_records": evaluated, "rewrite_acc": 50.0})
            summaries.append(str(path))
    steps.make_tables(summaries, str(tmp_path / "main.csv"), str(tmp_path / "main.md"))
    import pandas as pd

    table = pd.read_csv(tmp_path / "main.csv")
    assert list(table["N"]) == [4, 4, 10, 10] and list(table["N requested"]) == [4, 4, 12, 12]
    assert "made fewer than requested" in (tmp_path / "main.md").read_text()
    assert "d: 10 of 12" in (tmp_path / "main.md").read_text()

    steps.make_tables(summaries[:2], str(tmp_path / "full.csv"), str(tmp_path / "full.md"))
    assert "N requested" not in (tmp_path / "full.csv").read_text()
    assert "fewer than requested" not in (tmp_path / "full.md").read_text()


# ----------------------------------------------------------------------------------------------------
# Threads


def model_job_threads(tmp_path: Path, config: dict, *args: str, env: dict | None = None) -> dict[str, set[int]]:
    """rule -> threads of the model jobs a dry run plans (Snakemake prints threads when above 1)."""
    import os

    configfile = tmp_path / "config.yaml"
    configfile.write_text(yaml.safe_dump(config, sort_keys=False))
    cmd = [sys.executable, "-m", "snakemake", "-n", "-d", str(tmp_path / "work"), "-s", str(SNAKEFILE),
           "--configfile", str(configfile), *args]
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**environ, **(env or {})})
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    threads, rule = {}, None
    for line in output.splitlines():
        match = re.fullmatch(r"(?:local)?rule (\w+):", line.strip())
        if match:
            rule = match.group(1)
            threads.setdefault(rule, set()).add(1)
        elif rule and line.strip().startswith("threads:"):
            threads[rule] = {int(line.split(":")[1])}
    return {rule: t for rule, t in threads.items() if rule in {"compute_layer_stats", "optimise_residuals"}}


def test_cluster_job_keeps_the_threads_it_requested(tmp_path, config):
    """On a machine without a GPU a local run gives each model job 1 thread (two at once on 2 cores). A job
    re-run inside a cluster job (--mode remote, the workflow parsed again on the node) takes the CPUs SLURM
    gave it, whatever the node has; without SLURM, the threads a cluster submission asks for."""
    gpu = any(Path(p).exists() for p in ("/dev/nvidia0", "/dev/kfd")) or bool(shutil.which("nvidia-smi"))
    local = model_job_threads(tmp_path, config, "--cores", "4")
    assert local == dict.fromkeys(local, {4 if gpu else 1}) and len(local) == 2, local
    in_slurm = model_job_threads(tmp_path, config, "--cores", "4", "--mode", "remote",
                                 env={"SLURM_CPUS_PER_TASK": "3"})
    assert in_slurm == dict.fromkeys(in_slurm, {3}) and len(in_slurm) == 2, in_slurm
    remote = model_job_threads(tmp_path, config, "--cores", "4", "--mode", "remote")
    assert remote == dict.fromkeys(remote, {4}) and len(remote) == 2, remote


def test_limit_threads_records_the_count(tmp_path):
    """The record tests/test_slurm.py compares with the CPUs SLURM allocated."""
    script = (f"import sys; sys.path.insert(0, {str(ROOT / 'scripts')!r})\n"
              f"from _wiring import limit_threads, redirect_logs\n"
              f"redirect_logs({str(tmp_path / 'job.log')!r}); limit_threads(3)\n")
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    assert re.search(r"torch threads: 3 \(job threads 3, ", (tmp_path / "job.log").read_text())
