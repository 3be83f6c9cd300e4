"""Rule misalignment_score: Table 3's score of one edit from its saved keys and residuals."""
from _wiring import redirect_logs

if "snakemake" in globals():
    redirect_logs(snakemake.log[0])
    from massedit import steps

    steps.misalignment_score(snakemake.input.artefacts, snakemake.params.labels, snakemake.params.tau,
                             snakemake.output.json)
