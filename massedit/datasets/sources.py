"""Where a data file comes from: the offline mirror when it holds the file, else its canonical URL.

A source spec is a dict with these keys (at least one of ``mirror_path`` and ``url``):

``mirror_path``  path relative to the mirror directory (config key ``mirror_dir``, or MASSEDIT_MIRROR)
``url``          canonical download URL (http(s):// or file://)
``sha256``       expected checksum; default: the pin of ``mirror_path`` in massedit.datasets.checksums
``filename``     name of the downloaded copy in the download directory (default: the URL's last part)

Hosts of the canonical files publish no checksums, so every known sha256 is pinned in the package
(``pinned_sha256.tsv``) and a file from either origin that does not match is refused, never warned about.
A spec without any checksum (a file nobody has pinned) is accepted and its sha256 recorded.
"""
from __future__ import annotations

import logging
import os
import shutil
import urllib.parse
import urllib.request
from pathlib import Path

from massedit.io import atomic_path

from .checksums import ChecksumError, file_sha256, pinned_sha256, restore_advice, verify

log = logging.getLogger(__name__)

MIRROR_ENV = "MASSEDIT_MIRROR"
SOURCE_KEYS = frozenset({"mirror_path", "url", "sha256", "filename"})
DOWNLOAD_TIMEOUT_S = 60

__all__ = ["ChecksumError", "effective_mirror_dir", "expected_sha256", "mirror_files", "named_source",
           "pinned_source", "resolve_named_source", "resolve_source"]


def effective_mirror_dir(configured: str | None) -> str | None:
    """The mirror directory to use: MASSEDIT_MIRROR overrides the config's ``mirror_dir``."""
    return os.environ.get(MIRROR_ENV) or configured or None


def expected_sha256(spec: dict) -> str | None:
    """The checksum a source spec's file must have: its own ``sha256``, else the pin of its mirror path."""
    given = spec.get("sha256")
    pinned = pinned_sha256(spec["mirror_path"]) if spec.get("mirror_path") else None
    if given and pinned and given.lower() != pinned:
        raise ValueError(f"source spec {spec!r}: sha256 {given} contradicts the pinned sha256 {pinned} of "
                         f"mirror file {spec['mirror_path']!r}; drop 'sha256' or point 'mirror_path' elsewhere")
    chosen = given or pinned
    return chosen.lower() if chosen else None


def mirror_files(specs: list[dict], mirror_dir: str | None) -> list[str]:
    """The mirror files that ``resolve_source`` would read for these specs (those present now): the inputs
    of the job that reads them. A file the job downloads instead is its output, never an input."""
    if not mirror_dir:
        return []
    found = (Path(mirror_dir) / s["mirror_path"] for s in specs if s.get("mirror_path"))
    return [str(path) for path in found if path.is_file()]


def resolve_source(spec: dict, mirror_dir: str | None, download_dir: str) -> tuple[Path, dict]:
    """Return the local path of the file described by ``spec`` and its provenance
    ``{path, origin: "mirror"|"url", url, sha256, bytes, verified}`` (sha256 is the file's actual checksum,
    verified when the spec or the pin table gives one)."""
    unknown = sorted(set(spec) - SOURCE_KEYS)
    if unknown:
        raise ValueError(f"source spec {spec!r}: unknown key(s) {unknown}; allowed: {sorted(SOURCE_KEYS)}")
    mirror_path, url = spec.get("mirror_path"), spec.get("url")
    if not mirror_path and not url:
        raise ValueError(f"source spec {spec!r}: needs 'mirror_path' or 'url'")
    expected = expected_sha256(spec)

    tried = []
    if mirror_path and mirror_dir:
        candidate = Path(mirror_dir) / mirror_path
        if candidate.is_file():
            # a wrong file in the mirror is a broken mirror: fail rather than silently download
            verify(candidate, expected, restore_advice(mirror_path, url))
            return candidate, _provenance(candidate, "mirror", url, expected)
        tried.append(f"mirror file {candidate} does not exist")
    elif mirror_path:
        tried.append(f"no mirror configured, so mirror path {mirror_path!r} was not tried")

    if url:
        dest = Path(download_dir) / (spec.get("filename") or _url_name(url))
        if dest.is_file():
            if expected is None or file_sha256(dest) == expected:
                log.info("reusing downloaded %s", dest)
                return dest, _provenance(dest, "url", url, expected)
            log.warning("%s differs from the pinned sha256 %s; downloading it again", dest, expected)
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


def pinned_source(mirror_path: str, url: str | None) -> dict:
    """A source spec for a file the package pins: its checksum comes from the pin table."""
    sha256 = pinned_sha256(mirror_path)
    if sha256 is None:
        raise KeyError(f"{mirror_path!r} has no pinned sha256 in massedit/datasets/pinned_sha256.tsv")
    return {"mirror_path": mirror_path, **({"url": url} if url else {}), "sha256": sha256}


def named_source(source: str | dict, known: dict[str, dict], kind: str) -> dict:
    """A dataset spec's ``source``: a source spec, or the name of one in ``known``."""
    if isinstance(source, str):
        if source not in known:
            raise ValueError(f"{kind} spec: unknown source name {source!r}; "
                             f"known: {sorted(known)}, or give a source spec")
        return known[source]
    return source


def resolve_named_source(source: str | dict, known: dict[str, dict], kind: str, mirror_dir: str | None,
                         download_dir: str) -> tuple[Path, dict]:
    """``resolve_source`` for a dataset spec's ``source``: a source spec, or the name of one in ``known``."""
    return resolve_source(named_source(source, known, kind), mirror_dir, download_dir)


def _provenance(path: Path, origin: str, url: str | None, expected: str | None) -> dict:
    return {"path": str(path), "origin": origin, "url": url, "sha256": file_sha256(path),
            "bytes": path.stat().st_size, "verified": expected is not None}


def _download(url: str, dest: Path, expected: str | None) -> None:
    log.info("downloading %s -> %s", url, dest)
    # atomic_path renames the .part file onto dest only after the checksum passed
    with atomic_path(dest) as tmp:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as resp, open(tmp, "wb") as fh:
            shutil.copyfileobj(resp, fh, 1 << 20)
        actual = file_sha256(tmp)
        if expected is not None and actual != expected:
            raise ChecksumError(f"{dest.name} downloaded from {url}: sha256 mismatch: expected {expected}, "
                                f"found {actual}. The download was discarded; check the URL (the pinned "
                                "file is the one in the data mirror's PROVENANCE.md), or try again later.")


def _url_name(url: str) -> str:
    name = Path(urllib.parse.urlparse(url).path).name
    if not name:
        raise ValueError(f"cannot derive a file name from URL {url!r}; set 'filename' in the source spec")
    return name
