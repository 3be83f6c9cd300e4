"""The general-ability task files (reference evaluation.md §1.7): the mirror's JSON copy, else the authors'
pickle downloaded from their repository, checked against its sha256 and converted to the same JSON.

The pickles hold only lists, dicts, str and int. They are read with an unpickler that refuses every class
lookup, so a tampered file fails instead of running code.
"""
from __future__ import annotations

import io as _io
import pickle
from pathlib import Path

from massedit.io import read_json

from .checksums import pinned_sha256
from .sources import mirror_files, resolve_source

_REPO = "https://raw.githubusercontent.com/jianghoucheng/AlphaEdit/f5248d3d25f1b3863bff19c387293d635866079f"
TASKS = ("cola", "mmlu", "mrpc", "nli", "rte", "sst2")


def task_sources(task: str, subdir: str = "glue_eval") -> tuple[dict, dict]:
    """The source specs of a task: the mirror's JSON copy and the authors' pickle. Their checksums are the
    pins of ``glue_eval/<task>.json`` and ``.pkl`` (massedit.datasets.checksums), whatever ``subdir`` the
    mirror keeps them in."""
    if task not in TASKS:
        raise ValueError(f"unknown general-ability task {task!r}; known: {sorted(TASKS)}")
    mirror = {"mirror_path": f"{subdir}/{task}.json", "sha256": pinned_sha256(f"glue_eval/{task}.json")}
    url = {"url": f"{_REPO}/glue_eval/dataset/{task}.pkl", "sha256": pinned_sha256(f"glue_eval/{task}.pkl"),
           "filename": f"glue_{task}.pkl"}
    return mirror, url


def task_mirror_files(task: str, mirror_dir: str | None, subdir: str = "glue_eval") -> list[str]:
    """The mirror file that preparing the task reads, if the mirror holds it: rule prepare_general_task's input."""
    return mirror_files([task_sources(task, subdir)[0]], mirror_dir)


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: the task files hold plain data only")


def load_plain_pickle(path: str | Path):
    with open(path, "rb") as fh:
        return _PlainUnpickler(_io.BytesIO(fh.read())).load()


def prepare_task(task: str, mirror_dir: str | None, download_dir: str, subdir: str = "glue_eval") -> tuple[list, dict]:
    """The task's examples and the provenance of the file they came from."""
    mirror_spec, url_spec = task_sources(task, subdir)
    if task_mirror_files(task, mirror_dir, subdir):
        path, provenance = resolve_source(mirror_spec, mirror_dir, download_dir)
        examples = read_json(path)
    else:
        path, provenance = resolve_source(url_spec, mirror_dir, download_dir)
        examples = load_plain_pickle(path)
    if not isinstance(examples, list) or not examples:
        raise ValueError(f"{path}: expected a non-empty list of examples for task {task!r}")
    return examples, provenance
