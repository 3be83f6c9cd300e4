# Datasets: the normalised records (model-independent), then the edit batches chosen for one model.
from massedit.datasets import dataset_mirror_files
from massedit.datasets.general_tasks import task_mirror_files


# The mirror files a job reads are its inputs (each is checked against its pinned sha256 when read), so
# touching or restoring one reruns the jobs that read it. A file the job downloads instead (no mirror, or
# the mirror lacks it) is not an input: it does not exist when the workflow is planned.
def dataset_mirror_inputs(wildcards):
    return dataset_mirror_files(mc.dataset_spec(config, wildcards.dataset), mc.mirror_dir(config))


def general_task_mirror_inputs(wildcards):
    return task_mirror_files(wildcards.task, mc.mirror_dir(config), config["evaluation"]["general"]["dir"])


# A download and a format conversion: cheap, and it needs the network, which compute nodes often lack.
localrules:
    prepare_dataset,
    prepare_general_task,
    select_edits,


rule prepare_dataset:
    input:
        mirror=dataset_mirror_inputs,
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


rule prepare_general_task:
    input:
        mirror=general_task_mirror_inputs,
    output:
        json="resources/general/{task}.json",
        manifest="resources/general/{task}.manifest.json",
    wildcard_constraints:
        task=r"sst2|mrpc|cola|rte|mmlu|nli",
    params:
        mirror_dir=config["mirror_dir"],
        download_dir=mc.DOWNLOAD_DIR,
        subdir=config["evaluation"]["general"]["dir"],
    threads: 1
    resources:
        mem_mb=mem_mb(2000),
        runtime=30,
    log:
        "logs/prepare_general_task/{task}.log",
    conda:
        "../envs/data.yaml"
    script:
        "../scripts/prepare_general_task.py"


# The optional known-fact filter needs the model: once per model x dataset, before any batch is chosen.
rule filter_known:
    input:
        records=rules.prepare_dataset.output.records,
        model=rules.acquire_model.output.hf,
    output:
        records="resources/known/{model}/{dataset}/records.jsonl",
        manifest="resources/known/{model}/{dataset}/manifest.json",
    params:
        model_cfg=lambda wildcards: mc.model_spec(config, wildcards.model),
    threads: MODEL_THREADS
    # It scores the whole dataset with the model, so it asks for a GPU like evaluation.
    resources:
        gpu=GPU_SLOT,
        gres=GPU_GRES,
        slurm_partition=GPU_PARTITION,
        slurm_account=SLURM_ACCOUNT,
        mem_mb=model_mem_mb(4000, 1.5),
        runtime=model_runtime(30, 5),
    log:
        "logs/filter_known/{model}/{dataset}.log",
    benchmark:
        "benchmarks/filter_known/{model}/{dataset}.tsv"
    conda:
        "../envs/editing.yaml"
    script:
        "../scripts/filter_known.py"


# Batches are per model because the known-fact filter is; choosing them is cheap.
rule select_edits:
    input:
        unpack(selection_source),
    output:
        records="resources/edits/{model}/{dataset}/n{n}/records.jsonl",
        manifest="resources/edits/{model}/{dataset}/n{n}/manifest.json",
    params:
        dataset_spec=lambda wildcards: mc.dataset_spec(config, wildcards.dataset),
        seed=config["seed"],
    threads: 1
    # as optimise_residuals: the largest batches feed the longest jobs
    priority: edits
    resources:
        mem_mb=mem_mb(2000),
        runtime=10,
    log:
        "logs/select_edits/{model}/{dataset}/n{n}.log",
    benchmark:
        "benchmarks/select_edits/{model}/{dataset}/n{n}.tsv"
    conda:
        "../envs/editing.yaml"
    script:
        "../scripts/select_edits.py"
