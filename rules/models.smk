# Model acquisition: every source ends as a Hugging Face directory plus a manifest with checksums.


rule acquire_model:
    input:
        local=local_model_source,
    output:
        hf=directory("resources/models/{model}/hf"),
        manifest="resources/models/{model}/manifest.json",
        fingerprint="resources/models/{model}/fingerprint.json",
    params:
        spec=lambda wildcards: mc.model_spec(config, wildcards.model),
        download_dir=mc.DOWNLOAD_DIR,
    threads: 1
    resources:
        mem_mb=model_mem_mb(4000, 2),
        runtime=model_runtime(30, 10),
        slurm_partition=CPU_PARTITION,
        slurm_account=SLURM_ACCOUNT,
    log:
        "logs/acquire_model/{model}.log",
    benchmark:
        "benchmarks/acquire_model/{model}.tsv"
    conda:
        "../envs/model.yaml"
    script:
        "../scripts/acquire_model.py"
