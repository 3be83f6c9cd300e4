# Preservation statistics: one pass over the corpus yields every layer of the set. Everything that
# determines the result is in the file name or in params, so the between-workflow cache never confuses
# two settings; batch sizes are read at run time because they only change speed. The file also carries
# that key inside (massedit.caches), and every reader checks it against the key it needs.
from snakemake.logging import logger

from massedit import caches


def stats_file_settings(stats_wildcards):
    """The settings a statistics file must have been computed with, from the wildcards of its path (model,
    corpus, layers, n_docs, maxlen, dtype) and the config (seed, corpus spec): what its readers check."""
    return {
        "corpus": stats_wildcards["corpus"],
        "corpus_spec": mc.corpus_spec(config, stats_wildcards["corpus"]),
        "layers": mc.parse_layers_key(str(stats_wildcards["layers"])),
        "n_docs": int(stats_wildcards["n_docs"]),
        "maxlen": int(stats_wildcards["maxlen"]),
        "dtype": stats_wildcards["dtype"],
        "seed": mc.stats_settings(config, stats_wildcards["model"])["seed"],
    }


REFUSED_STATS = set()


def checked_stats(stats_path, stats_wildcards):
    """An input function's statistics file, refused while Snakemake builds the DAG when it exists but cannot
    be opened or its stored key contradicts its name. Snakemake deletes a job's outputs before it starts, so
    only a refusal here keeps a consumer's good outputs: Snakemake then leaves a consumer whose outputs exist
    alone (it drops the job; hence the warning, once per file) and reports the error for one whose outputs
    are missing."""
    if stats_path and Path(stats_path).exists():
        try:
            caches.check_stats_name(stats_path, stats_file_settings(stats_wildcards))
        except caches.io.ArtefactError as err:
            if stats_path not in REFUSED_STATS:
                REFUSED_STATS.add(stats_path)
                logger.warning(f"Refusing {err}\nJobs reading it are not run; their earlier outputs are kept.")
            raise
    return stats_path
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
            timings=".timings.json",
        ),
    params:
        model_cfg=lambda wildcards: mc.model_spec(config, wildcards.model),
        corpus_spec=lambda wildcards: mc.corpus_spec(config, wildcards.corpus),
        seed=lambda wildcards: mc.stats_settings(config, wildcards.model)["seed"],
        # A new file format (what the stored key holds) reruns the statistics instead of refusing old files.
        cache_format=caches.STATS_FORMAT,
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
    # No benchmark: Snakemake forbids it on cacheable rules (a cache hit could not fill it); the
    # .timings.json output records the wall time instead, apart from the results so they stay byte-identical.
    cache: "omit-software"
    conda:
        "../envs/model.yaml"
    script:
        "../scripts/compute_layer_stats.py"


# AlphaEdit's null-space projections: one eigendecomposition of d_ff x d_ff per layer, cached next to the
# statistics they come from and shared by every AlphaEdit edit of the model.
rule null_space_projections:
    input:
        stats=lambda wildcards: checked_stats(fill(rules.compute_layer_stats.output.npz, wildcards), wildcards),
        # the weights the statistics must have been computed from (checked against the file's key)
        fingerprint=rules.acquire_model.output.fingerprint,
    output:
        pt="resources/projections/{model}/{corpus}/L{layers}_d{n_docs}_t{maxlen}_{dtype}_thr{threshold}.pt",
        json="resources/projections/{model}/{corpus}/L{layers}_d{n_docs}_t{maxlen}_{dtype}_thr{threshold}.json",
        timings="resources/projections/{model}/{corpus}/L{layers}_d{n_docs}_t{maxlen}_{dtype}_thr{threshold}.timings.json",
    wildcard_constraints:
        threshold=r"[0-9.eE+-]+",
    params:
        model_cfg=lambda wildcards: mc.model_spec(config, wildcards.model),
        stats_settings=lambda wildcards: stats_file_settings(wildcards),
        cache_format=caches.PROJECTIONS_FORMAT,
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
