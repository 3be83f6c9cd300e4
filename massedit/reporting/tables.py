"""The main results table from evaluation summaries (evaluation.md §4: the paper's column names)."""
from __future__ import annotations

import math

import pandas as pd

from massedit import io

METHOD_LABELS = {"unedited": "Pre-edit", "eamet": "EAMET", "memit": "MEMIT", "pmet": "PMET",
                 "alphaedit": "AlphaEdit", "rome": "ROME", "ft": "FT", "mend": "MEND"}
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
            "length-normalised probabilities; ")
    if "Flu." in table.columns:
        note += "Flu. is unscaled n-gram entropy.\n\n"
    else:  # a column left out is said so, not silently: fluency needs records with generation prompts
        note += ("Flu. (unscaled n-gram entropy) is not reported: no evaluated record has generation prompts "
                 "(CounterFact's reduced EasyEdit schema and ZsRE carry none; the MEMIT schema does).\n\n")
    io.write_text(out_md, note + _markdown(table))
