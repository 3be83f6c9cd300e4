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


def edits_made(summary: dict) -> int:
    """N of a row: the records the batch edited and the evaluation scored (``n_records``). A dataset with
    ``at_most`` gives fewer than the requested ``n_edits`` when it has fewer records."""
    return int(summary.get("n_records", summary["n_edits"]))


def main_table(summaries: list[dict]) -> pd.DataFrame:
    """One row per model × dataset × number of edits × method, the pre-edit row first. N is the number of
    edits made; where any row made fewer than requested, an "N requested" column follows it."""
    rows = []
    for s in summaries:
        row = {"Model": s["model"], "Dataset": s["dataset"], "N": edits_made(s), "N requested": int(s["n_edits"]),
               "Method": METHOD_LABELS.get(s["method"], s["method"]), "_order": _method_order(s["method"])}
        for column, key in COLUMNS.items():
            value = s.get(key)
            row[column] = None if value is None or (isinstance(value, float) and math.isnan(value)) else value
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        raise ValueError("no evaluation summaries to tabulate")
    table = table.sort_values(["Model", "Dataset", "N", "N requested", "_order"]).drop(columns="_order")
    if (table["N"] == table["N requested"]).all():
        table = table.drop(columns="N requested")
    return table.reset_index(drop=True).dropna(axis=1, how="all")


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
    if "N requested" in table.columns:
        short = table[table["N"] != table["N requested"]][["Dataset", "N", "N requested"]].drop_duplicates()
        cases = "; ".join(f"{d}: {n} of {req}" for d, n, req in short.itertuples(index=False))
        note += (f"N is the number of edits made. Some batches made fewer than requested (N requested), because "
                 f"their dataset (at_most) has fewer records: {cases}.\n\n")
    io.write_text(out_md, note + _markdown(table))
