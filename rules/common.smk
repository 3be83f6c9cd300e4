# Configuration validation, wildcard constraints and the input functions shared by the rule files.
# The accessors live in massedit.config so the scripts' command-line entry points resolve identical values.
import os
import re
from pathlib import Path

from massedit import config as mc


# Fills the schema's defaults into `config` in place; every error names the offending key path.
mc.validate(config, Path(workflow.basedir) / "config" / "schema.yaml")


wildcard_constraints:
    model=mc.alternatives(config["models"]),
    dataset=mc.alternatives(config["datasets"]),
    corpus=mc.alternatives(config["corpora"]),
    method=mc.alternatives([*config["methods"], mc.UNEDITED]),
    n=r"[1-9][0-9]*",
    layers=r"[0-9]+(-[0-9]+)*",
    n_docs=r"[0-9]+",
    maxlen=r"[0-9]+",
    dtype=r"float32|float64",
    prefix_len=r"[0-9]+",
    seed=r"[0-9]+",


# Model jobs gain little beyond a few intra-op threads and would starve the cheap jobs beside them.
# Snakemake scales a job's threads down to --cores; reading workflow.cores here instead would make every
# invocation without --cores (--rulegraph, --lint, --summary) fail.
TORCH_THREADS = 8


def mem_mb(base):
    """Memory request that doubles on each retry (`--retries`)."""
    return lambda wildcards, attempt: base * attempt


# Cluster requests (config `cluster`). They are resources, not params, so tuning them reruns nothing; a
# local run ignores them except for `threads` and the `gpu` slot.
def cluster_setting(key):
    """cluster.<key>, overridden by MASSEDIT_SLURM_<KEY>; "" when unset, which leaves the choice to SLURM."""
    return os.environ.get(f"MASSEDIT_SLURM_{key.upper()}", config["cluster"][key]) or ""


CPU_PARTITION = cluster_setting("partition")
GPU_PARTITION = cluster_setting("gpu_partition") or CPU_PARTITION
SLURM_ACCOUNT = cluster_setting("account")
GPU_GRES = cluster_setting("gpu_gres")

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
# "7b", "13B", "1.1B", "135M" standing alone between separators, as in Llama-2-7b-hf or SmolLM2-135M.
SIZE_TAG = re.compile(r"(?<![A-Za-z0-9.])([0-9]+(?:\.[0-9]+)?)([bBmM])(?![A-Za-z0-9])")
# The paper's smallest models: an unknown model asks for too much rather than failing for too little.
DEFAULT_PARAMS_B = 7


def params_b(model):
    """Billions of parameters: cluster.model_params_b, else the size tag in the model's names."""
    known = config["cluster"]["model_params_b"]
    if model in known:
        return known[model]
    source = config["models"][model]["source"]
    names = (model, source.get("id", ""), Path(source.get("file", "")).name, Path(source.get("path", "")).name)
    for name in names:
        match = SIZE_TAG.search(name)
        if match:
            return float(match.group(1)) / (1 if match.group(2) in "bB" else 1000)
    return DEFAULT_PARAMS_B


def weights_mb(model):
    return params_b(model) * 1000 * DTYPE_BYTES[config["models"][model]["dtype"]]


def model_mem_mb(base, copies):
    """`base` MB for the process plus `copies` times the model's weights; doubles on each retry."""
    return lambda wildcards, attempt: int(base + copies * weights_mb(wildcards.model)) * attempt


def model_runtime(base, per_b, work=lambda wildcards: 1):
    """Minutes: `base` plus `per_b` per billion parameters and unit of work; doubles on each retry."""
    return lambda wildcards, attempt: int(base + per_b * params_b(wildcards.model) * work(wildcards)) * attempt


def edits(wildcards):
    return int(wildcards.n)


def stats_tokens(wildcards):
    return int(wildcards.n_docs) * int(wildcards.maxlen)


def fill(pattern, wildcards, **extra):
    return pattern.format(**dict(wildcards.items()), **extra)


def local_model_source(wildcards):
    """The files of a local model directory are inputs, so replacing them reruns what depends on them.

    Files rather than the directory: the between-workflow cache of the statistics hashes every upstream
    input, and a directory cannot be hashed."""
    source = config["models"][wildcards.model]["source"]
    if source["kind"] != "local":
        return []
    directory = Path(source["path"])
    if not directory.is_dir():
        raise ValueError(f"models.{wildcards.model}.source.path: {directory} is not a directory")
    return sorted(str(p) for p in directory.iterdir() if p.is_file())


def stats_for_method(wildcards):
    """The statistics file covering the method's layer set for this model (shared across methods)."""
    return rules.compute_layer_stats.output.npz.format(
        **mc.stats_wildcards(config, wildcards.model, wildcards.method)
    )


def eval_prefixes(wildcards):
    evaluation = config["evaluation"]
    return rules.generate_eval_prefixes.output.prefixes.format(
        model=wildcards.model, prefix_len=evaluation["prefix_len"], seed=evaluation["prefix_seed"]
    )


def eval_deltas(wildcards):
    """The unedited pseudo-method is evaluated without deltas."""
    if wildcards.method == mc.UNEDITED:
        return []
    return fill(rules.edit_model.output.deltas, wildcards)


def grid_summaries(wildcards):
    return [
        rules.evaluate_model.output.summary.format(**cell._asdict())
        for cell in mc.grid(config)
    ]
