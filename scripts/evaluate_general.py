"""Rule evaluate_general: general-ability tasks (SST-2, MRPC, CoLA, RTE, MMLU, NLI) of a model, edited or not."""
from _wiring import limit_threads, redirect_logs


def main(model_dir: str, model_cfg: dict, deltas: str | None, tasks: dict, general_cfg: dict, eval_cfg: dict,
         out_json: str, labels: dict, threads: int = 1) -> None:
    limit_threads(threads)
    from massedit import steps

    steps.evaluate_general(model_dir, model_cfg, deltas, tasks, general_cfg, eval_cfg, out_json, labels)


if "snakemake" in globals():
    from pathlib import Path

    redirect_logs(snakemake.log[0])
    from massedit.config import eval_runtime

    deltas = snakemake.input.get("deltas", [])
    deltas = [deltas] if isinstance(deltas, str) else list(deltas)
    main(
        snakemake.input.model,
        snakemake.params.model_cfg,
        deltas[0] if deltas else None,
        {Path(path).stem: path for path in snakemake.input.tasks},
        snakemake.params.general_cfg,
        {**snakemake.params.eval_cfg, **eval_runtime(snakemake.config)},
        snakemake.output.json,
        snakemake.params.labels,
        snakemake.threads,
    )
