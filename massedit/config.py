"""The workflow configuration: loading, validation against config/schema.yaml, and the accessors that turn it
into rule parameters.

The Snakefile and the scripts' command-line entry points both go through these accessors, so a job run by
Snakemake and the same step run by hand receive identical arguments. Every accessor returns plain values with
sorted keys: Snakemake compares parameters by ``repr``, and reordering keys in a config file must not rerun
anything.
"""
from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any, NamedTuple

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "config" / "schema.yaml"
NO_STATS_METHODS = ("ft",)  # methods whose update needs no preservation statistics
UNEDITED = "unedited"  # pseudo-method: the model evaluated without deltas, the tables' pre-edit row
DOWNLOAD_DIR = "resources/downloads"
MIRROR_ENV = "MASSEDIT_MIRROR"

# Settings that change only speed and memory; scripts read them from the config at run time so that
# lowering a batch size after an out-of-memory failure does not invalidate finished results.
STATS_RUNTIME_KEYS = ("batch_tokens", "batch_docs")
EVAL_RUNTIME_KEYS = ("batch_size",)


class ConfigError(ValueError):
    """The configuration does not match the schema or refers to names it does not define."""


class Cell(NamedTuple):
    """One evaluation of the grid: ``method`` is a method name or UNEDITED."""

    model: str
    dataset: str
    method: str
    n: int


# --------------------------------------------------------------------------------------------------------
# Loading and validation


def load_config(path: str | os.PathLike, schema_path: str | os.PathLike | None = None) -> dict:
    """Read a YAML config, validate it and fill in the schema's defaults."""
    import yaml

    with open(path, encoding="utf-8") as fh:
        config = yaml.safe_load(fh)
    return validate(config if config is not None else {}, schema_path)


def validate(config: dict, schema_path: str | os.PathLike | None = None) -> dict:
    """Validate ``config`` in place (JSON Schema 2020-12), fill defaults, check cross-references.

    Raises ConfigError listing every problem, each prefixed with the offending key path such as
    ``methods.eamet.defaults.v_lr``.
    """
    import yaml
    from jsonschema import Draft202012Validator

    with open(schema_path or SCHEMA_PATH, encoding="utf-8") as fh:
        schema = yaml.safe_load(fh)
    if not isinstance(config, dict):
        raise ConfigError(f"(top level): expected a mapping, got {type(config).__name__}")
    validator = _with_defaults(Draft202012Validator)(schema)
    problems = _describe(list(validator.iter_errors(config)))
    if not problems:
        problems = _cross_reference_problems(config)
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
    return config


def key_path(parts) -> str:
    """``['grid', 'n_edits', 1]`` -> ``grid.n_edits[1]``."""
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


_UNEXPECTED = re.compile(r"\((.*) (?:was|were) unexpected\)")


def _describe(errors) -> list[str]:
    """One line per problem, each naming the key path; unknown keys are named individually."""
    known = [err for err in errors if err.validator not in ("additionalProperties", "unevaluatedProperties")]
    lines = []
    for err in sorted(errors, key=lambda e: [str(p) for p in e.absolute_path]):
        path = list(err.absolute_path)
        if err in known:
            lines.append(f"{key_path(path)}: {err.message}")
            continue
        # A failed conditional branch leaves its keys "unevaluated"; the branch's own error says more.
        if any(list(other.absolute_path)[: len(path)] == path for other in known):
            continue
        match = _UNEXPECTED.search(err.message)
        names = re.findall(r"'([^']*)'", match.group(1)) if match else []
        lines += [f"{key_path(path + [name])}: unknown key" for name in names] or [f"{key_path(path)}: {err.message}"]
    return list(dict.fromkeys(lines))


def _with_defaults(validator_class):
    """A validator class that fills ``default`` values while it validates ``properties``."""
    from jsonschema import validators

    check_properties = validator_class.VALIDATORS["properties"]

    def properties(validator, props, instance, schema):
        if isinstance(instance, dict):
            for key, sub in props.items():
                if isinstance(sub, dict) and "default" in sub and key not in instance:
                    # A copy: filling nested defaults must never modify the schema itself.
                    instance[key] = copy.deepcopy(sub["default"])
        yield from check_properties(validator, props, instance, schema)

    return validators.extend(validator_class, {"properties": properties})


def _cross_reference_problems(config: dict) -> list[str]:
    problems = []

    def need(path: str, name: str, section: str) -> None:
        if name not in config[section]:
            problems.append(
                f"{path}: {name!r} is not defined under {section} (defined: {', '.join(sorted(config[section]))})"
            )

    blocks = [("grid", config["grid"])] + [(f"extra_grids[{j}]", b) for j, b in enumerate(config["extra_grids"])]
    for where, block in blocks:
        for section in ("models", "datasets"):
            for i, name in enumerate(block[section]):
                need(f"{where}.{section}[{i}]", name, section)
    need("stats.corpus", config["stats"]["corpus"], "corpora")
    for method, block in config["methods"].items():
        problems += _layer_problems(f"methods.{method}.defaults.layers", block["defaults"]["layers"])
        for model, override in block["models"].items():
            need(f"methods.{method}.models.{model}", model, "models")
            if "layers" in override:
                problems += _layer_problems(f"methods.{method}.models.{model}.layers", override["layers"])
    return problems


def _layer_problems(path: str, layers: list[int]) -> list[str]:
    # The update walks the layers in order and treats the last as the z-layer.
    return [] if list(layers) == sorted(layers) else [f"{path}: layers must be ascending, got {layers}"]


# --------------------------------------------------------------------------------------------------------
# Accessors


def canonical(obj: Any) -> Any:
    """A copy with every mapping's keys sorted, so that ``repr`` depends on content only."""
    if isinstance(obj, dict):
        return {key: canonical(obj[key]) for key in sorted(obj)}
    if isinstance(obj, (list, tuple)):
        return [canonical(item) for item in obj]
    return obj


def _merge(base: dict, override: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


# Quirk switches (reference method.md §7) that follow the preset unless a config sets them explicitly.
PRESET_SWITCHES = {
    "paper": {"prompt_build": "string"},
    "clean": {"prompt_build": "ids"},
}
# Switches of one method only, so that the other methods' settings (and their cached files) do not change.
METHOD_PRESET_SWITCHES = {
    "eamet": {
        "paper": {"zero_delta_cosine": "code"},
        "clean": {"zero_delta_cosine": "zero"},
    },
}


def preset_switches(preset: str, method: str) -> dict:
    return {**PRESET_SWITCHES[preset], **METHOD_PRESET_SWITCHES.get(method, {}).get(preset, {})}


def resolve_hparams(config: dict, method: str, model: str) -> dict:
    """The preset's quirk switches, then the method's defaults, then the model's overrides (nested mappings
    merged key by key)."""
    block = config["methods"][method]
    merged = _merge(preset_switches(config.get("preset", "paper"), method), block["defaults"])
    merged = _merge(merged, block["models"].get(model, {}))
    templates = merged.get("templates")
    if isinstance(templates, dict) and templates.get("stream") == "after_prefixes" and "prefixes" not in templates:
        # The authors' stream draws the evaluation prefixes first; their settings become part of the templates'
        # settings, so the residual files' keys change with them.
        evaluation = config.get("evaluation", {})
        templates["prefixes"] = {"length": evaluation.get("prefix_len", 5), "n": evaluation.get("n_prefixes", 10),
                                 "seed": evaluation.get("prefix_seed", 0)}
    return canonical(merged)


def model_dir_of(fingerprint: str) -> str:
    """The model directory that acquire_model writes next to the model's fingerprint file."""
    return str(Path(fingerprint).parent / "hf")


def mirror_dir(config: dict) -> str | None:
    """The offline data mirror: $MASSEDIT_MIRROR if set, else the config's ``mirror_dir``."""
    return os.environ.get(MIRROR_ENV) or config.get("mirror_dir")


def stats_layers_key(layers) -> str:
    """``[3, 4]`` -> ``"3-4"``: the layer set in a statistics file name."""
    return "-".join(str(int(layer)) for layer in sorted(layers))


def parse_layers_key(key: str) -> list[int]:
    return [int(part) for part in key.split("-")]


def model_spec(config: dict, model: str) -> dict:
    return canonical(config["models"][model])


def dataset_spec(config: dict, dataset: str) -> dict:
    return canonical(config["datasets"][dataset])


def corpus_spec(config: dict, corpus: str) -> dict:
    return canonical(config["corpora"][corpus])


def stats_settings(config: dict, model: str) -> dict:
    """The statistics settings that determine the file for ``model`` (global, then the model's overrides)."""
    stats = config["stats"]
    settings = {key: stats[key] for key in ("corpus", "n_docs", "maxlen", "dtype", "seed")}
    settings.update(config["models"][model].get("stats", {}))
    return canonical(settings)


def stats_wildcards(config: dict, model: str, method: str) -> dict:
    """Wildcard values of the statistics file that ``method`` needs for ``model``."""
    settings = stats_settings(config, model)
    return {
        "model": model,
        "corpus": settings["corpus"],
        "layers": stats_layers_key(resolve_hparams(config, method, model)["layers"]),
        "n_docs": settings["n_docs"],
        "maxlen": settings["maxlen"],
        "dtype": settings["dtype"],
    }


def stats_runtime(config: dict) -> dict:
    return {key: config["stats"][key] for key in STATS_RUNTIME_KEYS}


def eval_settings(config: dict) -> dict:
    """Evaluation settings that can change results, plus the preset."""
    settings = {k: v for k, v in config["evaluation"].items() if k not in EVAL_RUNTIME_KEYS and k != "general"}
    settings["preset"] = config["preset"]
    return canonical(settings)


def general_settings(config: dict) -> dict:
    """General-ability settings (their own rule, so changing them reruns nothing else)."""
    return canonical(config["evaluation"]["general"])


def fps_dataset(dataset: str, n: int) -> str:
    """Name of the derived dataset of ``dataset``'s records whose subject occurs exactly n times."""
    return f"{dataset}-fps{int(n)}"


def add_derived_datasets(config: dict) -> None:
    """Add the facts-per-subject datasets of analyses.facts_per_subject to ``config["datasets"]``."""
    fps = config.get("analyses", {}).get("facts_per_subject")
    if not fps:
        return
    base = config["datasets"].get(fps["dataset"])
    if base is None:
        raise ValueError(f"analyses.facts_per_subject.dataset: {fps['dataset']!r} is not a key of datasets")
    for n in fps["values"]:
        config["datasets"].setdefault(fps_dataset(fps["dataset"], n),
                                      {**copy.deepcopy(base), "facts_per_subject": int(n), "at_most": True})


ANALYSES = ("prefix_robustness", "facts_per_subject", "general_abilities", "misalignment")


def analysis_cells(config: dict, name: str) -> list[Cell]:
    """The edits (model, dataset, method, n) an analysis needs; the unedited pseudo-method where it applies."""
    spec = config.get("analyses", {}).get(name)
    if not spec:
        return []
    if name == "facts_per_subject":
        return [Cell(model, fps_dataset(spec["dataset"], n), method, int(spec["max_edits"]))
                for model in spec["models"] for n in spec["values"] for method in spec["methods"]]
    if name == "misalignment":
        return [cell for cell in grid(config) if cell.method in spec["methods"]]
    methods = spec["methods"] + ([UNEDITED] if name == "general_abilities" else [])
    return [Cell(model, dataset, method, int(spec["n_edits"]))
            for model in spec["models"] for dataset in spec["datasets"] for method in methods]


def eval_runtime(config: dict) -> dict:
    return {key: config["evaluation"][key] for key in EVAL_RUNTIME_KEYS}


def labels(config: dict, model: str, dataset: str, method: str, n: int) -> dict:
    """What a summary row is about; hparams are None for the unedited model."""
    return canonical({
        "model": model,
        "dataset": dataset,
        "dataset_kind": config["datasets"][dataset]["kind"],
        "method": method,
        "n_edits": int(n),
        "preset": config["preset"],
        "seed": config["seed"],
        "hparams": None if method == UNEDITED else resolve_hparams(config, method, model),
    })


def grid(config: dict) -> list[Cell]:
    """Every evaluation the default target needs: the unedited model and each method, per model x dataset x n,
    over `grid` and `extra_grids` (a cell in several blocks once)."""
    cells = [
        Cell(model, dataset, method, int(n))
        for g in [config["grid"], *config.get("extra_grids", [])]
        for model in g["models"]
        for dataset in g["datasets"]
        for n in g["n_edits"]
        for method in [UNEDITED, *g.get("methods", ["eamet", "memit"])]
    ]
    return list(dict.fromkeys(cells))


def method_names(config: dict) -> list[str]:
    return sorted(config["methods"])


def alternatives(names) -> str:
    """A regex matching exactly one of ``names`` (for wildcard constraints)."""
    return "|".join(re.escape(name) for name in sorted(names, key=lambda s: (-len(s), s)))
