# Tables and figures over every evaluation of the grid; cheap, so they run on the submitting node.


localrules:
    make_tables,
    plot_scaling,


rule make_tables:
    input:
        summaries=grid_summaries,
    output:
        csv=report(
            "results/tables/main.csv",
            caption="../report/main_table.rst",
            category="Tables",
            labels={"table": "main"},
        ),
        md="results/tables/main.md",
    resources:
        mem_mb=2000,
        runtime=10,
    log:
        "logs/make_tables/main.log",
    conda:
        "../envs/report.yaml"
    script:
        "../scripts/make_tables.py"


rule plot_scaling:
    input:
        summaries=grid_summaries,
    output:
        png=report(
            "results/figures/scaling.png",
            caption="../report/scaling.rst",
            category="Figures",
            labels={"figure": "scaling"},
        ),
    resources:
        mem_mb=2000,
        runtime=10,
    log:
        "logs/plot_scaling/main.log",
    conda:
        "../envs/report.yaml"
    script:
        "../scripts/plot_scaling.py"


localrules:
    compare_with_paper,
    make_table3,
    plot_prefix_robustness,
    plot_facts_per_subject,
    plot_general_ability,


# Reproduced next to reported: the main table, and Table 3 and Figure 5 when their analyses are configured.
rule compare_with_paper:
    input:
        summaries=grid_summaries,
        misalignment=misalignment_scores,
        prefix_summaries=prefix_robustness_summaries,
    output:
        long_csv="results/tables/comparison_long.csv",
        csv="results/tables/comparison.csv",
        md=report(
            "results/tables/comparison.md",
            caption="../report/comparison.rst",
            category="Tables",
            labels={"table": "paper vs reproduced"},
        ),
    params:
        names=lambda wildcards: __import__("massedit.reporting", fromlist=["paper_names"]).paper_names(config),
    resources:
        mem_mb=2000,
        runtime=10,
    log:
        "logs/compare_with_paper/main.log",
    conda:
        "../envs/report.yaml"
    script:
        "../scripts/compare_with_paper.py"


rule make_table3:
    input:
        scores=misalignment_scores,
    output:
        csv=report(
            "results/tables/table3_misalignment.csv",
            caption="../report/table3.rst",
            category="Tables",
            labels={"table": "Table 3 (misalignment)"},
        ),
        md="results/tables/table3_misalignment.md",
    resources:
        mem_mb=2000,
        runtime=10,
    log:
        "logs/make_table3/main.log",
    conda:
        "../envs/report.yaml"
    script:
        "../scripts/make_table3.py"


rule plot_prefix_robustness:
    input:
        summaries=prefix_robustness_summaries,
    output:
        png=report(
            "results/figures/figure5_prefix_robustness.png",
            caption="../report/figure5.rst",
            category="Figures",
            labels={"figure": "5 (prefix length)"},
        ),
    params:
        figure="prefix_robustness",
        names=lambda wildcards: __import__("massedit.reporting", fromlist=["paper_names"]).paper_names(config),
        n_edits=config["analyses"].get("prefix_robustness", {}).get("n_edits"),
    resources:
        mem_mb=2000,
        runtime=10,
    log:
        "logs/plot_figures/prefix_robustness.log",
    conda:
        "../envs/report.yaml"
    script:
        "../scripts/plot_figures.py"


rule plot_facts_per_subject:
    input:
        summaries=fps_summaries,
    output:
        png=report(
            "results/figures/figure6_facts_per_subject.png",
            caption="../report/figure6.rst",
            category="Figures",
            labels={"figure": "6 (facts per subject)"},
        ),
    params:
        figure="facts_per_subject",
        facts=fps_values(),
    resources:
        mem_mb=2000,
        runtime=10,
    log:
        "logs/plot_figures/facts_per_subject.log",
    conda:
        "../envs/report.yaml"
    script:
        "../scripts/plot_figures.py"


rule plot_general_ability:
    input:
        results=general_results,
    output:
        png=report(
            "results/figures/figure9_general_ability.png",
            caption="../report/figure9.rst",
            category="Figures",
            labels={"figure": "9 (general ability)"},
        ),
    params:
        figure="general_ability",
    resources:
        mem_mb=2000,
        runtime=10,
    log:
        "logs/plot_figures/general_ability.log",
    conda:
        "../envs/report.yaml"
    script:
        "../scripts/plot_figures.py"
