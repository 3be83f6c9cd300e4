"""Atomic, deterministic file output; checked reads of artefacts; checksums and provenance helpers.

Every artefact the pipeline writes goes through these functions, so an interrupted run never leaves a
half-written file that a later run could mistake for a finished one, the same content always gives the same
bytes (torch archives under a fixed folder name, zip entries with a fixed timestamp, JSON with sorted keys),
and an I/O failure names the file and its cause (no space, permission, corrupt or truncated input) instead of
a library's internal message.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import pickle
import platform
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

# Timestamp of every zip entry written here: the earliest a zip header can hold, as numpy's own savez uses,
# so that two runs of the same job give the same bytes.
ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)


class ArtefactError(Exception):
    """A file the pipeline reads or writes could not be used; the message names the file and what to do."""

    def __init__(self, path: str | os.PathLike, message: str):
        super().__init__(f"{path}: {message}")
        self.path = str(path)


class CorruptArtefactError(ArtefactError, ValueError):
    """An input that cannot be parsed: truncated, bytes flipped, not the expected format."""


class CacheKeyError(ArtefactError, ValueError):
    """A cached artefact computed under other settings than the ones asked for (or carrying no settings)."""

    def __init__(self, path: str | os.PathLike, differences: dict[str, tuple[Any, Any]], advice: str):
        self.differences = differences
        listed = "; ".join(f"{field}: expected {_short(want)}, found {_short(got)}"
                           for field, (want, got) in differences.items())
        super().__init__(path, f"computed under other settings ({listed}). {advice}")


class ArtefactIOError(ArtefactError, OSError):
    """The operating system refused a read or write (no space, permission denied, ...); ``errno`` is kept."""

    def __init__(self, path: str | os.PathLike, code: int | None, message: str):
        ArtefactError.__init__(self, path, message)
        self.errno = code


def rebuild_advice(path: str | os.PathLike, rule: str | None = None) -> str:
    """What to run when ``path`` is bad: delete it, then let Snakemake make it (and what depends on it) again."""
    made_by = f" (rule {rule})" if rule else ""
    return (f"Delete it and rebuild it{made_by} with: rm '{path}' && snakemake --cores all --forcerun '{path}' "
            "(with your usual --configfile/--profile options)")


# ------------------------------------------------------------------------------------------------ errors


def _free_bytes(path: Path) -> int | None:
    for folder in (path.parent, *path.parents):
        try:
            return shutil.disk_usage(folder).free
        except OSError:
            continue
    return None


def _os_error(path: Path, err: OSError, action: str) -> ArtefactIOError:
    code = err.errno
    if code in (errno.ENOSPC, errno.EDQUOT):
        free = _free_bytes(path)
        where = f" ({free / 2**20:.1f} MiB free there)" if free is not None else ""
        return ArtefactIOError(path, code, f"cannot {action}: no space left on the device{where}; "
                                           "free space or point the workflow at a larger disk, then rerun")
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return ArtefactIOError(path, code, f"cannot {action}: permission denied ({err.strerror}); "
                                           "check the file's and its folder's permissions and owner")
    return ArtefactIOError(path, code, f"cannot {action}: {err.strerror or err}")


def _torch_write_failure(path: Path, err: RuntimeError) -> ArtefactIOError:
    """torch's own zip writer reports a failed write as "enforce fail ... unexpected pos" or "PytorchStreamWriter
    failed writing file"; the errno is lost, so a nearly full disk is told apart by its free space."""
    free = _free_bytes(path)
    if free is not None and free < 64 * 2**20:
        return _os_error(path, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), "write it")
    return ArtefactIOError(path, None, f"cannot write it: torch's writer failed ({str(err).splitlines()[0]})")


def _is_torch_write_failure(err: BaseException) -> bool:
    text = str(err)
    return isinstance(err, RuntimeError) and ("PytorchStreamWriter" in text or "unexpected pos" in text
                                              or "file write failed" in text)


@contextlib.contextmanager
def writing(path: str | os.PathLike) -> Iterator[None]:
    """Turn the failures of writing ``path`` into an ArtefactIOError that names it and the cause."""
    path = Path(path)
    try:
        yield
    except (ArtefactError, FileNotFoundError):
        raise
    except OSError as err:
        raise _os_error(path, err, "write it") from err
    except RuntimeError as err:
        if _is_torch_write_failure(err):
            raise _torch_write_failure(path, err) from err
        raise


_CORRUPT = (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, pickle.UnpicklingError, json.JSONDecodeError,
            UnicodeDecodeError)


@contextlib.contextmanager
def reading(path: str | os.PathLike, rule: str | None = None) -> Iterator[None]:
    """Turn the failures of reading ``path`` into errors that name it: ArtefactIOError for what the system
    refused, CorruptArtefactError (with what to run) for content that cannot be parsed."""
    path = Path(path)
    try:
        yield
    except (ArtefactError, FileNotFoundError):  # FileNotFoundError names the file already
        raise
    except OSError as err:
        raise _os_error(path, err, "read it") from err
    except _CORRUPT as err:
        raise CorruptArtefactError(path, f"corrupt or truncated ({type(err).__name__}: {err}). "
                                         f"{rebuild_advice(path, rule)}") from err
    except RuntimeError as err:
        # torch's zip reader: "PytorchStreamReader failed reading zip archive: failed finding central directory"
        if "PytorchStreamReader" in str(err) or "zip archive" in str(err):
            raise CorruptArtefactError(path, f"corrupt or truncated (torch: {str(err).splitlines()[0]}). "
                                             f"{rebuild_advice(path, rule)}") from err
        raise


def check_zip(path: str | os.PathLike, rule: str | None = None) -> None:
    """Read every entry of a zip-based artefact (.npz, .pt) and check its CRC: truncation and flipped bytes
    are caught here, before any numbers are used (torch.load itself does not check)."""
    with reading(path, rule), zipfile.ZipFile(path) as archive:
        bad = archive.testzip()
    if bad is not None:
        raise CorruptArtefactError(path, f"corrupt: entry {bad} fails its CRC check. {rebuild_advice(path, rule)}")


# ------------------------------------------------------------------------------------------------ writes


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only if the block succeeds. Failures
    name ``path`` (not the temporary file) and their cause."""
    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        try:
            yield tmp_path
            if tmp_path.exists():
                os.chmod(tmp_path, 0o644)  # mkstemp creates 0600; outputs are meant to be shared
            os.replace(tmp_path, path)
        finally:
            if tmp_path.exists():
                tmp_path.unlink()


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)


def dumps_json(obj: Any, indent: int | None = 2) -> str:
    """The one JSON form of every artefact: sorted keys, so the bytes depend on content only."""
    return json.dumps(obj, indent=indent, sort_keys=True, default=_json_default)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, dumps_json(obj) + "\n")


def read_json(path: str | os.PathLike, rule: str | None = None) -> Any:
    with reading(path, rule), open(path, encoding="utf-8") as fh:
        text = fh.read()
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise CorruptArtefactError(path, f"invalid JSON at line {err.lineno} column {err.colno}: {err.msg}. "
                                         f"{rebuild_advice(path, rule)}") from err


def write_jsonl(path: str | os.PathLike, rows: Iterable[Any]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(dumps_json(row, indent=None) + "\n")


def read_jsonl(path: str | os.PathLike, rule: str | None = None) -> list[Any]:
    rows = []
    with reading(path, rule), open(path, encoding="utf-8") as fh:
        lines = fh.readlines()
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise CorruptArtefactError(path, f"line {lineno}: invalid JSON: {err.msg}. "
                                             f"{rebuild_advice(path, rule)}") from err
    return rows


def save_npz(path: str | os.PathLike, **arrays: Any) -> None:
    """np.savez's format (uncompressed .npy entries), written with fixed entry timestamps in the given order."""
    import numpy as np

    with atomic_path(path) as tmp, open(tmp, "wb") as fh, \
            zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, value in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=ZIP_DATE_TIME)
            info.external_attr = 0o644 << 16
            with archive.open(info, "w", force_zip64=True) as entry:
                np.lib.format.write_array(entry, np.asanyarray(value), allow_pickle=False)


def load_npz(path: str | os.PathLike, rule: str | None = None) -> dict:
    """Every array of an .npz file, CRC-checked, in memory (pickled objects are refused)."""
    import numpy as np

    with reading(path, rule), np.load(path, allow_pickle=False) as data:
        return {name: data[name] for name in data.files}


def save_torch(path: str | os.PathLike, obj: Any) -> None:
    """torch.save through an open file, so the archive's folder is always "archive" (given a path, torch
    names it after the temporary file)."""
    import torch

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)


def load_torch(path: str | os.PathLike, rule: str | None = None) -> Any:
    """A torch artefact (tensors and plain values only), its zip entries CRC-checked first."""
    import torch

    check_zip(path, rule)
    with reading(path, rule):
        return torch.load(path, weights_only=True, map_location="cpu")


def verify_key(path: str | os.PathLike, found: dict | None, expected: dict, rule: str | None = None) -> None:
    """Refuse a cached artefact whose stored key differs from ``expected`` in any field ``expected`` names."""
    found = found or {}
    differences = {field: (want, found.get(field, "<not recorded>")) for field, want in expected.items()
                   if _canonical(found.get(field, "<not recorded>")) != _canonical(want)}
    if differences:
        raise CacheKeyError(path, differences, rebuild_advice(path, rule))


# ------------------------------------------------------------------------------------------------ hashes


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with reading(path), open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def sha256_json(obj: Any) -> str:
    """Hash of a JSON-serialisable object in canonical form (sorted keys, no whitespace)."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_json_default)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def library_versions() -> dict[str, str]:
    """Versions of the libraries that can change numbers, recorded next to every artefact."""
    versions = {"python": platform.python_version()}
    for name in ("torch", "transformers", "numpy", "gguf", "datasets", "massedit"):
        try:
            module = __import__(name)
            versions[name] = getattr(module, "__version__", "unknown")
        except ImportError:
            continue
    return versions


def _canonical(obj: Any) -> str:
    """Values compared as their canonical JSON (key order and tuples against lists do not matter)."""
    return json.dumps(obj, sort_keys=True, default=_json_default)


def _short(value: Any, limit: int = 120) -> str:
    text = json.dumps(value, sort_keys=True, default=_json_default) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _json_default(obj: Any) -> Any:
    try:
        import numpy as np

        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    except ImportError:
        pass
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
