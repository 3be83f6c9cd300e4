"""Where a data file comes from: the offline mirror when it holds the file, else its canonical URL.

A source spec is a dict with these keys (at least one of ``mirror_path`` and ``url``):

``mirror_path``  path relative to the mirror directory (config key ``mirror_dir``, or MASSEDIT_MIRROR)
``url``          canonical download URL (http(s):// or file://)
``sha256``       expected checksum; a file from either origin that does not match is rejected
``filename``     name of the downloaded copy in the download directory (default: the URL's last part)

Hosts of the canonical files publish no checksums, so every known sha256 is pinned in the specs and a
mismatch is an error, never a warning.
"""
from __future__ import annotations

import logging
import os
import shutil
import urllib.parse
import urllib.request
from pathlib import Path

from massedit.io import atomic_path, sha256_file

log = logging.getLogger(__name__)

MIRROR_ENV = "MASSEDIT_MIRROR"
SOURCE_KEYS = frozenset({"mirror_path", "url", "sha256", "filename"})
DOWNLOAD_TIMEOUT_S = 60


class ChecksumError(ValueError):
    """A file's sha256 differs from the pinned value."""


def effective_mirror_dir(configured: str | None) -> str | None:
    """The mirror directory to use: MASSEDIT_MIRROR overrides the config's ``mirror_dir``."""
    return os.environ.get(MIRROR_ENV) or configured or None


def resolve_source(spec: dict, mirror_dir: str | None, download_dir: str) -> tuple[Path, dict]:
    """Return the local path of the file described by ``spec`` and its provenance
    ``{path, origin: "mirror"|"url", url, sha256, bytes}`` (sha256 is the file's actual checksum)."""
    unknown = sorted(set(spec) - SOURCE_KEYS)
    if unknown:
        raise ValueError(f"source spec {spec!r}: unknown key(s) {unknown}; allowed: {sorted(SOURCE_KEYS)}")
    mirror_path, url, expected = spec.get("mirror_path"), spec.get("url"), spec.get("sha256")
    if not mirror_path and not url:
        raise ValueError(f"source spec {spec!r}: needs 'mirror_path' or 'url'")
    if expected is not None:
        expected = expected.lower()

    tried = []
    if mirror_path and mirror_dir:
        candidate = Path(mirror_dir) / mirror_path
        if candidate.is_file():
            # a wrong file in the mirror is a broken mirror: fail rather than silently download
            return candidate, _provenance(candidate, "mirror", url, expected)
        tried.append(f"mirror file {candidate} does not exist")
    elif mirror_path:
        tried.append(f"no mirror configured, so mirror path {mirror_path!r} was not tried")

    if url:
        dest = Path(download_dir) / (spec.get("filename") or _url_name(url))
        if dest.is_file() and (expected is None or sha256_file(dest) == expected):
            log.info("reusing downloaded %s", dest)
            return dest, _provenance(dest, "url", url, expected)
        try:
            _download(url, dest, expected)
        except OSError as err:  # URLError, HTTPError and socket errors are all OSErrors
            tried.append(f"download from {url} failed: {err}")
        else:
            return dest, _provenance(dest, "url", url, expected)
    else:
        tried.append("no URL given")

    name = mirror_path or _url_name(url)
    raise FileNotFoundError(
        f"could not obtain data file {name!r}: " + "; ".join(tried) + ". "
        f"Put the file under a mirror directory and set the config key 'mirror_dir' or the "
        f"{MIRROR_ENV} environment variable to that directory"
        + (f" (the file must be at <mirror>/{mirror_path})" if mirror_path else "")
        + ", or make the URL reachable."
    )


def resolve_named_source(source: str | dict, known: dict[str, dict], kind: str, mirror_dir: str | None,
                         download_dir: str) -> tuple[Path, dict]:
    """``resolve_source`` for a dataset spec's ``source``: a source spec, or the name of one in ``known``."""
    if isinstance(source, str):
        if source not in known:
            raise ValueError(f"{kind} spec: unknown source name {source!r}; "
                             f"known: {sorted(known)}, or give a source spec")
        source = known[source]
    return resolve_source(source, mirror_dir, download_dir)


def _provenance(path: Path, origin: str, url: str | None, expected: str | None) -> dict:
    actual = sha256_file(path)
    _check(path, expected, actual)
    return {"path": str(path), "origin": origin, "url": url, "sha256": actual, "bytes": path.stat().st_size}


def _check(path: Path, expected: str | None, actual: str) -> None:
    if expected is not None and actual != expected:
        raise ChecksumError(f"{path}: sha256 mismatch: expected {expected}, actual {actual}")


def _download(url: str, dest: Path, expected: str | None) -> None:
    log.info("downloading %s -> %s", url, dest)
    # atomic_path renames the .part file onto dest only after the checksum passed
    with atomic_path(dest) as tmp:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as resp, open(tmp, "wb") as fh:
            shutil.copyfileobj(resp, fh, 1 << 20)
        actual = sha256_file(tmp)
        if expected is not None and actual != expected:
            raise ChecksumError(f"{dest.name} downloaded from {url}: sha256 mismatch: "
                                f"expected {expected}, actual {actual}")


def _url_name(url: str) -> str:
    name = Path(urllib.parse.urlparse(url).path).name
    if not name:
        raise ValueError(f"cannot derive a file name from URL {url!r}; set 'filename' in the source spec")
    return name
