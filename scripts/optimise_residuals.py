"""Rule optimise_residuals: the residual phase of one batch, saved for every smaller batch of its records."""
from _wiring import limit_threads, redirect_logs

if "snakemake" in globals():
    redirect_logs(snakemake.log[0])
    limit_threads(snakemake.threads)
    from massedit import preflight, steps

    preflight.check_job(snakemake.config, model=snakemake.wildcards.model, method=snakemake.wildcards.method,
                        model_dir=snakemake.input.model)

    steps.optimise_residuals(snakemake.wildcards.method, snakemake.params.hparams, snakemake.input.model,
                             snakemake.params.model_cfg, snakemake.input.records, snakemake.params.seed,
                             snakemake.output.residuals, snakemake.output.get("timings"))
