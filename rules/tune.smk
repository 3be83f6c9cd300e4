# Edit settings for a new model (docs/tuning.md): per model x method, a small grid over layer sets, λ, the
# clamp factor and the learning rate, scored on held-out edits of the `tune` dataset. Not part of the default
# target: `snakemake --cores all tune`, then add results/tune/<model>/<method>/chosen.yaml after the config
# (`--configfile config/config.yaml results/tune/<model>/<method>/chosen.yaml`).
from massedit import tuning


# Defaults filled in (models, methods and dataset default to the grid's); unknown names fail here.
TUNE = tuning.settings(config)


def tune_hparams(wildcards):
    return mc.resolve_hparams(config, wildcards.method, wildcards.model)


def tune_grid(wildcards):
    """The method's grid with every axis explicit (an axis the config leaves out takes the configured value)."""
    return tuning.method_grid(TUNE["grid"], wildcards.method, tune_hparams(wildcards))


def tune_stats(wildcards):
    """One statistics file covering every layer of the grid, shared by the methods (and by the edits when the
    layer sets agree)."""
    return rules.compute_layer_stats.output.npz.format(
        **{**mc.stats_wildcards(config, wildcards.model, wildcards.method),
           "layers": mc.stats_layers_key(tuning.grid_layers(TUNE["grid"]))}
    )


def tune_work(wildcards):
    """Units of work per billion parameters: one per edit of each residual pass, one per trial's update and
    scoring."""
    grid = tune_grid(wildcards)
    return len(tuning.residual_combinations(grid)) * TUNE["n_edits"] + tuning.n_trials(grid)


rule tune_method:
    input:
        model=rules.acquire_model.output.hf,
        # The whole dataset: the rule applies the known-fact filter itself and holds its edits out of every
        # batch the grid evaluates.
        records=lambda wildcards: rules.prepare_dataset.output.records.format(dataset=TUNE["dataset"]),
        stats=tune_stats,
    output:
        search="results/tune/{model}/{method}/search.csv",
        chosen="results/tune/{model}/{method}/chosen.yaml",
        meta="results/tune/{model}/{method}/tune.json",
    wildcard_constraints:
        method=mc.alternatives(config["methods"]),
    # The settings the trials set themselves are left out of base_hp, so adding the chosen fragment to the
    # config reruns no search; the grid carries them instead.
    params:
        base_hp=lambda wildcards: tuning.search_hparams(tune_hparams(wildcards), wildcards.method),
        grid=tune_grid,
        selection=tuning.selection(config, TUNE),
        model_cfg=lambda wildcards: mc.model_spec(config, wildcards.model),
        dataset_spec=mc.dataset_spec(config, TUNE["dataset"]),
        seed=config["seed"],
    threads: MODEL_THREADS
    # The known-fact filter scores the whole dataset (as select_edits, about 5 minutes per billion
    # parameters); then about 0.05 minutes per unit of tune_work and billion parameters, with slack.
    resources:
        gpu=GPU_SLOT,
        gres=GPU_GRES,
        slurm_partition=GPU_PARTITION,
        slurm_account=SLURM_ACCOUNT,
        mem_mb=model_mem_mb(8000, 2),
        runtime=lambda wildcards, attempt: int(30 + params_b(wildcards.model) * (5 + 0.05 * tune_work(wildcards)))
        * attempt,
    log:
        "logs/tune_method/{model}/{method}.log",
    benchmark:
        "benchmarks/tune_method/{model}/{method}.tsv"
    conda:
        "../envs/editing.yaml"
    script:
        "../scripts/tune.py"


localrules:
    tune,


rule tune:
    input:
        expand(rules.tune_method.output.chosen, model=TUNE["models"], method=TUNE["methods"]),
