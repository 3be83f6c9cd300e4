# The paper's analyses beyond the main grid (config `analyses`): the same edits evaluated again at longer
# prefixes (Figure 5), general abilities before and after editing (Figure 9) and the misalignment score of
# the saved keys and residuals (Table 3). Figure 6 needs no rule of its own: its subsets are datasets.


# Figure 5 re-evaluates the edited model; it never edits again. Fluency is not part of the figure.
rule evaluate_prefix_length:
    input:
        model=rules.acquire_model.output.hf,
        records=rules.select_edits.output.records,
        prefixes=lambda wildcards: rules.generate_eval_prefixes.output.prefixes.format(
            model=wildcards.model, prefix_len=wildcards.prefix_len, seed=config["evaluation"]["prefix_seed"]
        ),
        deltas=eval_deltas,
    output:
        records="results/prefix_robustness/{model}/{dataset}/{method}/n{n}/len{prefix_len}/records.jsonl",
        summary="results/prefix_robustness/{model}/{dataset}/{method}/n{n}/len{prefix_len}/summary.json",
    params:
        model_cfg=lambda wildcards: mc.model_spec(config, wildcards.model),
        eval_cfg={**mc.eval_settings(config), "fluency_max_new_tokens": 0},
        labels=lambda wildcards: mc.labels(
            config, wildcards.model, wildcards.dataset, wildcards.method, wildcards.n
        ),
    threads: MODEL_THREADS
    resources:
        gpu=GPU_SLOT,
        gres=GPU_GRES,
        slurm_partition=GPU_PARTITION,
        slurm_account=SLURM_ACCOUNT,
        mem_mb=model_mem_mb(8000, 1.5),
        runtime=model_runtime(30, 0.005, edits),
    log:
        "logs/evaluate_prefix_length/{model}/{dataset}/{method}/n{n}/len{prefix_len}.log",
    benchmark:
        "benchmarks/evaluate_prefix_length/{model}/{dataset}/{method}/n{n}/len{prefix_len}.tsv"
    conda:
        "../envs/editing.yaml"
    script:
        "../scripts/evaluate_model.py"


rule evaluate_general:
    input:
        model=rules.acquire_model.output.hf,
        deltas=eval_deltas,
        tasks=expand(rules.prepare_general_task.output.json, task=config["evaluation"]["general"]["tasks"]),
    output:
        json="results/general/{model}/{dataset}/{method}/n{n}.json",
    params:
        model_cfg=lambda wildcards: mc.model_spec(config, wildcards.model),
        general_cfg=mc.general_settings(config),
        eval_cfg=mc.eval_settings(config),
        labels=lambda wildcards: mc.labels(
            config, wildcards.model, wildcards.dataset, wildcards.method, wildcards.n
        ),
    threads: MODEL_THREADS
    resources:
        gpu=GPU_SLOT,
        gres=GPU_GRES,
        slurm_partition=GPU_PARTITION,
        slurm_account=SLURM_ACCOUNT,
        mem_mb=model_mem_mb(8000, 1.5),
        runtime=model_runtime(30, 2),
    log:
        "logs/evaluate_general/{model}/{dataset}/{method}/n{n}.log",
    benchmark:
        "benchmarks/evaluate_general/{model}/{dataset}/{method}/n{n}.tsv"
    conda:
        "../envs/editing.yaml"
    script:
        "../scripts/evaluate_general.py"


# numpy on the saved artefacts: cheap, so it runs on the submitting node.
localrules:
    misalignment_score,


rule misalignment_score:
    input:
        artefacts=rules.edit_model.output.artefacts,
    output:
        json="results/misalignment/{model}/{dataset}/{method}/n{n}.json",
    params:
        labels=lambda wildcards: mc.labels(
            config, wildcards.model, wildcards.dataset, wildcards.method, wildcards.n
        ),
        tau=config["analyses"].get("misalignment", {}).get("tau", 0.07),
    resources:
        mem_mb=4000,
        runtime=30,
    log:
        "logs/misalignment_score/{model}/{dataset}/{method}/n{n}.log",
    conda:
        "../envs/report.yaml"
    script:
        "../scripts/misalignment_score.py"
