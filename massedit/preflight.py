"""Checks of the configuration against the models and datasets it names, run before any job.

The schema (massedit.config.validate) checks each value on its own. What needs a model's depth or a
dataset's size is checked here: every method's layers (and ``v_loss_layer`` where a method block sets it)
against the model's number of blocks, and every requested batch size against the number of records the
dataset has. The Snakefile runs ``check_config`` right after the schema, before the DAG is built; it
reads only small files (a model's config.json, a prepared dataset's manifest), so every parse can afford
it. Whatever it cannot know yet (a model not acquired, a dataset not prepared and of no fixed size) the
job that first learns it checks with the same code (``check_job``), so the error names the same key.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator, NamedTuple

from massedit import config as mc

# Methods whose last edited layer is also the layer whose residual is optimised.
Z_LAYER_METHODS = ("eamet", "memit", "pmet", "alphaedit")
# Method keys that name one block or a list of blocks.
LAYER_KEYS = ("layers", "v_loss_layer")
# config.json keys that give the number of transformer blocks, in the order transformers' configs use them.
DEPTH_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")

# Records of the pinned, unfiltered sources (their sha256 is fixed, so their size is too). Anything else is
# known once prepared (resources/datasets/<name>/manifest.json) or checked by select_edits.
PINNED_SIZES = {
    ("counterfact", "memit", "counterfact"): 21919,
    ("counterfact", "memit", "counterfact_500"): 500,
    ("counterfact", "easyedit", None): 21919,
    ("zsre", None, "zsre_mend_train_1k"): 1000,
}


class PreflightError(ValueError):
    """The configuration asks for something its models or datasets cannot give."""


class Known(NamedTuple):
    """A number (a model's blocks, a dataset's records) and the file or fact it comes from."""

    value: int
    where: str
    upper_bound: bool = False  # records before the known-fact filter: n above it is wrong, below it may be


# --------------------------------------------------------------------------------------------------------
# Entry points


def check_config(config: dict, workdir: str | Path = ".") -> None:
    """Every problem knowable from the (validated) config and the files already on disk, raised together."""
    workdir = Path(workdir)
    depths = {m: d for m in config["models"] if (d := model_depth(config, m, workdir)) is not None}
    sizes = {(None, ds): s for ds in config["datasets"] if (s := dataset_size(config, ds, workdir)) is not None}
    _raise(layer_problems(config, depths) + size_problems(config, sizes), "before any job ran")


def check_job(config: dict, *, model: str, method: str | None = None, layers: list[int] | None = None,
              model_dir: str | Path | None = None, dataset: str | None = None, n: int | None = None,
              records: str | Path | None = None) -> None:
    """The same checks inside a job that has just learnt a model's depth (``model_dir``) or the records a
    batch of n selects from (``records``, one JSON object per line), restricted to what the job uses: the
    method (or, for statistics, the layer set ``layers``) and the batch size n of this model and dataset."""
    problems = []
    if model_dir is not None:
        depth = depth_from_config_json(Path(model_dir) / "config.json")
        if depth is not None:
            problems += layer_problems(config, {model: depth}, method=method, layers=layers)
    if dataset is not None and records is not None:
        with open(records, encoding="utf-8") as fh:
            size = Known(sum(1 for line in fh if line.strip()), str(records))
        problems += size_problems(config, {(model, dataset): size}, model=model, dataset=dataset, n=n)
    _raise(problems, "once the job could know them")


def _raise(problems: list[str], when: str) -> None:
    if problems:
        problems = list(dict.fromkeys(problems))
        raise PreflightError(f"{len(problems)} configuration problem(s), found {when}:\n  "
                             + "\n  ".join(problems))


# --------------------------------------------------------------------------------------------------------
# Model depth


def depth_from_config_json(path: Path) -> Known | None:
    """The number of blocks a Hugging Face config.json declares (multimodal configs nest it in text_config)."""
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    for block in (cfg, cfg.get("text_config") or {}):
        for key in DEPTH_KEYS:
            if isinstance(block.get(key), int) and not isinstance(block.get(key), bool):
                return Known(block[key], f"{key} in {path}")
    return None


def model_depth(config: dict, model: str, workdir: Path) -> Known | None:
    """A local model's depth from its directory; an acquired model's from resources/models/<model>/hf when its
    manifest names the configured source (otherwise acquisition reruns and the depth may change)."""
    source = config["models"][model]["source"]
    if source["kind"] == "local":
        return depth_from_config_json(workdir / source["path"] / "config.json")
    root = workdir / "resources" / "models" / model
    try:
        acquired_from = json.loads((root / "manifest.json").read_text(encoding="utf-8")).get("source")
    except (OSError, ValueError):
        return None
    if acquired_from != source:
        return None
    return depth_from_config_json(root / "hf" / "config.json")


def _used_pairs(config: dict) -> dict[tuple[str, str], None]:
    """(method, model) of every edit the default target and the analyses make, and of every per-model
    override (its keys name the model explicitly)."""
    cells = mc.grid(config) + [c for name in mc.ANALYSES for c in mc.analysis_cells(config, name)]
    pairs = {(c.method, c.model): None for c in cells if c.method != mc.UNEDITED}
    for method, block in config["methods"].items():
        pairs.update({(method, model): None for model in block["models"] if model in config["models"]})
    return pairs


def layer_problems(config: dict, depths: dict[str, Known], method: str | None = None,
                   layers: list[int] | None = None) -> list[str]:
    """Each layer a method reads for a model of known depth that is not one of its blocks. ``method`` or
    ``layers`` (a statistics file's layer set) restrict the check to what one job uses."""
    problems = []
    for name, model in _used_pairs(config):
        if model not in depths or (method is not None and name != method):
            continue
        hp = mc.resolve_hparams(config, name, model)
        if layers is not None and sorted(int(x) for x in hp["layers"]) != sorted(layers):
            continue
        depth = depths[model]
        for key in LAYER_KEYS:
            value = hp.get(key)
            if value is None:
                continue
            origin = _origin(config, name, model, key)
            values = value if isinstance(value, list) else [value]
            for i, layer in enumerate(values):
                if key == "v_loss_layer" and int(layer) != depth.value - 1:
                    # The readout is the model's own logits, so only the last block is implemented
                    # (massedit.editing.residual.check_loss_layer says the same inside the job).
                    problems.append(f"{origin}: v_loss_layer {layer} is not the last block of model {model!r}, "
                                    f"which has {depth.value} (only {depth.value - 1} is implemented; {depth.where})")
                    continue
                if 0 <= int(layer) < depth.value:
                    continue
                path = f"{origin}[{i}]" if isinstance(value, list) else origin
                role = " (the z-layer)" if key == "layers" and name in Z_LAYER_METHODS and layer == max(values) else ""
                problems.append(f"{path}: layer {layer}{role} is not a block of model {model!r}, which has "
                                f"{depth.value} (0 to {depth.value - 1}; {depth.where})")
    return problems


def _origin(config: dict, method: str, model: str, key: str) -> str:
    """The config key a resolved hyperparameter comes from: the model's override, else the method's defaults."""
    block = config["methods"][method]
    if key in block["models"].get(model, {}):
        return f"methods.{method}.models.{model}.{key}"
    return f"methods.{method}.defaults.{key}"


# --------------------------------------------------------------------------------------------------------
# Dataset size


def dataset_size(config: dict, dataset: str, workdir: Path) -> Known | None:
    """Records a dataset offers: from its prepared manifest when that was made from the configured spec, else
    from the size of a pinned, unfiltered source. With keep_known, an upper bound (the filter needs the model)."""
    spec = mc.dataset_spec(config, dataset)
    keep_known = bool(spec.get("keep_known"))
    manifest = workdir / "resources" / "datasets" / dataset / "manifest.json"
    try:
        prepared = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        prepared = None
    if prepared and mc.canonical(prepared.get("spec")) == spec and isinstance(prepared.get("n_records"), int):
        return Known(prepared["n_records"], str(manifest), keep_known)
    size = _pinned_size(spec)
    return None if size is None else Known(size.value, size.where, keep_known)


def _pinned_size(spec: dict) -> Known | None:
    if spec.get("facts_per_subject") or spec.get("dedup_subjects"):
        return None
    kind = spec["kind"]
    if kind == "quickstart":
        from massedit.datasets.quickstart import TABLE, load_facts

        return Known(len(load_facts()), f"the embedded table massedit/datasets/{TABLE}")
    if kind == "counterfact":
        schema = spec.get("schema")
        if schema == "easyedit" and "files" in spec:
            return None
        source = None if schema == "easyedit" else spec.get("source", "counterfact")
        key = (kind, schema, source)
    elif kind == "zsre":
        key = (kind, None, spec.get("source", "zsre_mend_eval"))
    else:
        return None
    if not all(isinstance(part, (str, type(None))) for part in key) or key not in PINNED_SIZES:
        return None
    name = " ".join(part for part in key if part)
    return Known(PINNED_SIZES[key], f"the pinned source {name}")


def requests(config: dict) -> Iterator[tuple[str, str, str, int]]:
    """(config key, model, dataset, n) of every batch size the config asks for. The facts-per-subject
    datasets take at most their size (at_most), so they ask for nothing that can fail."""
    blocks = [("grid", config["grid"])] + [(f"extra_grids[{j}]", b) for j, b in enumerate(config["extra_grids"])]
    for where, block in blocks:
        for i, n in enumerate(block["n_edits"]):
            for model in block["models"]:
                for dataset in block["datasets"]:
                    yield f"{where}.n_edits[{i}]", model, dataset, int(n)
    for name in ("prefix_robustness", "general_abilities"):
        spec = config.get("analyses", {}).get(name)
        if spec:
            for model in spec["models"]:
                for dataset in spec["datasets"]:
                    yield f"analyses.{name}.n_edits", model, dataset, int(spec["n_edits"])


def size_problems(config: dict, sizes: dict[tuple[str | None, str], Known], model: str | None = None,
                  dataset: str | None = None, n: int | None = None) -> list[str]:
    """Each requested n larger than the records its dataset offers (a dataset with at_most takes what there
    is). ``sizes`` is keyed by (model, dataset), or (None, dataset) for a size every model shares."""
    problems = []
    for key, cell_model, cell_dataset, cell_n in requests(config):
        if (model, dataset, n) != (None, None, None) and (
                (model is not None and cell_model != model) or (dataset is not None and cell_dataset != dataset)
                or (n is not None and cell_n != int(n))):
            continue
        if config["datasets"][cell_dataset].get("at_most"):
            continue
        size = sizes.get((cell_model, cell_dataset)) or sizes.get((None, cell_dataset))
        if size is None or cell_n <= size.value:
            continue
        before = " before the known-fact filter" if size.upper_bound else ""
        problems.append(f"{key}: {cell_n} edits of dataset {cell_dataset!r}, which has {size.value} records"
                        f"{before} ({size.where}); lower it, or set datasets.{cell_dataset}.at_most: true "
                        f"to edit every record")
    return problems
