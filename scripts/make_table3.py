"""Rule make_table3: the misalignment scores of every scored edit as one table."""
from _wiring import redirect_logs

if "snakemake" in globals():
    redirect_logs(snakemake.log[0])
    from massedit import steps

    steps.misalignment_table(list(snakemake.input.scores), snakemake.output.csv, snakemake.output.md)
