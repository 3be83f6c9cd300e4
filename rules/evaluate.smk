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
    threads: MODEL_THREADS
    # Ten short generations: the model's loading dominates, so no GPU is asked for.
    resources:
        gpu=GPU_SLOT,
        slurm_partition=CPU_PARTITION,
        slurm_account=SLURM_ACCOUNT,
        mem_mb=model_mem_mb(4000, 1.5),
        runtime=model_runtime(15, 2),
    log:
        "logs/generate_eval_prefixes/{model}/len{prefix_len}_seed{seed}.log",
    benchmark:
        "benchmarks/generate_eval_prefixes/{model}/len{prefix_len}_seed{seed}.tsv"
    conda:
        "../envs/editing.yaml"
    script:
        "../scripts/generate_eval_prefixes.py"


# method "unedited" takes no deltas: the pre-edit row of the tables, once per model x dataset x n.
rule evaluate_model:
    input:
        model=rules.acquire_model.output.hf,
        records=rules.select_edits.output.records,
        prefixes=eval_prefixes,
        deltas=eval_deltas,
        head_of=unedited_head_source,
    output:
        records="results/eval/{model}/{dataset}/{method}/n{n}/records.jsonl",
        summary="results/eval/{model}/{dataset}/{method}/n{n}/summary.json",
        # wall-clock times, apart from the summary so that a rerun gives identical bytes
        timings="results/eval/{model}/{dataset}/{method}/n{n}/timings.json",
    params:
        model_cfg=lambda wildcards: mc.model_spec(config, wildcards.model),
        eval_cfg=mc.eval_settings(config),
        labels=lambda wildcards: mc.labels(
            config, wildcards.model, wildcards.dataset, wildcards.method, wildcards.n
        ),
    threads: MODEL_THREADS
    group: "edit_and_evaluate"
    resources:
        gpu=GPU_SLOT,
        gres=GPU_GRES,
        slurm_partition=GPU_PARTITION,
        slurm_account=SLURM_ACCOUNT,
        mem_mb=model_mem_mb(8000, 1.5),
        runtime=model_runtime(30, 0.005, edits),
    log:
        "logs/evaluate_model/{model}/{dataset}/{method}/n{n}.log",
    benchmark:
        "benchmarks/evaluate_model/{model}/{dataset}/{method}/n{n}.tsv"
    conda:
        "../envs/editing.yaml"
    script:
        "../scripts/evaluate_model.py"
