"""Rule compare_with_paper: reproduced numbers next to the paper's (main table, Table 3, Figure 5)."""
from _wiring import redirect_logs

if "snakemake" in globals():
    redirect_logs(snakemake.log[0])
    from massedit import steps

    steps.compare_with_paper(list(snakemake.input.summaries), list(snakemake.input.misalignment),
                             list(snakemake.input.prefix_summaries), snakemake.params.names,
                             snakemake.output.long_csv, snakemake.output.csv, snakemake.output.md)
