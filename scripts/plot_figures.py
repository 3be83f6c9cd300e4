"""Rules plot_prefix_robustness, plot_facts_per_subject and plot_general_ability (Figures 5, 6 and 9)."""
from _wiring import redirect_logs

if "snakemake" in globals():
    redirect_logs(snakemake.log[0])
    from massedit import steps

    figure = snakemake.params.figure
    if figure == "prefix_robustness":
        steps.plot_prefix_robustness(list(snakemake.input.summaries), snakemake.params.names,
                                     snakemake.params.n_edits, snakemake.output.png)
    elif figure == "facts_per_subject":
        steps.plot_facts_per_subject(list(snakemake.input.summaries), snakemake.params.facts, snakemake.output.png)
    elif figure == "general_ability":
        steps.plot_general_ability(list(snakemake.input.results), snakemake.output.png)
    else:
        raise ValueError(f"unknown figure {figure!r}")
