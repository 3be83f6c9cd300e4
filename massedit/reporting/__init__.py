"""Tables, figures and paper comparisons from evaluation summaries and edit artefacts.

``tables``        the main results table (main_table, write_table)
``scaling``       metrics against the number of edits (plot_scaling)
``paper``         the paper's reported numbers, shipped as paper_numbers.csv (load_paper_numbers)
``comparison``    reproduced versus paper in the long format of evaluation.md §6.6
``misalignment``  Table 3's key/residual misalignment score
``figures``       Figures 5, 6 and 9

Everything here needs only numpy, pandas and matplotlib (the report environment has no torch).
"""
from massedit.reporting.comparison import (compare, comparison_markdown, long_table, paper_names, reproduced_long,
                                           write_comparison)
from massedit.reporting.figures import plot_facts_per_subject, plot_general_ability, plot_prefix_robustness
from massedit.reporting.misalignment import misalignment_record, misalignment_score, misalignment_variants
from massedit.reporting.paper import load_paper_numbers
from massedit.reporting.scaling import plot_scaling
from massedit.reporting.tables import COLUMNS, METHOD_LABELS, main_table, write_table

__all__ = [
    "COLUMNS", "METHOD_LABELS", "main_table", "write_table", "plot_scaling", "load_paper_numbers",
    "paper_names", "reproduced_long", "long_table", "compare", "comparison_markdown", "write_comparison",
    "misalignment_score", "misalignment_variants", "misalignment_record",
    "plot_prefix_robustness", "plot_facts_per_subject", "plot_general_ability",
]
