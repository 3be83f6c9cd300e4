"""Rule prepare_general_task: one general-ability task file, from the mirror or the authors' repository."""
from _wiring import redirect_logs

if "snakemake" in globals():
    redirect_logs(snakemake.log[0])
    from massedit import steps

    steps.prepare_general_task(snakemake.wildcards.task, snakemake.params.mirror_dir, snakemake.params.download_dir,
                               snakemake.params.subdir, snakemake.output.json, snakemake.output.manifest)
