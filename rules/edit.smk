# One batch of edits per model x dataset x method x n. params carry the resolved hyperparameters, so a
# change to one method's settings reruns only that method's edits and what follows from them.


rule edit_model:
    input:
        model=rules.acquire_model.output.hf,
        records=rules.select_edits.output.records,
        stats=stats_for_method,
    output:
        deltas="results/edits/{model}/{dataset}/{method}/n{n}/deltas.pt",
        artefacts="results/edits/{model}/{dataset}/{method}/n{n}/artefacts.npz",
        meta="results/edits/{model}/{dataset}/{method}/n{n}/edit.json",
    wildcard_constraints:
        method=mc.alternatives(config["methods"]),
    params:
        hparams=lambda wildcards: mc.resolve_hparams(config, wildcards.method, wildcards.model),
        model_cfg=lambda wildcards: mc.model_spec(config, wildcards.model),
        seed=config["seed"],
    threads: TORCH_THREADS
    resources:
        gpu=1,
        mem_mb=mem_mb(32000),
        runtime=24 * 60,
    log:
        "logs/edit_model/{model}/{dataset}/{method}/n{n}.log",
    benchmark:
        "benchmarks/edit_model/{model}/{dataset}/{method}/n{n}.tsv"
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/edit_model.py"
