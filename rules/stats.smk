# Preservation statistics: one pass over the corpus yields every layer of the set. Everything that
# determines the result is in the file name or in params, so the between-workflow cache never confuses
# two settings; batch sizes are read at run time because they only change speed.
from massedit.corpora import input_files as corpus_input_files


rule compute_layer_stats:
    # The fingerprint, not the directory, is the input: the between-workflow cache hashes input files
    # and cannot hash a directory. The job reads the directory next to it (config.model_dir_of).
    # The corpus files (text_files corpora), mirror paths resolved: checked against their pins when read,
    # and touching or restoring one reruns the statistics.
    input:
        fingerprint=rules.acquire_model.output.fingerprint,
        corpus=lambda wildcards: corpus_input_files(mc.corpus_spec(config, wildcards.corpus), mc.mirror_dir(config)),
    output:
        multiext(
            "resources/stats/{model}/{corpus}/L{layers}_d{n_docs}_t{maxlen}_{dtype}",
            npz=".npz",
            json=".json",
        ),
    params:
        model_cfg=lambda wildcards: mc.model_spec(config, wildcards.model),
        corpus_spec=lambda wildcards: mc.corpus_spec(config, wildcards.corpus),
        seed=lambda wildcards: mc.stats_settings(config, wildcards.model)["seed"],
    threads: MODEL_THREADS
    # Time grows with the tokens pushed through the model: about 1e-6 GPU minutes per token and billion
    # parameters, doubled for slack.
    resources:
        gpu=GPU_SLOT,
        gres=GPU_GRES,
        slurm_partition=GPU_PARTITION,
        slurm_account=SLURM_ACCOUNT,
        mem_mb=model_mem_mb(8000, 1.5),
        runtime=model_runtime(30, 2e-6, stats_tokens),
    log:
        "logs/compute_layer_stats/{model}/{corpus}/L{layers}_d{n_docs}_t{maxlen}_{dtype}.log",
    # No benchmark: Snakemake forbids it on cacheable rules (a cache hit could not fill it); the .json
    # sidecar records the wall time instead.
    cache: "omit-software"
    conda:
        "../envs/model.yaml"
    script:
        "../scripts/compute_layer_stats.py"


# AlphaEdit's null-space projections: one eigendecomposition of d_ff x d_ff per layer, cached next to the
# statistics they come from and shared by every AlphaEdit edit of the model.
rule null_space_projections:
    input:
        stats="resources/stats/{model}/{corpus}/L{layers}_d{n_docs}_t{maxlen}_{dtype}.npz",
    output:
        pt="resources/projections/{model}/{corpus}/L{layers}_d{n_docs}_t{maxlen}_{dtype}_thr{threshold}.pt",
        json="resources/projections/{model}/{corpus}/L{layers}_d{n_docs}_t{maxlen}_{dtype}_thr{threshold}.json",
    wildcard_constraints:
        threshold=r"[0-9.eE+-]+",
    threads: MODEL_THREADS
    resources:
        gpu=GPU_SLOT,
        gres=GPU_GRES,
        slurm_partition=GPU_PARTITION,
        slurm_account=SLURM_ACCOUNT,
        mem_mb=model_mem_mb(8000, 0.5),
        runtime=60,
    log:
        "logs/null_space_projections/{model}/{corpus}/L{layers}_d{n_docs}_t{maxlen}_{dtype}_thr{threshold}.log",
    conda:
        "../envs/editing.yaml"
    script:
        "../scripts/null_space_projections.py"
