"""Plumbing shared by the rule scripts: where their output goes and how many threads torch may use."""
import logging
import os
import sys


def redirect_logs(path: str) -> None:
    """Send stdout, stderr and logging to the rule's log file, first thing in every script.

    The file descriptors are redirected too, so messages from native code and child processes (pip,
    tokenizers, torch) land in the log instead of interleaving on the terminal.
    """
    fh = open(path, "w", buffering=1, encoding="utf-8")
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fh.fileno(), 1)
    os.dup2(fh.fileno(), 2)
    sys.stdout = sys.stderr = fh
    logging.basicConfig(
        level=logging.INFO, stream=fh, force=True, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def console_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def limit_threads(threads: int) -> None:
    """Torch's intra-op threads: the job's own (Snakemake's ``threads``, which a cluster job requested)."""
    import torch

    torch.set_num_threads(max(1, int(threads)))
    # The job's record of what it ran with; tests/test_slurm.py compares it with the CPUs SLURM allocated.
    logging.getLogger("massedit.threads").info(
        "torch threads: %d (job threads %s, SLURM_CPUS_PER_TASK %s)", torch.get_num_threads(), threads,
        os.environ.get("SLURM_CPUS_PER_TASK", "unset"))
