# Configuration validation, wildcard constraints and the input functions shared by the rule files.
# The accessors live in massedit.config so the scripts' command-line entry points resolve identical values.
import os
import re
import shutil
from pathlib import Path

from massedit import config as mc
from massedit import preflight
from massedit.editing.sharing import SHAREABLE_RESIDUALS, residual_hparams, residual_owner


# Fills the schema's defaults into `config` in place; every error names the offending key path.
mc.validate(config, Path(workflow.basedir) / "config" / "schema.yaml")
# The facts-per-subject analysis edits derived datasets (<dataset>-fps<N>); they are ordinary datasets from here on.
mc.add_derived_datasets(config)
# Layers beyond a model's depth and batches larger than their dataset, before any job runs (massedit.preflight).
preflight.check_config(config)


wildcard_constraints:
    model=mc.alternatives(config["models"]),
    dataset=mc.alternatives(config["datasets"]),
    corpus=mc.alternatives(config["corpora"]),
    method=mc.alternatives([*config["methods"], mc.UNEDITED]),
    n=r"[1-9][0-9]*",
    layers=r"[0-9]+(-[0-9]+)*",
    n_docs=r"[0-9]+",
    maxlen=r"[0-9]+",
    dtype=r"float32|float64|bfloat16",
    prefix_len=r"[0-9]+",
    seed=r"[0-9]+",


# Model jobs gain little beyond a few intra-op threads and would starve the cheap jobs beside them.
# Snakemake scales a job's threads down to --cores; reading workflow.cores here instead would make every
# invocation without --cores (--rulegraph, --lint, --summary) fail.
TORCH_THREADS = 8


def accelerator_present():
    """An NVIDIA or AMD GPU on this machine (device files or driver tools; no torch import at DAG time)."""
    return any(Path(p).exists() for p in ("/dev/nvidia0", "/dev/kfd")) or bool(shutil.which("nvidia-smi"))


# Model jobs declare `gpu` so that a workstation runs one at a time on its accelerator (profiles/default).
# A local run without one runs them as small CPU jobs instead: one thread each and as many at once as there
# are cores, so start-up and model loading overlap and small matrices keep a core busy (measured on 2
# cores: a single-threaded residual step is 1.5x slower than a two-threaded one, and two run at once).
def model_threads(wildcards):
    """A model job's threads, decided when Snakemake creates the job: by then it has chosen the executor,
    which it has not while it parses this file (workflow.local_exec is true at parse time whatever the
    executor). A job re-run inside a cluster job (--mode remote: the node parses the workflow again) takes
    the CPUs it was given, SLURM_CPUS_PER_TASK, so torch runs as many threads as the job requested."""
    if workflow.remote_exec:
        return int(os.environ.get("SLURM_CPUS_PER_TASK") or TORCH_THREADS)
    if workflow.local_exec and not accelerator_present():
        return 1
    return TORCH_THREADS


MODEL_THREADS = model_threads
# Only a workstation's own accelerator makes a slot (a cluster asks for GPUs through `gres`).
GPU_SLOT = 1 if accelerator_present() else 0


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


def selection_source(wildcards):
    """select_edits reads the known facts when the dataset asks for the filter, else the whole dataset."""
    if mc.dataset_spec(config, wildcards.dataset).get("keep_known", False):
        return {
            "records": fill(rules.filter_known.output.records, wildcards),
            "known_manifest": fill(rules.filter_known.output.manifest, wildcards),
        }
    return {"records": fill(rules.prepare_dataset.output.records, wildcards)}


def stats_for_method(wildcards):
    """The statistics file covering the method's layer set for this model (shared across methods); FT uses none."""
    if wildcards.method in mc.NO_STATS_METHODS:
        return []
    return rules.compute_layer_stats.output.npz.format(
        **mc.stats_wildcards(config, wildcards.model, wildcards.method)
    )


def residual_method(model, method):
    """The method whose residual file a method's edits read (AlphaEdit: MEMIT's, when their settings agree)."""
    return residual_owner(method, lambda m: mc.resolve_hparams(config, m, model))


def largest_batch(model, dataset, n, same=lambda cell: True):
    """The largest batch of this model and dataset among the cells (grid and analyses) that ``same`` accepts,
    which starts with the batch of n when batches are the first n records; n itself for a seeded sample
    (not a prefix)."""
    if mc.dataset_spec(config, dataset).get("select", "first") != "first":
        return n
    cells = mc.grid(config) + [c for name in mc.ANALYSES for c in mc.analysis_cells(config, name)]
    return max([n] + [c.n for c in cells if (c.model, c.dataset) == (model, dataset) and same(c)])


def residual_source_n(model, dataset, method, n):
    """The batch whose residual file serves the batch of n: the largest over the methods sharing that file."""
    owner = residual_method(model, method)
    return largest_batch(model, dataset, n, lambda c: c.method in SHAREABLE_RESIDUALS
                         and residual_method(model, c.method) == owner)


def shared_residuals(wildcards):
    """The residual file (possibly of a larger batch, possibly another method's) that edit_model slices."""
    if wildcards.method not in SHAREABLE_RESIDUALS:
        return []
    n = residual_source_n(wildcards.model, wildcards.dataset, wildcards.method, int(wildcards.n))
    owner = residual_method(wildcards.model, wildcards.method)
    return rules.optimise_residuals.output.residuals.format(**{**dict(wildcards.items()), "method": owner, "n": n})


def projections_for_method(wildcards):
    """AlphaEdit's cached null-space projections for its layer set and threshold."""
    if wildcards.method != "alphaedit":
        return []
    hp = mc.resolve_hparams(config, wildcards.method, wildcards.model)
    return rules.null_space_projections.output.pt.format(
        **mc.stats_wildcards(config, wildcards.model, wildcards.method), threshold=hp["nullspace_threshold"]
    )


def eval_prefixes(wildcards):
    evaluation = config["evaluation"]
    return rules.generate_eval_prefixes.output.prefixes.format(
        model=wildcards.model, prefix_len=evaluation["prefix_len"], seed=evaluation["prefix_seed"]
    )


def unedited_head_source(wildcards):
    """The unedited model is evaluated once per model and dataset, on the largest batch: a smaller batch takes
    the head of that evaluation (records.jsonl, summary.json)."""
    if wildcards.method != mc.UNEDITED:
        return []
    n = largest_batch(wildcards.model, wildcards.dataset, int(wildcards.n))
    if n == int(wildcards.n):
        return []
    larger = {**dict(wildcards.items()), "n": n}
    return [rules.evaluate_model.output.records.format(**larger), rules.evaluate_model.output.summary.format(**larger)]


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


def cell_path(pattern, cells, **extra):
    return [pattern.format(**cell._asdict(), **extra) for cell in cells]


def analysis_summaries(name):
    return cell_path(rules.evaluate_model.output.summary, mc.analysis_cells(config, name))


def prefix_robustness_summaries(wildcards=None):
    spec = config["analyses"].get("prefix_robustness")
    if not spec:
        return []
    return [
        path
        for length in spec["prefix_lens"]
        for path in cell_path(rules.evaluate_prefix_length.output.summary, mc.analysis_cells(config, "prefix_robustness"),
                              prefix_len=length)
    ]


def misalignment_scores(wildcards=None):
    return cell_path(rules.misalignment_score.output.json, mc.analysis_cells(config, "misalignment"))


def general_results(wildcards=None):
    return cell_path(rules.evaluate_general.output.json, mc.analysis_cells(config, "general_abilities"))


def fps_summaries(wildcards=None):
    return analysis_summaries("facts_per_subject")


def fps_values():
    """N of each facts-per-subject summary, in the order of fps_summaries."""
    return [int(cell.dataset.rpartition("-fps")[2]) for cell in mc.analysis_cells(config, "facts_per_subject")]


def analysis_targets(wildcards):
    """The tables and figures of the analyses the config asks for."""
    analyses = config["analyses"]
    targets = []
    if analyses.get("misalignment") and misalignment_scores():
        targets += rules.make_table3.output
    if analyses.get("prefix_robustness"):
        targets += rules.plot_prefix_robustness.output
    if analyses.get("facts_per_subject"):
        targets += rules.plot_facts_per_subject.output
    if analyses.get("general_abilities"):
        targets += rules.plot_general_ability.output
    return targets
