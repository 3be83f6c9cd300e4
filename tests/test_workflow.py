"""End-to-end runs of the workflow on a tiny random model, plus a dry run of the quick-start config.

The tiny run checks the three things a user relies on: the default target produces the table and the
figure, a second invocation has nothing to do, and changing one EAMET hyperparameter reruns only EAMET's
edits and evaluations and the report outputs.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEFILE = ROOT / "Snakefile"
N_EDITS = [4, 8]


def snakemake(workdir: Path, configfile: Path, *args: str, check: bool = True) -> str:
    """Run Snakemake in a subprocess and return stdout and stderr together (its log goes to stderr)."""
    cmd = [sys.executable, "-m", "snakemake", "-d", str(workdir), "-s", str(SNAKEFILE),
           "--configfile", str(configfile), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    output = proc.stdout + proc.stderr
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited {proc.returncode}:\n{output[-6000:]}")
    return output


def job_counts(output: str) -> dict[str, int]:
    """The "Job stats" table of a dry run, as rule -> count (without the total)."""
    counts, in_table = {}, False
    for line in output.splitlines():
        if line.startswith("Job stats:"):
            in_table = True
            continue
        match = re.fullmatch(r"(\w+)\s+(\d+)", line.strip())
        if in_table and match:
            counts[match.group(1)] = int(match.group(2))
        elif in_table and counts and not line.strip():
            break
    counts.pop("total", None)
    return counts


def planned_jobs(output: str) -> list[dict]:
    """The jobs of a dry run: rule, wildcards and reason of each."""
    jobs = []
    for line in output.splitlines():
        match = re.fullmatch(r"(?:local)?rule (\w+):", line.strip())
        if match:
            jobs.append({"rule": match.group(1), "wildcards": {}, "reason": ""})
        elif jobs and line.strip().startswith("wildcards:"):
            pairs = line.strip()[len("wildcards:"):].split(",")
            jobs[-1]["wildcards"] = dict(pair.strip().split("=", 1) for pair in pairs)
        elif jobs and line.strip().startswith("reason:"):
            jobs[-1]["reason"] = line.strip()
    return jobs


def tiny_config(model_dir: Path) -> dict:
    small = {"layers": [0, 1], "v_num_grad_steps": 3,
             "templates": {"seeds": ["The", "It"], "max_new_tokens": 4}}
    return {
        "models": {"tiny": {"source": {"kind": "local", "path": str(model_dir)}, "dtype": "float32",
                            "bos": False}},
        "datasets": {"quickstart": {"kind": "quickstart", "keep_known": False, "seed": 0}},
        "corpora": {"model-sample": {"kind": "model_sample", "doc_tokens": 32}},
        "stats": {"corpus": "model-sample", "n_docs": 16, "maxlen": 32, "batch_tokens": 512},
        "methods": {"eamet": {"defaults": {**small, "top_m": 4}}, "memit": {"defaults": small}},
        "evaluation": {"prefix_len": 5, "n_prefixes": 2, "fluency_max_new_tokens": 8, "batch_size": 8},
        "grid": {"models": ["tiny"], "datasets": ["quickstart"], "methods": ["eamet", "memit"],
                 "n_edits": N_EDITS},
    }


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A complete run of the default target; returns (workdir, config dict)."""
    from massedit.testing import save_tiny_model

    workdir = tmp_path_factory.mktemp("workflow")
    model_dir = save_tiny_model(workdir / "tiny-model", arch="llama", n_layers=2, seed=0, style="gpt2")
    config = tiny_config(model_dir)
    configfile = workdir / "config.yaml"
    configfile.write_text(yaml.safe_dump(config, sort_keys=False))
    # Start-up dominates the tiny model's jobs, so run two single-threaded jobs at once instead of one
    # job with two threads (the default profile allows one model job at a time).
    snakemake(workdir, configfile, "--cores", "2", "--max-threads", "1", "--resources", "gpu=2")
    return workdir, config


def test_run_produces_table_and_figure(finished_run):
    workdir, _ = finished_run
    for path in ("results/tables/main.csv", "results/tables/main.md", "results/figures/scaling.png"):
        assert (workdir / path).stat().st_size > 0, path
    for n in N_EDITS:
        for method in ("unedited", "eamet", "memit"):
            assert (workdir / f"results/eval/tiny/quickstart/{method}/n{n}/summary.json").exists()


def test_unedited_model_is_evaluated_once_per_dataset(finished_run):
    """Smaller batches of the unedited model take the head of the largest batch's evaluation."""
    from massedit import io

    workdir, _ = finished_run
    base = workdir / "results/eval/tiny/quickstart/unedited"
    largest = io.read_jsonl(base / f"n{max(N_EDITS)}/records.jsonl")
    assert "head_of" not in io.read_json(base / f"n{max(N_EDITS)}/summary.json")
    for n in N_EDITS[:-1]:
        summary = io.read_json(base / f"n{n}/summary.json")
        assert summary["head_of"].endswith(f"unedited/n{max(N_EDITS)}/records.jsonl")
        assert summary["n_records"] == n and summary["n_edits"] == n
        assert io.read_jsonl(base / f"n{n}/records.jsonl") == largest[:n]


def test_second_run_has_nothing_to_do(finished_run):
    workdir, _ = finished_run
    output = snakemake(workdir, workdir / "config.yaml", "-n", "--cores", "1")
    assert "Nothing to be done" in output, output[-3000:]


def test_batch_sizes_rerun_nothing(finished_run):
    """Batch sizes change only speed and memory; lowering them after an out-of-memory error keeps results."""
    workdir, config = finished_run
    changed = yaml.safe_load(yaml.safe_dump(config))
    changed["stats"]["batch_tokens"] = 64
    changed["evaluation"]["batch_size"] = 1
    configfile = workdir / "config-batches.yaml"
    configfile.write_text(yaml.safe_dump(changed, sort_keys=False))
    output = snakemake(workdir, configfile, "-n", "--cores", "1")
    assert "Nothing to be done" in output, output[-3000:]


def test_one_eamet_hyperparameter_reruns_only_eamet(finished_run):
    workdir, config = finished_run
    changed = yaml.safe_load(yaml.safe_dump(config))
    changed["methods"]["eamet"]["defaults"]["kl_factor"] = 0.125
    configfile = workdir / "config-changed.yaml"
    configfile.write_text(yaml.safe_dump(changed, sort_keys=False))

    output = snakemake(workdir, configfile, "-n", "--cores", "1")
    planned = job_counts(output)
    planned.pop("all", None)
    # One residual file (the largest batch) serves both batch sizes.
    assert planned == {"optimise_residuals": 1, "edit_model": len(N_EDITS), "evaluate_model": len(N_EDITS),
                       "make_tables": 1, "plot_scaling": 1, "compare_with_paper": 1}, planned
    jobs = planned_jobs(output)
    assert {job["wildcards"].get("method") for job in jobs if job["rule"] in ("edit_model", "evaluate_model")} \
        == {"eamet"}
    # The residual step's parameters changed; the edits follow from its new output.
    assert all("Params have changed" in job["reason"] for job in jobs if job["rule"] == "optimise_residuals")
    assert all("optimise_residuals" in job["reason"] or "residuals.pt" in job["reason"]
               or "Params have changed" in job["reason"] for job in jobs if job["rule"] == "edit_model")


def test_quickstart_config_dry_run(tmp_path):
    """The shipped config plans the expected jobs; one statistics file serves both methods."""
    output = snakemake(tmp_path, ROOT / "config" / "config.yaml", "-n", "--cores", "1")
    assert job_counts(output) == {
        "acquire_model": 1, "prepare_dataset": 1, "filter_known": 1, "select_edits": 2, "compute_layer_stats": 1,
        "generate_eval_prefixes": 1, "optimise_residuals": 2, "edit_model": 4, "evaluate_model": 6,
        "make_tables": 1, "plot_scaling": 1, "compare_with_paper": 1, "all": 1,
    }
    stats = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())["stats"]
    expected = f"resources/stats/smollm2-135m/model-sample/L3-4_d{stats['n_docs']}_t{stats['maxlen']}_float32.npz"
    assert expected in output


def test_statistics_are_shared_through_the_between_workflow_cache(finished_run, tmp_path):
    """A second checkout with the same settings restores the statistics from the cache instead of
    recomputing them (README: sharing the statistics between runs and users)."""
    import os

    workdir, _ = finished_run
    env = {**os.environ, "SNAKEMAKE_OUTPUT_CACHE": str(tmp_path / "cache")}
    (tmp_path / "cache").mkdir()
    outputs = []
    for name in ("first", "second"):
        target = tmp_path / name
        target.mkdir()
        cmd = [sys.executable, "-m", "snakemake", "-d", str(target), "-s", str(SNAKEFILE),
               "--configfile", str(workdir / "config.yaml"), "--cores", "1",
               "--until", "compute_layer_stats", "--cache", "compute_layer_stats"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
        outputs.append(proc.stdout + proc.stderr)
    stats = sorted((tmp_path / "second" / "resources" / "stats").rglob("*.npz"))
    # restored from the cache as links into it, not recomputed
    assert stats and all(path.is_symlink() and str(path.resolve()).startswith(str(tmp_path / "cache"))
                         for path in stats), stats
