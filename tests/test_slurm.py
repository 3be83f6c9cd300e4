"""The SLURM profile: what it makes each job ask for, and the tiny workflow run through a real scheduler.

The dry runs need nothing beyond Snakemake. The real run starts a private single-node cluster with
tests/cluster/start.sh, runs the tiny workflow of test_workflow.py through `--profile profiles/slurm`, and
checks that every job not marked local ran as a SLURM job that completed (the GPU steps holding a GPU), that
each model step ran torch with as many threads as CPUs SLURM gave its job, and that the results equal those
of a local run. It needs root and the munge, slurmctld, slurmd and
slurm-client packages (tests/cluster/install.sh). Without them it skips and says why, unless
MASSEDIT_TEST_SLURM_REQUIRE=1 (set by .ci/run once it has installed them) makes that a failure.
"""
from __future__ import annotations

import importlib.util
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from test_workflow import N_EDITS, snakemake, tiny_config

ROOT = Path(__file__).resolve().parents[1]
SNAKEFILE = ROOT / "Snakefile"
PROFILE = ROOT / "profiles" / "slurm"
TEST_PROFILE = ROOT / "tests" / "cluster" / "profile"
CLUSTER = ROOT / "tests" / "cluster"
SHIPPED = ROOT / "config" / "config.yaml"
# The paper grid, once it exists, is checked the same way.
CONFIGS = [p for p in (SHIPPED, ROOT / "config" / "paper.yaml") if p.exists()]

GPU_RULES = {"filter_known", "compute_layer_stats", "optimise_residuals", "edit_model", "evaluate_model",
             "evaluate_prefix_length", "evaluate_general", "null_space_projections", "tune_method"}
MODEL_RULES = GPU_RULES | {"acquire_model", "generate_eval_prefixes"}
# The model steps of the shipped quick start and of the tiny workflow (no known-fact filter there).
QUICKSTART_MODEL_RULES = {"acquire_model", "filter_known", "compute_layer_stats", "generate_eval_prefixes",
                          "optimise_residuals", "edit_model", "evaluate_model"}
TINY_MODEL_RULES = QUICKSTART_MODEL_RULES - {"filter_known"}
LOCAL_RULES = {"all", "prepare_dataset", "select_edits", "make_tables", "plot_scaling", "compare_with_paper"}
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
CLUSTER_RUN_TIMEOUT = 900
# The CPUs a model step asks for under tests/cluster/profile (its max-threads); acquisition asks for 1.
MODEL_STEP_CPUS = 2


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without the caller's cluster settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MASSEDIT_SLURM_")}
    return {**env, **extra}


def parse_jobs(output: str) -> list[dict]:
    """Every job block in Snakemake output: rule, whether local, group, wildcards and resources."""
    jobs, group = [], None
    for line in output.splitlines():
        stripped = line.strip()
        header = re.search(r"Group job (\w+)", line)
        if header:
            group = header.group(1)
            continue
        match = re.fullmatch(r"(local)?rule (\w+):", stripped)
        if match:
            jobs.append({"rule": match.group(2), "local": bool(match.group(1)),
                         "group": group if line.startswith(" ") else None, "wildcards": "", "resources": {},
                         "log": ""})
        elif jobs and stripped.startswith("wildcards:"):
            jobs[-1]["wildcards"] = stripped[len("wildcards:"):].strip()
        elif jobs and stripped.startswith("log:"):
            jobs[-1]["log"] = stripped[len("log:"):].split(" (")[0].strip()
        elif jobs and stripped.startswith("resources:"):
            items = stripped[len("resources:"):].split(", ")
            jobs[-1]["resources"] = dict(item.strip().split("=", 1) for item in items if "=" in item)
    return jobs


def dry_run(workdir: Path, *args: str, env: dict[str, str]) -> list[dict]:
    cmd = [sys.executable, "-m", "snakemake", "-n", "-d", str(workdir), "-s", str(SNAKEFILE),
           "--profile", str(PROFILE), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    return parse_jobs(output)


@pytest.mark.parametrize("configfile", CONFIGS, ids=lambda p: p.name)
def test_profile_requests(tmp_path, configfile):
    """Model steps size their own requests; the GPU steps ask SLURM for one through gres, never --gpus."""
    jobs = dry_run(tmp_path, "--configfile", str(configfile), env=clean_env())
    assert {"acquire_model", "compute_layer_stats", "edit_model", "evaluate_model"} <= {job["rule"] for job in jobs}
    for job in jobs:
        rule, resources = job["rule"], job["resources"]
        if rule not in MODEL_RULES:
            continue
        where = f"{rule} {job['wildcards']}: {resources}"
        # The workstation's `gpu` slot would become --gpus on SLURM.
        assert resources.get("gpu", "0") == "0", where
        assert int(resources["mem_mb"]) >= 4000 and int(resources["runtime"]) >= 15, where
        assert resources.get("gres", "") == ("gpu:1" if rule in GPU_RULES else ""), where
        if rule in ("edit_model", "evaluate_model"):
            assert job["group"] == "edit_and_evaluate", where


def test_requests_follow_model_size_and_cluster_settings(tmp_path):
    """A 7B model asks for memory that holds its weights; partitions, account and gres come from the
    config or the environment (which wins), without touching the profile."""
    shipped = yaml.safe_load(SHIPPED.read_text())
    model = shipped["grid"]["models"][0]
    weights_mb = 7 * 1000 * DTYPE_BYTES[shipped["models"][model].get("dtype", "float32")]
    override = tmp_path / "cluster.yaml"
    override.write_text(yaml.safe_dump({"cluster": {
        "model_params_b": {model: 7}, "gpu_gres": "gpu:a100:1", "account": "from-config"}}))
    env = clean_env(MASSEDIT_SLURM_PARTITION="cpu", MASSEDIT_SLURM_GPU_PARTITION="gpu",
                    MASSEDIT_SLURM_ACCOUNT="from-env")
    jobs = dry_run(tmp_path / "work", "--configfile", str(SHIPPED), str(override), env=env)

    seen = set()
    for job in jobs:
        rule, resources = job["rule"], job["resources"]
        if rule not in MODEL_RULES:
            continue
        seen.add(rule)
        where = f"{rule} {job['wildcards']}: {resources}"
        assert resources["slurm_account"] == "from-env", where
        assert resources["slurm_partition"] == ("gpu" if rule in GPU_RULES else "cpu"), where
        assert resources.get("gres", "") == ("gpu:a100:1" if rule in GPU_RULES else ""), where
        copies = 2 if rule == "edit_model" else 1
        assert int(resources["mem_mb"]) >= copies * weights_mb, where
    assert seen == QUICKSTART_MODEL_RULES


# ----------------------------------------------------------------------------------------------------
# The real cluster


def unavailable(reason: str):
    if os.environ.get("MASSEDIT_TEST_SLURM_REQUIRE") == "1":
        pytest.fail(f"MASSEDIT_TEST_SLURM_REQUIRE=1, but {reason}")
    pytest.skip(reason)


def free_port_pair() -> int:
    """A port whose successor is free too (slurmctld and slurmd), away from the ephemeral range."""
    def free(port):
        with socket.socket() as sock:
            try:
                sock.bind(("0.0.0.0", port))
            except OSError:
                return False
        return True

    for _ in range(100):
        port = random.randrange(20000, 30000)
        if free(port) and free(port + 1):
            return port
    raise RuntimeError("no free pair of ports between 20000 and 30000")


def tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


@pytest.fixture(scope="module")
def slurm_cluster():
    """A running private cluster: (state directory, environment reaching it); stopped afterwards."""
    missing = [name for name in ("munged", "slurmctld", "slurmd") if not Path("/usr/sbin", name).exists()]
    missing += [name for name in ("srun", "sbatch", "squeue", "scontrol", "scancel", "sinfo")
                if shutil.which(name) is None]
    if missing:
        unavailable(f"SLURM is not installed (missing {', '.join(missing)}); "
                    "tests/cluster/install.sh installs it as root")
    if os.geteuid() != 0:
        unavailable("the test cluster's daemons need root (tests/cluster/start.sh)")
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        unavailable("snakemake-executor-plugin-slurm is not installed (pip install -r requirements.txt)")

    # Not under pytest's temporary directories: munged wants every directory on its socket's path
    # searchable by all. MASSEDIT_TEST_SLURM_TMP lets .ci/run find (and stop) what a killed run leaves.
    parent = os.environ.get("MASSEDIT_TEST_SLURM_TMP", "/tmp")
    state = Path(tempfile.mkdtemp(prefix="massedit-slurm-", dir=parent))
    env = clean_env(MASSEDIT_TEST_SLURM_PORT=str(free_port_pair()))
    try:
        try:
            proc = subprocess.run([str(CLUSTER / "start.sh"), str(state)], capture_output=True, text=True,
                                  timeout=120, env=env)
            problem = None if proc.returncode == 0 else \
                f"exit {proc.returncode}:\n{proc.stderr[-4000:]}"
        except subprocess.TimeoutExpired:
            problem = "no answer within 120 s"
        if problem:
            unavailable(f"the test cluster did not start (tests/cluster/start.sh {problem})")
        env.update(SLURM_CONF=str(state / "slurm.conf"), PATH=f"{state / 'bin'}{os.pathsep}{env['PATH']}")
        yield state, env
    finally:
        if (state / "slurm.conf").exists():
            # Jobs left by a failed or timed-out run would outlive the daemons.
            subprocess.run(f"scancel --user=$(id -un); for _ in $(seq 30); do "
                           f"[ -z \"$(squeue -h -o %i)\" ] && break; sleep 1; done",
                           shell=True, env=env, capture_output=True, timeout=60)
        subprocess.run([str(CLUSTER / "stop.sh"), str(state)], capture_output=True, timeout=90)
        shutil.rmtree(state, ignore_errors=True)


def job_keys(output: str, local: bool) -> set[tuple[str, str]]:
    return {(job["rule"], job["wildcards"]) for job in parse_jobs(output) if job["local"] == local}


def comparable(summary: dict) -> dict:
    """A summary without its timings, which are the only values that may differ between runs."""
    return {k: v for k, v in summary.items() if "seconds" not in k and k != "wall_s"}


@pytest.mark.slow
def test_tiny_workflow_through_slurm(slurm_cluster, tmp_path_factory):
    state, env = slurm_cluster
    base = tmp_path_factory.mktemp("slurm-workflow")
    from massedit.testing import save_tiny_model

    model_dir = save_tiny_model(base / "tiny-model", arch="llama", n_layers=2, seed=0, style="gpt2")
    config = tiny_config(model_dir)
    # The size hint only sizes requests (a 7B default would ask for more memory than the test node has).
    config["cluster"] = {"model_params_b": {"tiny": 0.001}}
    configfile = base / "config.yaml"
    configfile.write_text(yaml.safe_dump(config, sort_keys=False))

    local_dir, cluster_dir = base / "local", base / "cluster"
    started = time.monotonic()
    # The local run gives each model step the threads it gets in the cluster: torch's sums depend on the
    # thread count, and the results below are compared exactly.
    same_threads = [f"{rule}={MODEL_STEP_CPUS}" for rule in sorted(TINY_MODEL_RULES - {"acquire_model"})]
    snakemake(local_dir, configfile, "--cores", "2", "--set-threads", *same_threads, "--resources", "gpu=2")
    local_s = time.monotonic() - started

    cmd = [sys.executable, "-m", "snakemake", "-d", str(cluster_dir), "-s", str(SNAKEFILE),
           "--configfile", str(configfile), "--profile", str(PROFILE), "--profile", str(TEST_PROFILE)]
    started = time.monotonic()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=CLUSTER_RUN_TIMEOUT, env=env)
    except subprocess.TimeoutExpired as err:
        # The partial output of a killed run arrives as bytes.
        out = "".join(part.decode(errors="replace") if isinstance(part, bytes) else part
                      for part in (err.stdout or "", err.stderr or ""))
        pytest.fail(f"the SLURM run did not finish within {CLUSTER_RUN_TIMEOUT} s:\n{out[-4000:]}\n"
                    f"--- slurmctld.log\n{tail(state / 'log' / 'slurmctld.log')}")
    cluster_s = time.monotonic() - started
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, \
        f"{output[-6000:]}\n--- slurmctld.log\n{tail(state / 'log' / 'slurmctld.log')}"

    # The scheduler's record, read before MinJobAge (300 s) lets squeue forget the first jobs.
    queue = subprocess.run(["squeue", "--states=all", "-h", "-o", "%i|%T|%b|%k"], capture_output=True,
                           text=True, timeout=60, env=env).stdout
    squeue = {int(i): (st, gres, comment) for i, st, gres, comment in
              (line.split("|", 3) for line in queue.splitlines() if line.strip())}
    controller = (state / "log" / "slurmctld.log").read_text(errors="replace")
    completions = (state / "log" / "jobcomp.log").read_text(errors="replace")

    # Which jobs were local is the workflow's choice, and nothing else ran outside the scheduler.
    assert {rule for rule, _ in job_keys(output, local=True)} == LOCAL_RULES
    remote = job_keys(output, local=False)
    assert {rule for rule, _ in remote} == TINY_MODEL_RULES

    submitted = [int(i) for i in re.findall(r"has been submitted with SLURM jobid (\d+)", output)]
    assert submitted and len(submitted) == len(set(submitted)), output[-4000:]
    # SLURM names each job's log after its id (%j); the job's own Snakemake lists the rules it ran.
    logs = {int(p.stem): p for p in (cluster_dir / ".snakemake" / "slurm_logs").rglob("*.log")}
    assert set(logs) == set(submitted), (sorted(logs), submitted)
    ran_in_slurm = set()
    evidence = []
    threads_seen = {}
    for slurm_id in submitted:
        inside = job_keys(logs[slurm_id].read_text(errors="replace"), local=False)
        assert inside, f"SLURM job {slurm_id} ran no rule: {logs[slurm_id]}"
        ran_in_slurm |= inside
        # Started by the main scheduler or by backfill, which log it differently.
        assert re.search(rf"(sched: Allocate JobId={slurm_id} |Started JobId={slurm_id} in )", controller), \
            (slurm_id, tail(state / "log" / "slurmctld.log", 60))
        assert re.search(rf"_job_complete: JobId={slurm_id} WEXITSTATUS 0\b", controller), slurm_id
        record = re.search(rf"^JobId={slurm_id} .*$", completions, re.M)
        assert record and "JobState=COMPLETED" in record.group(0) and "ExitCode=0:0" in record.group(0), \
            (slurm_id, record and record.group(0))
        # Each model step's torch runs as many threads as CPUs SLURM allocated to its job (the job
        # re-parses the workflow on the node, which must not fall back to the CPU-only local choice).
        cpus = int(re.search(r"\bProcCnt=(\d+)", record.group(0)).group(1))
        for job in parse_jobs(logs[slurm_id].read_text(errors="replace")):
            if job["local"] or job["rule"] not in MODEL_RULES:
                continue
            rule_log = cluster_dir / job["log"]
            recorded = re.findall(r"torch threads: (\d+)", rule_log.read_text(errors="replace"))
            assert recorded, f"{rule_log} records no torch thread count"
            assert {int(t) for t in recorded} == {cpus}, (slurm_id, job["rule"], recorded, cpus)
            threads_seen[job["rule"]] = cpus
        rules = sorted({rule for rule, _ in inside})
        job_state, gres, comment = squeue.get(slurm_id, ("(gone)", "", ""))
        if slurm_id in squeue:
            assert job_state == "COMPLETED" and comment.startswith("rule_"), (slurm_id, squeue[slurm_id])
            assert ("gpu" in gres) == bool(GPU_RULES & set(rules)), (slurm_id, rules, gres)
        evidence.append(f"{slurm_id:>4}  {job_state:<10} {gres:<11} {'+'.join(rules)}")
    assert ran_in_slurm == remote, remote ^ ran_in_slurm
    # The test profile's max-threads lets the model steps ask for 2 CPUs; a job that ran torch on 1 thread
    # whatever it asked for would pass the comparison above only if every request were 1.
    assert threads_seen == {**dict.fromkeys(TINY_MODEL_RULES, MODEL_STEP_CPUS), "acquire_model": 1}, threads_seen
    # squeue still knows the latest jobs (the record above covers the rest).
    assert submitted[-1] in squeue, queue
    print(f"tiny workflow: local run {local_s:.0f} s, SLURM run {cluster_s:.0f} s; SLURM jobs "
          "(id, state, gres, rules):\n" + "\n".join(evidence))

    # Same results as the local run.
    for n in N_EDITS:
        for method in ("unedited", "eamet", "memit"):
            path = f"results/eval/tiny/quickstart/{method}/n{n}/summary.json"
            local = json.loads((local_dir / path).read_text())
            clustered = json.loads((cluster_dir / path).read_text())
            assert comparable(clustered) == comparable(local), path
    for path in ("results/tables/main.csv", "results/tables/main.md"):
        assert (cluster_dir / path).read_text() == (local_dir / path).read_text(), path
