"""Software environments: the per-step conda files and requirements.txt cannot drift apart, and every
rule declares its environment and log."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ENV_FILES = sorted((ROOT / "envs").glob("*.yaml"))
# Needed to drive and test the workflow, not inside any step's environment.
HOST_ONLY = {"snakemake", "pytest",
             "snakemake-executor-plugin-slurm", "snakemake-executor-plugin-slurm-jobstep"}


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_pins() -> dict[str, str]:
    """requirements.txt as normalised name -> version specifier."""
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)(\[[^\]]*\])?\s*(.*)", line)
        assert match, f"unparsable requirement {line!r}"
        pins[normalise(match.group(1))] = match.group(3).replace(" ", "")
    return pins


def env_pip_pins(path: Path) -> dict[str, str]:
    env = yaml.safe_load(path.read_text())
    pip = [dep["pip"] for dep in env["dependencies"] if isinstance(dep, dict) and "pip" in dep]
    pins = {}
    for line in (pip[0] if pip else []):
        name, _, version = line.partition("==")
        assert version, f"{path.name}: {line!r} is not pinned with =="
        pins[normalise(name)] = "==" + version
    return pins


def test_env_files_exist():
    assert {p.name for p in ENV_FILES} >= {"data.yaml", "model.yaml", "editing.yaml", "report.yaml"}


@pytest.mark.parametrize("path", ENV_FILES, ids=lambda p: p.name)
def test_env_file_parses_and_pins_python(path):
    env = yaml.safe_load(path.read_text())
    assert env["channels"] == ["conda-forge", "nodefaults"]
    assert "python=3.11" in env["dependencies"] and "pip" in env["dependencies"]
    assert env_pip_pins(path), f"{path.name} pins no pip packages"


@pytest.mark.parametrize("path", ENV_FILES, ids=lambda p: p.name)
def test_env_pins_agree_with_requirements(path):
    requirements = requirement_pins()
    for name, pin in env_pip_pins(path).items():
        assert requirements.get(name) == pin, f"{path.name}: {name}{pin} vs requirements.txt {requirements.get(name)}"


def test_requirements_are_the_union_of_envs():
    in_envs = set().union(*(env_pip_pins(p) for p in ENV_FILES))
    extra = set(requirement_pins()) - in_envs - HOST_ONLY
    assert not extra, f"requirements.txt pins packages no environment uses: {sorted(extra)}"
    assert "-e ." in (ROOT / "requirements.txt").read_text().splitlines()


def test_every_rule_has_conda_and_log(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--lint", "-s", str(ROOT / "Snakefile"), "-d", str(tmp_path),
         "--configfile", str(ROOT / "config" / "config.yaml")],
        capture_output=True, text=True, timeout=300,
    )
    output = proc.stdout + proc.stderr
    assert "Traceback" not in output, output
    for finding in ("No log directive defined", "Specify a conda environment or container"):
        assert finding not in output, output
    assert "Congratulations" in output or "Lints for" in output, output  # the linter did run
