"""The numbers the EAMET paper reports, shipped as data (evaluation.md §6.1, §6.3, §6.4).

``paper_numbers.csv`` is a transcription in the long format of §6.6, one row per reported cell:

``table``       main (§6.1, the main results table), table3 (§6.3, misalignment) or figure5 (§6.4)
``model``       the paper's model name, normalised to the main table's spelling: Table 3's "Qwen" and
                Figure 5's "Qwen-7B" are written Qwen2.5-7B, "Deepseek-7B" DeepSeek-7B
``method``      the workflow's method id: ft, mend, rome, memit, pmet, alphaedit, eamet
``dataset``     CF (CounterFact), WR (Wiki-recent) or ZS (ZsRE)
``metric``      eff, gen, spe, flu, por, loc or misalignment
``value``       the number (accuracies in %, fluency unscaled, misalignment as summed)
``source``      always ``paper`` here; reproduced rows carry ``reproduced``
``preset``      always ``paper``
``n_edits``     10000 (CF, ZS) or 1266 (WR) for the main table; 10000 for Table 3 (inferred from the
                per-item magnitudes, §5); empty for Figure 5, whose batch size the paper does not state
``prefix_len``  5 for the main table's CF and WR, empty where prefixes do not apply (ZS, Table 3);
                the x value for Figure 5
``seed``        empty: the paper does not state one
``approx``      true for Figure 5 values read off the plot ("~" in the reference, about ±1 point)
``printed``     the cell exactly as the reference prints it ("~98.5", "1.9"), so the transcription can
                be checked against its source

Figure 5's y values are taken to be CounterFact Eff. (the reference marks this as inferred).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

PAPER_NUMBERS = Path(__file__).with_name("paper_numbers.csv")
LONG_COLUMNS = ["model", "method", "dataset", "metric", "value", "source", "preset", "n_edits", "prefix_len",
                "seed", "approx"]  # §6.6
TABLES = ("main", "table3", "figure5")
# Rows the project does not reimplement: printed from the paper with a "reported only" mark (§5). MEND needs
# pretrained hypernetworks that are not published for these models; FT and ROME are reimplemented.
REPORTED_ONLY = frozenset({"mend"})
PAPER_MODELS = ["LLaMA2-7B", "Qwen2.5-7B", "LLaMA2-13B", "Falcon-7B", "DeepSeek-7B", "LLaMA3-8B"]
PAPER_METHODS = ["ft", "mend", "rome", "memit", "pmet", "alphaedit", "eamet"]
# The main table's column groups, in the paper's order.
MAIN_COLUMNS = [("CF", "eff"), ("CF", "gen"), ("CF", "spe"), ("CF", "flu"), ("WR", "eff"), ("WR", "por"),
                ("WR", "loc"), ("WR", "flu"), ("ZS", "eff"), ("ZS", "gen"), ("ZS", "spe")]


def load_paper_numbers(path: str | Path | None = None) -> pd.DataFrame:
    """The paper's numbers as a DataFrame with nullable integer n_edits/prefix_len/seed and boolean approx."""
    table = pd.read_csv(path or PAPER_NUMBERS, dtype={"printed": str, "model": str, "method": str,
                                                      "dataset": str, "metric": str, "table": str})
    for column in ("n_edits", "prefix_len", "seed"):
        table[column] = table[column].astype("Int64")
    table["value"] = table["value"].astype(float)
    table["approx"] = table["approx"].astype(bool)
    unknown = set(table["table"]) - set(TABLES)
    if unknown:
        raise ValueError(f"{path or PAPER_NUMBERS}: unknown table(s) {sorted(unknown)}")
    return table
