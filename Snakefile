# massedit: mass model editing (EAMET, MEMIT) from model download to tables and figures.
# `snakemake --cores all` builds the grid in config/config.yaml; see README.md.
from snakemake.utils import min_version

# 9.18 stores input checksums, so touched but unchanged inputs rerun nothing.
min_version("9.18")


configfile: "config/config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/models.smk"
include: "rules/data.smk"
include: "rules/stats.smk"
include: "rules/edit.smk"
include: "rules/evaluate.smk"
include: "rules/analyses.smk"
include: "rules/report.smk"
include: "rules/tune.smk"


localrules:
    all,


rule all:
    default_target: True
    input:
        rules.make_tables.output,
        rules.plot_scaling.output,
        rules.compare_with_paper.output,
        analysis_targets,
