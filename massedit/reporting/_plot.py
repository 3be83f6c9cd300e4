"""Plotting helpers shared by the figure functions: a headless pyplot, atomic PNG output, input checks and
the paper's series styles."""
from __future__ import annotations

from typing import Iterable

import pandas as pd

from massedit import io

# Paper styles (evaluation.md §5). Figures 5/6 and Figure 9 colour the methods differently.
PREFIX_STYLES = {
    "memit": {"color": "tab:red", "marker": "o"},
    "pmet": {"color": "tab:blue", "marker": "s"},
    "alphaedit": {"color": "tab:orange", "marker": "^"},
    "eamet": {"color": "tab:green", "marker": "D"},
    "unedited": {"color": "tab:gray", "marker": "x", "linestyle": "--"},
}
RADAR_STYLES = {
    "unedited": {"color": "tab:red", "linestyle": "--"},
    "eamet": {"color": "tab:blue"},
    "memit": {"color": "tab:green"},
    "pmet": {"color": "tab:orange"},
    "alphaedit": {"color": "tab:purple"},
}


def pyplot():
    """matplotlib.pyplot on the Agg backend: figures are written on nodes without a display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, out_png: str, dpi: int = 120) -> None:
    """Write ``fig`` atomically (a killed job never leaves a truncated PNG) and close it."""
    plt = pyplot()
    try:
        with io.atomic_path(out_png) as tmp:
            # "tight" grows the canvas to whatever the titles need (a long suptitle over one narrow panel).
            fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(fig)


def frame(rows, required: Iterable[str], what: str) -> pd.DataFrame:
    """``rows`` (list of dicts or DataFrame) as a DataFrame with the ``required`` columns; a clear error
    when there is nothing to plot or a column is missing."""
    table = rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    if table.empty:
        raise ValueError(f"{what}: no rows to plot")
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise ValueError(f"{what}: rows lack column(s) {missing}; have {sorted(table.columns)}")
    return table


def method_label(method: str) -> str:
    from massedit.reporting.tables import METHOD_LABELS

    return METHOD_LABELS.get(method, method)


def method_sort_key(method: str) -> tuple[int, str]:
    """The paper's legend order: pre-edit, then baselines, EAMET last."""
    order = ["unedited", "ft", "mend", "rome", "memit", "pmet", "alphaedit", "eamet"]
    return (order.index(method) if method in order else len(order), method)
