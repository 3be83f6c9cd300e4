"""Editing metrics against the number of edits (not a paper figure: the workflow's own overview)."""
from __future__ import annotations

from massedit.reporting._plot import pyplot, save_png
from massedit.reporting.tables import main_table


def curve_rows(table):
    """The rows of the (model, dataset) pairs evaluated at more than one batch size, the ones a curve can
    show; every row when no pair has two (the main table holds the rest)."""
    sizes = table.groupby(["Model", "Dataset"])["N"].transform("nunique")
    return table[sizes > 1] if bool((sizes > 1).any()) else table


def plot_scaling(summaries: list[dict], out_png: str) -> None:
    """Practical efficacy and generalisation against the number of edits, one line per method."""
    plt = pyplot()
    table = curve_rows(main_table(summaries))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    groups = table.groupby(["Model", "Dataset", "Method"], sort=False)
    many = table[["Model", "Dataset"]].drop_duplicates().shape[0] > 1
    markers = "osD^vP*X"
    for ax, column in zip(axes, ("Eff.", "Gen.")):
        for k, ((model, dataset, method), rows) in enumerate(groups):
            if column not in rows:
                continue
            rows = rows.sort_values("N")
            label = f"{method} ({model}, {dataset})" if many else method
            style = "--" if method == "Pre-edit" else "-"
            # distinct markers and sizes keep coinciding curves visible
            ax.plot(rows["N"], rows[column], style, marker=markers[k % len(markers)], markersize=9 - k % 4,
                    alpha=0.85, label=label)
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(table["N"].unique()))
        ax.set_xticklabels([str(n) for n in sorted(table["N"].unique())])
        ax.minorticks_off()
        ax.set_xlabel("number of edits (one batch)")
        ax.set_title(f"{column} (practical accuracy, %)")
        ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy (%)")
    # beside the panels, so a long legend never hides a curve
    axes[1].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, borderaxespad=0)
    if not many:
        model, dataset = table[["Model", "Dataset"]].iloc[0]
        fig.suptitle(f"{model} on {dataset}")
    fig.tight_layout()
    save_png(fig, out_png)
