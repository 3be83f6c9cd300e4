"""The paper's Figures 5, 6 and 9 from plain data (evaluation.md §5).

Each function takes a list of dicts or a DataFrame — evaluation summaries work as they are — and writes one
PNG atomically. Panels follow the rows' models (and datasets, for Figure 9); methods use the paper's
colours and markers (``_plot.PREFIX_STYLES``, ``_plot.RADAR_STYLES``).
"""
from __future__ import annotations

import math
import string
from typing import Mapping

import numpy as np
import pandas as pd

from massedit.reporting._plot import (PREFIX_STYLES, RADAR_STYLES, frame, method_label, method_sort_key,
                                      pyplot, save_png)
from massedit.reporting.paper import PAPER_MODELS

RADAR_TASKS = ("MRPC", "MMLU", "SST", "NLI", "RTE", "CoLA")
# task names as the harness and the GLUE files spell them -> radar axis
TASK_ALIASES = {"mrpc": "MRPC", "mmlu": "MMLU", "mmmlu": "MMLU", "sst": "SST", "sst2": "SST", "nli": "NLI",
                "rte": "RTE", "cola": "CoLA"}


def _values(table: pd.DataFrame, column: str, what: str) -> pd.DataFrame:
    """Rows with a number in ``column`` (as float); an error when none has one."""
    table = table.copy()
    table[column] = pd.to_numeric(table[column], errors="coerce")
    table = table[table[column].notna()]
    if table.empty:
        raise ValueError(f"{what}: no row has a value in {column!r}")
    return table


def _n_text(table: pd.DataFrame, n_edits: int | None) -> str:
    if n_edits is not None:
        return f"n = {n_edits} edits"
    if "n_edits" not in table or table["n_edits"].isna().all():
        return "n not recorded"
    ns = sorted({int(n) for n in table["n_edits"].dropna()})
    return "n = " + ", ".join(str(n) for n in ns) + " edits"


def _panels(table: pd.DataFrame, model_names: Mapping[str, str]) -> list:
    """Models in the paper's order where they map to a paper model, then in order of appearance."""
    models = list(dict.fromkeys(table["model"]))
    paper = [m for m in models if model_names.get(m, m) in PAPER_MODELS]
    paper.sort(key=lambda m: PAPER_MODELS.index(model_names.get(m, m)))
    return paper + [m for m in models if m not in paper]


def _legend_entries(axes) -> tuple[list, list]:
    """Handles and labels of every panel, each label once (a method may be missing from some panels)."""
    seen: dict[str, object] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, handle)
    return list(seen.values()), list(seen)


def _grid(plt, count: int, ncols: int, size: tuple[float, float], **kw):
    ncols = min(ncols, count)
    nrows = math.ceil(count / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=False, **kw)
    flat = list(axes.ravel())
    for ax in flat[count:]:
        ax.set_visible(False)
    return fig, flat[:count]


def plot_prefix_robustness(rows, out_png: str, *, metric: str = "rewrite_acc", paper: pd.DataFrame | None = None,
                           model_names: Mapping[str, str] | None = None, n_edits: int | None = None) -> None:
    """Figure 5: editing accuracy (%) against the evaluation prefix length, one panel per model.

    ``rows`` need model, method, prefix_len and ``metric`` (evaluation summaries of one edit per method
    and model, evaluated at several prefix lengths); rows of one point are averaged (seeds). ``paper``
    (load_paper_numbers()) adds the paper's readings as faint markers where ``model_names`` maps a model
    to a paper model. The number of edits (``n_edits`` or the rows') is printed in the title.
    """
    what = "Figure 5 (prefix robustness)"
    table = _values(frame(rows, ["model", "method", "prefix_len", metric], what), metric, what)
    model_names = model_names or {}
    plt = pyplot()
    models = _panels(table, model_names)
    fig, axes = _grid(plt, len(models), 3, (4.2, 3.6), sharey=False)
    shown_paper = False
    for letter, ax, model in zip(string.ascii_lowercase, axes, models):
        part = table[table["model"] == model]
        xs = set(int(p) for p in part["prefix_len"])
        for method in sorted(part["method"].unique(), key=method_sort_key):
            points = part[part["method"] == method].groupby("prefix_len")[metric].mean().sort_index()
            style = {"color": None, "marker": "o", **PREFIX_STYLES.get(method, {})}
            ax.plot(points.index, points.values, label=method_label(method), **style)
        if paper is not None:
            readings = paper[(paper["table"] == "figure5") & (paper["model"] == model_names.get(model, model))]
            for method, group in readings.groupby("method"):
                style = PREFIX_STYLES.get(method, {"color": "black", "marker": "o"})
                ax.scatter(group["prefix_len"].astype(int), group["value"], color=style["color"],
                           marker=style["marker"], s=45, alpha=0.25, edgecolors="none")
                xs |= set(int(p) for p in group["prefix_len"])
                shown_paper = True
        ax.set_xticks(sorted(xs))
        # the paper's axes: 0–100, or a zoom (90–102.5 for Qwen) where every value is high
        shown = [float(np.min(line.get_ydata())) for line in ax.lines]
        shown += [float(np.min(c.get_offsets()[:, 1])) for c in ax.collections if len(c.get_offsets())]
        low = min(shown, default=0.0)
        ax.set_ylim(max(0.0, low - 5) if low > 85 else 0.0, 102.5)
        paper_name = model_names.get(model)
        ax.set_title(f"({letter}) {model}" + (f" ({paper_name})" if paper_name and paper_name != model else ""))
        ax.set_xlabel("prefix length (tokens)")
        ax.set_ylabel("Editing Accuracy (%)")
        ax.grid(alpha=0.3)
    handles, labels = _legend_entries(axes)
    if shown_paper:
        handles.append(plt.Line2D([], [], color="gray", marker="o", linestyle="", alpha=0.3))
        labels.append("paper (read off Figure 5)")
    axes[-1].legend(handles, labels, fontsize=8, loc="best")
    fig.suptitle(f"Editing accuracy against prefix length ({_n_text(table, n_edits)} per method)")
    fig.tight_layout()
    save_png(fig, out_png)


def plot_facts_per_subject(rows, out_png: str, *, metric: str = "rewrite_acc", x: str = "facts_per_subject",
                           scale: float = 0.01) -> None:
    """Figure 6: rewrite accuracy against the number of facts per subject, one panel per model.

    ``rows`` need model, method, ``x`` (facts sharing a subject), n_edits and ``metric``; values are
    multiplied by ``scale`` (summaries hold %, the paper's axis is [0, 1]). The number of edits behind
    each point is written next to it, since the curves are noisy where few subjects have many facts.
    """
    what = "Figure 6 (facts per subject)"
    table = _values(frame(rows, ["model", "method", x, "n_edits", metric], what), metric, what)
    plt = pyplot()
    models = _panels(table, {})
    fig, axes = _grid(plt, len(models), 3, (5.2, 4.0))
    for letter, ax, model in zip(string.ascii_lowercase, axes, models):
        part = table[table["model"] == model]
        methods = sorted(part["method"].unique(), key=method_sort_key)
        # one row of counts along the top when every method edited the same number at each x
        shared = part.groupby(x)["n_edits"].nunique().max() == 1
        for k, method in enumerate(methods):
            points = (part[part["method"] == method].groupby(x)
                      .agg(value=(metric, "mean"), n=("n_edits", "max")).sort_index())
            style = {"color": None, "marker": "o", **PREFIX_STYLES.get(method, {})}
            line, = ax.plot(points.index, points["value"] * scale, label=method_label(method), markersize=4,
                            **style)
            if shared:
                continue
            for xv, (value, n) in points.iterrows():
                # stagger the labels of the series so coinciding points stay readable
                ax.annotate(str(int(n)), (xv, value * scale), textcoords="offset points",
                            xytext=(0, 4 + 7 * k), ha="center", fontsize=5.5, color=line.get_color())
        if shared:
            top = ax.get_xaxis_transform()  # x in data, y in axes coordinates
            for xv, n in part.groupby(x)["n_edits"].max().items():
                ax.text(xv, 1.01, str(int(n)), transform=top, rotation=90, ha="center", va="bottom", fontsize=6)
        ax.set_title(f"({letter}) {model}", pad=22 if shared else 6)
        ax.set_xlabel("Sample Number (facts per subject)")
        ax.set_ylabel("Rewrite Accuracy")
        ax.set_ylim(0, 1.02 if shared else 1.15)
        ax.set_xticks(sorted(int(v) for v in part[x].unique()))
        ax.tick_params(axis="x", labelsize=7)
        ax.grid(alpha=0.3)
    axes[-1].legend(*_legend_entries(axes), fontsize=8, loc="lower left")
    fig.suptitle("Rewrite accuracy against facts per subject\n(small numbers: edits behind each point)",
                 fontsize=10)
    fig.tight_layout()
    save_png(fig, out_png)


def _task(name: str) -> str:
    key = str(name).lower().replace("-", "").replace("_", "")
    return TASK_ALIASES.get(key, str(name))


def plot_general_ability(rows, out_png: str, *, score: str = "f1", tasks: tuple[str, ...] = RADAR_TASKS) -> None:
    """Figure 9: radar of general-ability scores, one panel per model × dataset.

    ``rows`` need model, dataset, method (``unedited`` is the pre-edit model), task and ``score``
    (f1, f1_new or mcc; §3.9). Task names such as sst2 or the harness's "mmmlu" are mapped to the axes
    MRPC, MMLU, SST, NLI, RTE, CoLA; a missing task leaves a gap in the polygon.
    """
    what = "Figure 9 (general ability)"
    table = _values(frame(rows, ["model", "dataset", "method", "task", score], what), score, what)
    table["task"] = table["task"].map(_task)
    unknown = sorted(set(table["task"]) - set(tasks))
    if unknown:
        raise ValueError(f"{what}: unknown task(s) {unknown}; axes are {list(tasks)}")
    plt = pyplot()
    panels = list(dict.fromkeys(zip(table["model"], table["dataset"])))
    fig, axes = _grid(plt, len(panels), 3, (3.8, 3.8), subplot_kw={"projection": "polar"})
    angles = np.linspace(0, 2 * np.pi, len(tasks), endpoint=False)
    closed = np.append(angles, angles[0])
    low = min(-0.25, float(table[score].min()) - 0.05)  # the paper's centre lies one ring below 0.0
    high = max(0.8, float(table[score].max()) + 0.05)
    for ax, (model, dataset) in zip(axes, panels):
        part = table[(table["model"] == model) & (table["dataset"] == dataset)]
        for method in sorted(part["method"].unique(), key=method_sort_key):
            values = part[part["method"] == method].groupby("task")[score].mean()
            radii = np.array([values.get(t, np.nan) for t in tasks], dtype=float)
            style = RADAR_STYLES.get(method, {})
            label = "Pre-Edit" if method == "unedited" else method_label(method)
            ax.plot(closed, np.append(radii, radii[0]), linewidth=1.5, label=label, **style)
        ax.set_xticks(angles)
        ax.set_xticklabels(tasks, fontsize=8)
        ax.set_ylim(low, high)
        ax.set_yticks([t for t in (0.0, 0.2, 0.5, 0.7) if t < high])
        ax.tick_params(axis="y", labelsize=6)
        ax.set_title(f"{model}-{dataset}", fontsize=10, pad=12)
    handles, labels = _legend_entries(axes)
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8)
    fig.suptitle(f"General ability before and after editing ({score})")
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    save_png(fig, out_png)
