# One batch of edits per model x dataset x method x n. params carry the resolved hyperparameters, so a
# change to one method's settings reruns only that method's edits and what follows from them.


def method_stats_wildcards(wildcards):
    """The wildcards of the statistics file a method's edits read (FT's: none)."""
    if wildcards.method in mc.NO_STATS_METHODS:
        return {}
    return mc.stats_wildcards(config, wildcards.model, wildcards.method)


# The residual phase, once per model x dataset x method for the largest batch the config asks for; every
# smaller batch of the same records takes its head (residual i never depends on a later record).
rule optimise_residuals:
    input:
        model=rules.acquire_model.output.hf,
        records=rules.select_edits.output.records,
    output:
        residuals="results/residuals/{model}/{dataset}/{method}/n{n}/residuals.pt",
        # wall-clock times, apart from the residuals so that a rerun gives identical bytes
        timings="results/residuals/{model}/{dataset}/{method}/n{n}/timings.json",
    wildcard_constraints:
        method=mc.alternatives(SHAREABLE_RESIDUALS),
    params:
        hparams=lambda wildcards: residual_hparams(mc.resolve_hparams(config, wildcards.method, wildcards.model)),
        model_cfg=lambda wildcards: mc.model_spec(config, wildcards.model),
        seed=config["seed"],
        cache_format=caches.RESIDUALS_FORMAT,
    threads: MODEL_THREADS
    # The largest batches are the longest jobs of a run: start them first so they do not end it alone.
    priority: edits
    resources:
        gpu=GPU_SLOT,
        gres=GPU_GRES,
        slurm_partition=GPU_PARTITION,
        slurm_account=SLURM_ACCOUNT,
        mem_mb=model_mem_mb(8000, 2),
        runtime=model_runtime(30, 0.01, edits),
    log:
        "logs/optimise_residuals/{model}/{dataset}/{method}/n{n}.log",
    benchmark:
        "benchmarks/optimise_residuals/{model}/{dataset}/{method}/n{n}.tsv"
    conda:
        "../envs/editing.yaml"
    script:
        "../scripts/optimise_residuals.py"


rule edit_model:
    input:
        model=rules.acquire_model.output.hf,
        records=rules.select_edits.output.records,
        stats=lambda wildcards: checked_stats(stats_for_method(wildcards), method_stats_wildcards(wildcards)),
        projections=projections_for_method,
        residuals=shared_residuals,
    output:
        deltas="results/edits/{model}/{dataset}/{method}/n{n}/deltas.pt",
        artefacts="results/edits/{model}/{dataset}/{method}/n{n}/artefacts.npz",
        meta="results/edits/{model}/{dataset}/{method}/n{n}/edit.json",
        timings="results/edits/{model}/{dataset}/{method}/n{n}/timings.json",
    wildcard_constraints:
        method=mc.alternatives(config["methods"]),
    params:
        hparams=lambda wildcards: mc.resolve_hparams(config, wildcards.method, wildcards.model),
        model_cfg=lambda wildcards: mc.model_spec(config, wildcards.model),
        seed=config["seed"],
        # the key the statistics file must carry (checked in the job, before any output is written)
        stats_settings=lambda wildcards: (
            None if wildcards.method in mc.NO_STATS_METHODS else stats_file_settings(method_stats_wildcards(wildcards))
        ),
    threads: MODEL_THREADS
    # An edit and its evaluation share one submission (and GPU allocation) on a cluster.
    group: "edit_and_evaluate"
    # About 0.3 s of residual optimisation per edit and billion parameters, doubled for slack.
    resources:
        gpu=GPU_SLOT,
        gres=GPU_GRES,
        slurm_partition=GPU_PARTITION,
        slurm_account=SLURM_ACCOUNT,
        mem_mb=model_mem_mb(8000, 2),
        runtime=model_runtime(30, 0.01, edits),
    log:
        "logs/edit_model/{model}/{dataset}/{method}/n{n}.log",
    benchmark:
        "benchmarks/edit_model/{model}/{dataset}/{method}/n{n}.tsv"
    conda:
        "../envs/editing.yaml"
    script:
        "../scripts/edit_model.py"
