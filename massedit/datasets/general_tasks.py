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

from .sources import resolve_source

_REPO = "https://raw.githubusercontent.com/jianghoucheng/AlphaEdit/f5248d3d25f1b3863bff19c387293d635866079f"
# task -> (sha256 of the mirror's JSON, sha256 of the original pickle), from the mirror's PROVENANCE.md
CHECKSUMS = {
    "cola": ("86a2d858366cd57d26422fa9077b6ec863ed4fac6acd770bd82003f2a6a572c8",
             "60647626a1552b7070495ae919603a35ba04474b106d132b47067b7884bb6dc3"),
    "mmlu": ("b6be56e82f025da1918562da09a8545b40a1820738b4f6bd6ebd5d679ac0ff68",
             "fda21bebe7a7cdbaaac856ddb6e214bb78808ab845b64f25c5bf111474c6e715"),
    "mrpc": ("9ac8f96a3bec5bae326117134f0cfb9128f90cd5d9cfc51cd864a07df7b14648",
             "11c20371e9e078397de2c5005d7358649ff7a6e830eac5af05bd232f4113875a"),
    "nli": ("20983a6ba18e2b6421371b0831b7d1d05b62cca0ffd1d833ede8f6ea9d916969",
            "758f03cb511f1e5658648942818e35977998134a8ef35d46f475389b95c7e19b"),
    "rte": ("105f1725a2d89e0eba3247811b10341b96844ab80c745da95395e16921226cef",
            "f7e6b18e88067019e3ca5bddd4c6e54db35542f2822e72b34f7216441508eb84"),
    "sst2": ("6081acf088b682768fe22d7d6c67bea191d30652ac564f2ea5aa69e7cec01af7",
             "e09e2cc85b7182b322012f93951b3c12f5efacd455955675bb9af81433c58b7a"),
}


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: the task files hold plain data only")


def load_plain_pickle(path: str | Path):
    with open(path, "rb") as fh:
        return _PlainUnpickler(_io.BytesIO(fh.read())).load()


def prepare_task(task: str, mirror_dir: str | None, download_dir: str, subdir: str = "glue_eval") -> tuple[list, dict]:
    """The task's examples and the provenance of the file they came from."""
    if task not in CHECKSUMS:
        raise ValueError(f"unknown general-ability task {task!r}; known: {sorted(CHECKSUMS)}")
    json_sha, pkl_sha = CHECKSUMS[task]
    if mirror_dir and (Path(mirror_dir) / subdir / f"{task}.json").is_file():
        path, provenance = resolve_source({"mirror_path": f"{subdir}/{task}.json", "sha256": json_sha},
                                          mirror_dir, download_dir)
        examples = read_json(path)
    else:
        path, provenance = resolve_source({"url": f"{_REPO}/glue_eval/dataset/{task}.pkl", "sha256": pkl_sha,
                                           "filename": f"glue_{task}.pkl"}, mirror_dir, download_dir)
        examples = load_plain_pickle(path)
    if not isinstance(examples, list) or not examples:
        raise ValueError(f"{path}: expected a non-empty list of examples for task {task!r}")
    return examples, provenance
