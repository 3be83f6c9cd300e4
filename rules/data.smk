# Datasets: the normalised records (model-independent), then the edit batches chosen for one model.


rule prepare_dataset:
    output:
        records="resources/datasets/{dataset}/records.jsonl",
        manifest="resources/datasets/{dataset}/manifest.json",
    params:
        spec=lambda wildcards: mc.dataset_spec(config, wildcards.dataset),
        download_dir=mc.DOWNLOAD_DIR,
    threads: 1
    resources:
        mem_mb=mem_mb(4000),
        runtime=30,
    log:
        "logs/prepare_dataset/{dataset}.log",
    benchmark:
        "benchmarks/prepare_dataset/{dataset}.tsv"
    conda:
        "../envs/data.yaml"
    script:
        "../scripts/prepare_dataset.py"


# The optional known-fact filter needs the model, so edit batches are per model.
rule select_edits:
    input:
        records=rules.prepare_dataset.output.records,
        model=rules.acquire_model.output.hf,
    output:
        records="resources/edits/{model}/{dataset}/n{n}/records.jsonl",
        manifest="resources/edits/{model}/{dataset}/n{n}/manifest.json",
    params:
        model_cfg=lambda wildcards: mc.model_spec(config, wildcards.model),
        dataset_spec=lambda wildcards: mc.dataset_spec(config, wildcards.dataset),
        seed=config["seed"],
    threads: TORCH_THREADS
    resources:
        gpu=1,
        mem_mb=mem_mb(16000),
        runtime=60,
    log:
        "logs/select_edits/{model}/{dataset}/n{n}.log",
    benchmark:
        "benchmarks/select_edits/{model}/{dataset}/n{n}.tsv"
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/select_edits.py"
