# Configuration validation, wildcard constraints and the input functions shared by the rule files.
# The accessors live in massedit.config so the scripts' command-line entry points resolve identical values.
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


def fill(pattern, wildcards, **extra):
    return pattern.format(**dict(wildcards.items()), **extra)


def local_model_source(wildcards):
    """A local model directory is an input, so replacing it reruns what depends on it."""
    source = config["models"][wildcards.model]["source"]
    return source["path"] if source["kind"] == "local" else []


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
