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
