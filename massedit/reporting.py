"""Tables and figures from evaluation summaries (evaluation.md §4: the paper's column names)."""
from __future__ import annotations

import math

import pandas as pd

from massedit import io

METHOD_LABELS = {"unedited": "Pre-edit", "eamet": "EAMET", "memit": "MEMIT", "pmet": "PMET",
                 "alphaedit": "AlphaEdit", "rome": "ROME", "ft": "FT"}
# paper column -> summary key; accuracies are ×100, fluency unscaled
COLUMNS = {
    "Eff.": "rewrite_acc",
    "Gen.": "paraphrase_acc",
    "Spe.": "neighborhood_acc",
    "Flu.": "fluency",
    "Eff. (lenient)": "rewrite_lenient",
    "Gen. (lenient)": "paraphrase_lenient",
    "Spe. (lenient)": "neighborhood_lenient",
}


def _method_order(method: str) -> tuple[int, str]:
    order = list(METHOD_LABELS)
    return (order.index(method) if method in order else len(order), method)


def main_table(summaries: list[dict]) -> pd.DataFrame:
    """One row per model × dataset × number of edits × method, the pre-edit row first."""
    rows = []
    for s in summaries:
        row = {"Model": s["model"], "Dataset": s["dataset"], "N": int(s["n_edits"]),
               "Method": METHOD_LABELS.get(s["method"], s["method"]), "_order": _method_order(s["method"])}
        for column, key in COLUMNS.items():
            value = s.get(key)
            row[column] = None if value is None or (isinstance(value, float) and math.isnan(value)) else value
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        raise ValueError("no evaluation summaries to tabulate")
    table = table.sort_values(["Model", "Dataset", "N", "_order"]).drop(columns="_order").reset_index(drop=True)
    return table.dropna(axis=1, how="all")


def _markdown(table: pd.DataFrame) -> str:
    header = "| " + " | ".join(table.columns) + " |"
    rule = "|" + "|".join("---" if c in ("Model", "Dataset", "Method") else "---:" for c in table.columns) + "|"
    lines = [header, rule]
    for _, row in table.iterrows():
        cells = []
        for column in table.columns:
            value = row[column]
            if isinstance(value, float):
                cells.append("–" if math.isnan(value) else f"{value:.2f}")
            else:
                cells.append(str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_table(table: pd.DataFrame, out_csv: str, out_md: str) -> None:
    io.write_text(out_csv, table.to_csv(index=False, float_format="%.4f"))
    note = ("Practical accuracies (every target token is the greedy argmax) ×100; lenient columns compare "
            "length-normalised probabilities; Flu. is unscaled n-gram entropy.\n\n")
    io.write_text(out_md, note + _markdown(table))


def plot_scaling(summaries: list[dict], out_png: str) -> None:
    """Practical efficacy and generalisation against the number of edits, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = main_table(summaries)
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
    axes[1].legend(loc="best", fontsize=8)
    if not many:
        model, dataset = table[["Model", "Dataset"]].iloc[0]
        fig.suptitle(f"{model} on {dataset}")
    fig.tight_layout()
    with io.atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
