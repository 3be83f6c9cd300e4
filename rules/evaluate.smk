# Evaluation prefixes are sampled once per model from the unedited model and shared by every method, so
# all methods are scored on identical prompts.


rule generate_eval_prefixes:
    input:
        model=rules.acquire_model.output.hf,
    output:
        prefixes="resources/prefixes/{model}/len{prefix_len}_seed{seed}.json",
    params:
        model_cfg=lambda wildcards: mc.model_spec(config, wildcards.model),
        n_prefixes=config["evaluation"]["n_prefixes"],
    threads: TORCH_THREADS
    resources:
        gpu=1,
        mem_mb=mem_mb(16000),
        runtime=30,
    log:
        "logs/generate_eval_prefixes/{model}/len{prefix_len}_seed{seed}.log",
    benchmark:
        "benchmarks/generate_eval_prefixes/{model}/len{prefix_len}_seed{seed}.tsv"
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/generate_eval_prefixes.py"


# method "unedited" takes no deltas: the pre-edit row of the tables, once per model x dataset x n.
rule evaluate_model:
    input:
        model=rules.acquire_model.output.hf,
        records=rules.select_edits.output.records,
        prefixes=eval_prefixes,
        deltas=eval_deltas,
    output:
        records="results/eval/{model}/{dataset}/{method}/n{n}/records.jsonl",
        summary="results/eval/{model}/{dataset}/{method}/n{n}/summary.json",
    params:
        model_cfg=lambda wildcards: mc.model_spec(config, wildcards.model),
        eval_cfg=mc.eval_settings(config),
        labels=lambda wildcards: mc.labels(
            config, wildcards.model, wildcards.dataset, wildcards.method, wildcards.n
        ),
    threads: TORCH_THREADS
    resources:
        gpu=1,
        mem_mb=mem_mb(32000),
        runtime=12 * 60,
    log:
        "logs/evaluate_model/{model}/{dataset}/{method}/n{n}.log",
    benchmark:
        "benchmarks/evaluate_model/{model}/{dataset}/{method}/n{n}.tsv"
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/evaluate_model.py"
