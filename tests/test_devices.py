"""Device placement: the model jobs load the model on the configured device (model setting ``device``, "auto"
by default) and every step feeds the model tensors on that device, while what they save is on the CPU.

Without a GPU the pipeline checks run on the CPU only, where every tensor is on the one device; on a machine
with CUDA they also run with ``device: cuda``, where a tensor left on the CPU fails the checks (or torch)."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from massedit import config as mc
from massedit import io, models, steps
from massedit.architectures import arch_for, get_module
from massedit.datasets.quickstart import build_records
from massedit.editing.sharing import residual_hparams
from massedit.testing import save_tiny_model

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]
ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------ the model setting


@pytest.fixture
def captured_devices(monkeypatch):
    """The ``device`` each ``steps._load`` passes to ``load_model`` (which loads nothing here)."""
    seen = []

    def fake_load(model_dir, dtype="float32", device="cpu"):
        seen.append(device)
        return None, None

    monkeypatch.setattr(models, "load_model", fake_load)
    return seen


def test_auto_is_the_cpu_without_cuda(captured_devices, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for cfg in ({"device": "auto"}, {}, {"device": "cpu"}):  # {}: a model entry from before the setting
        steps._load("unused", {"dtype": "float32", **cfg})
    assert captured_devices == ["cpu", "cpu", "cpu"]
    with pytest.raises(RuntimeError, match="no CUDA device"):
        steps._load("unused", {"device": "cuda"})


def test_auto_is_cuda_when_available(captured_devices, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for cfg in ({"device": "auto"}, {}, {"device": "cuda"}, {"device": "cpu"}):
        steps._load("unused", cfg)
    assert captured_devices == ["cuda", "cuda", "cuda", "cpu"]


def test_schema_default_is_auto():
    cfg = mc.load_config(ROOT / "config" / "config.yaml")
    assert all(spec["device"] == "auto" for spec in cfg["models"].values())
    cfg["models"]["smollm2-135m"]["device"] = "tpu"
    with pytest.raises(mc.ConfigError, match="device"):
        mc.validate(cfg)


# ------------------------------------------------------------------------------------------- the steps


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            yield from _tensors(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _tensors(item)


def _watch(model, calls: Counter) -> None:
    """Pre-hooks asserting that every tensor reaching the model, its input embeddings or a decoder layer is on
    the device of the input embeddings (the prefix-cached residual forward calls the layers directly)."""
    device = model.get_input_embeddings().weight.device

    def check(name):
        def hook(_module, args, kwargs):
            for tensor in _tensors((args, kwargs)):
                assert tensor.device == device, f"{name}: a tensor on {tensor.device}, the model is on {device}"
            calls[name] += 1
        return hook

    model.register_forward_pre_hook(check("model"), with_kwargs=True)
    model.get_input_embeddings().register_forward_pre_hook(check("embedding"), with_kwargs=True)
    for layer in get_module(model, arch_for(model).layers):
        layer.register_forward_pre_hook(check("layer"), with_kwargs=True)


@pytest.fixture
def watched(monkeypatch):
    """Every model ``steps._load`` loads gets the device checks; returns (devices loaded on, hook calls)."""
    real = models.load_model
    loaded, calls = [], Counter()

    def load(model_dir, dtype="float32", device="cpu"):
        model, tokenizer = real(model_dir, dtype=dtype, device=device)
        assert model.get_input_embeddings().weight.device.type == torch.device(device).type
        _watch(model, calls)
        loaded.append(device)
        return model, tokenizer

    monkeypatch.setattr(models, "load_model", load)
    return loaded, calls


SMALL = {"v_num_grad_steps": 3, "templates": {"seeds": ["The", "It"], "max_new_tokens": 4}}


def _hparams(method: str, **overrides) -> dict:
    """The CPU config's settings of ``method``, shrunk to the two-layer tiny model."""
    hp = mc.resolve_hparams(mc.load_config(ROOT / "config" / "cpu.yaml"), method, "smollm2-135m")
    if method == "rome":
        hp.update(layers=[1], v_num_grad_steps=3, templates={"lengths": [[3, 2]], "top_k": 5})
    elif method == "ft":
        hp.update(layers=[1], num_steps=2)
    else:
        hp.update(layers=[0, 1], **SMALL)
    if method == "eamet":
        hp["top_m"] = 4
    return {**hp, **overrides}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A tiny model directory and three quick-start records."""
    root = tmp_path_factory.mktemp("devices")
    model_dir = save_tiny_model(root / "model", arch="llama", n_layers=2, seed=0, style="gpt2")
    io.write_jsonl(root / "records.jsonl", build_records(0)[:3])
    return root, str(model_dir)


def _cfg(device: str) -> dict:
    return {"dtype": "float32", "bos": False, "device": device}


def _stats(root, model_dir, device) -> str:
    out = root / f"stats-{device}.npz"
    if not out.exists():
        steps.compute_stats(model_dir, _cfg(device), [0, 1], "model-sample", {"kind": "model_sample", "doc_tokens": 16},
                            {"n_docs": 8, "maxlen": 16, "dtype": "float32", "batch_tokens": 128}, None, 0, str(out),
                            str(out.with_suffix(".json")))
    return str(out)


def _saved_on_cpu(path: str) -> None:
    saved = torch.load(path, weights_only=True)  # no map_location: a CUDA tensor would stay on CUDA
    tensors = list(_tensors(saved))
    assert tensors and all(t.device.type == "cpu" for t in tensors), path


@pytest.mark.parametrize("device", DEVICES)
def test_eamet_and_memit_steps_keep_tensors_on_the_model_device(workdir, watched, device):
    """Statistics, prefixes, the known-fact filter, MEMIT's shared residual file and edit, EAMET's edit, and the
    evaluation of the unedited and the edited model, as the workflow's rules run them."""
    root, model_dir = workdir
    loaded, calls = watched
    cfg, records = _cfg(device), str(root / "records.jsonl")
    stats = _stats(root, model_dir, device)
    data = np.load(stats)
    assert int(data["count"]) > 0 and np.isfinite(data["sum_1"]).all()
    steps.generate_prefixes(model_dir, cfg, 4, 2, 0, str(root / f"prefixes-{device}.json"))
    steps.filter_known(records, model_dir, cfg, str(root / f"known-{device}.jsonl"), str(root / f"known-{device}.json"))

    memit = _hparams("memit")
    residuals = str(root / f"memit-residuals-{device}.pt")
    steps.optimise_residuals("memit", residual_hparams(memit), model_dir, cfg, records, 0, residuals)
    _saved_on_cpu(residuals)
    outputs = {}
    for method, hp, shared in (("eamet", _hparams("eamet"), None), ("memit", memit, residuals)):
        out = {k: str(root / f"{method}-{device}.{k}") for k in ("pt", "npz", "json")}
        steps.edit_model(method, hp, model_dir, cfg, records, stats, 0, out["pt"], out["npz"], out["json"],
                         residuals=shared)
        _saved_on_cpu(out["pt"])
        assert np.load(out["npz"])["z_keys"].shape[0] == 3
        assert all(n > 0 for n in io.read_json(out["json"])["delta_norms"].values())
        outputs[method] = out["pt"]

    eval_cfg = {"batch_size": 4, "fluency_max_new_tokens": 4, "preset": "paper"}
    for method, deltas in (("unedited", None), ("eamet", outputs["eamet"])):
        summary = root / f"eval-{method}-{device}.json"
        steps.evaluate_model(model_dir, cfg, records, str(root / f"prefixes-{device}.json"), deltas, eval_cfg,
                             str(root / f"eval-{method}-{device}.jsonl"), str(summary),
                             {"dataset_kind": "counterfact", "method": method})
        assert summary.exists()

    task = root / "sst2.json"
    task.write_text(json.dumps([{"sentence": f"a fine film number {i}", "label": i % 2} for i in range(12)]))
    steps.evaluate_general(model_dir, cfg, outputs["memit"], {"sst2": str(task)}, {"n_per_task": 2, "gen_len": 2},
                           eval_cfg, str(root / f"general-{device}.json"), {"method": "memit"})
    assert io.read_json(root / f"general-{device}.json")["tasks"]["sst2"]["n"] == 2

    assert set(loaded) == {device}
    assert calls["embedding"] > 0 and calls["layer"] > 0 and calls["model"] > 0


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method,overrides", [
    ("eamet", {"forward": "full"}),  # the residual forward without the prefix cache
    ("memit", {"batch_edits": 1, "forward": "full"}),  # one edit at a time
    ("pmet", {}),
    ("pmet", {"batch_edits": 1}),
    ("alphaedit", {}),
    ("rome", {}),
    ("rome", {"sequential_residuals": False}),
    ("ft", {}),
])
def test_every_method_edits_on_the_model_device(workdir, watched, device, method, overrides):
    root, model_dir = workdir
    loaded, calls = watched
    stats = _stats(root, model_dir, device) if method != "ft" else None
    out = {k: str(root / f"{method}-{len(overrides)}-{device}.{k}") for k in ("pt", "npz", "json")}
    steps.edit_model(method, _hparams(method, **overrides), model_dir, _cfg(device), str(root / "records.jsonl"),
                     stats, 0, out["pt"], out["npz"], out["json"])
    _saved_on_cpu(out["pt"])
    assert np.load(out["npz"])["iterations"].shape == (3,)
    assert loaded[-1] == device and calls["layer"] > 0


def test_a_residual_file_of_other_settings_is_refused(workdir):
    """edit_model checks the shared residual file's settings against its own, so a stale or foreign file
    (another learning rate here) fails instead of editing with the wrong residuals."""
    root, model_dir = workdir
    cfg, records = _cfg("cpu"), str(root / "records.jsonl")
    memit = _hparams("memit")
    residuals = str(root / "memit-residuals-refused.pt")
    steps.optimise_residuals("memit", residual_hparams(memit), model_dir, cfg, records, 0, residuals)
    out = {k: str(root / f"refused.{k}") for k in ("pt", "npz", "json")}
    with pytest.raises(ValueError, match="other settings"):
        steps.edit_model("memit", {**memit, "v_lr": memit["v_lr"] * 2}, model_dir, cfg, records,
                         _stats(root, model_dir, "cpu"), 0, out["pt"], out["npz"], out["json"], residuals=residuals)
    assert not Path(out["pt"]).exists()
