"""The pinned sha256 of every data file the project reads, and the check every read goes through.

``pinned_sha256.tsv`` (beside this module) was transcribed once from the data mirror's PROVENANCE.md: one
row per file, keyed by its path relative to the mirror directory. A file the table pins is refused when
its bytes differ; a file it does not pin (a user's own corpus or dataset file) is accepted and its sha256
recorded by the caller, marked ``verified: false``.

Hashing a few MB takes milliseconds, but a process may read the same file several times (the workflow's
input functions, the loaders), so a file's digest is remembered for its (path, mtime, size).
"""
from __future__ import annotations

import csv
import os
from functools import lru_cache
from importlib import resources
from pathlib import Path

from massedit.io import sha256_file

TABLE = "pinned_sha256.tsv"


class ChecksumError(ValueError):
    """A file's sha256 differs from the pinned value."""


@lru_cache(maxsize=1)
def pins() -> dict[str, str]:
    """Mirror-relative path -> pinned sha256."""
    text = resources.files(__package__).joinpath(TABLE).read_text(encoding="utf-8")
    rows = csv.DictReader((line for line in text.splitlines() if not line.startswith("#")), delimiter="\t")
    return {row["path"]: row["sha256"].lower() for row in rows}


def pinned_sha256(mirror_path: str) -> str | None:
    """The pinned sha256 of the file at ``mirror_path`` (relative to the mirror), or None if unpinned."""
    return pins().get(Path(mirror_path).as_posix())


def mirror_relative(path: str | os.PathLike, mirror_dir: str | None) -> str | None:
    """``path`` relative to the mirror directory when it lies inside it, else None."""
    if not mirror_dir:
        return None
    try:
        return Path(path).resolve().relative_to(Path(mirror_dir).resolve()).as_posix()
    except ValueError:
        return None


_digests: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of the file, computed once per (path, mtime, size) in this process."""
    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_mtime_ns, st.st_size)
    if key not in _digests:
        _digests[key] = sha256_file(path)
    return _digests[key]


def verify(path: str | os.PathLike, expected: str | None, remedy: str) -> str:
    """The file's sha256, after checking it against ``expected`` (no check when None). A mismatch raises
    ``ChecksumError`` naming the file, both checksums and ``remedy`` (what the user should do)."""
    actual = file_sha256(path)
    if expected is not None and actual != expected.lower():
        raise ChecksumError(f"{path}: sha256 mismatch: expected {expected.lower()}, found {actual}. "
                            f"The file is not the pinned copy (damaged or replaced). {remedy}")
    return actual


def restore_advice(mirror_path: str | None = None, url: str | None = None) -> str:
    """What to do about a refused file: restore the mirror copy and/or download it again."""
    steps = []
    if mirror_path:
        steps.append(f"restore <mirror>/{mirror_path} from the mirror's source (its PROVENANCE.md names "
                     "the repository, commit and sha256)")
    if url:
        steps.append(f"delete it and let the workflow download it again from {url}")
    return ("To fix: " + ", or ".join(steps) + ".") if steps else "To fix: replace it with the original file."
