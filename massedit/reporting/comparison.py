"""Reproduced numbers next to the paper's (evaluation.md §6.6).

Both sides go into one long-format table (``long_table``: one row per number, ``source`` paper or
reproduced), then ``compare`` pairs each reproduced number with the paper cell it reproduces and adds the
difference reproduced − paper and a tolerance flag. Paper rows without a counterpart stay in: MEND's as
"reported only" (the project does not reimplement it), the others as "not reproduced".
``comparison_markdown`` renders the pairs in the paper's layout.

Reproduced rows come from evaluation summaries (massedit.steps.evaluate_model) or misalignment records
(``{model, method, dataset, n_edits, misalignment, ...}``). Their ``model`` and ``dataset`` are config names;
``paper_names(config)`` maps them to the paper's (a model's ``paper_name``, a dataset's ``paper_name`` or
its kind). Unmapped names are kept as they are and so match no paper cell.
"""
from __future__ import annotations

import math
from typing import Iterable, Mapping

import pandas as pd

from massedit import io
from massedit.reporting.paper import LONG_COLUMNS, MAIN_COLUMNS, PAPER_METHODS, PAPER_MODELS, REPORTED_ONLY
from massedit.reporting.tables import METHOD_LABELS

# paper metric -> summary key (accuracies ×100, fluency unscaled, as evaluate_records writes them)
SUMMARY_KEYS = {
    "eff": "rewrite_acc",
    "gen": "paraphrase_acc",
    "spe": "neighborhood_acc",
    "flu": "fluency",
    "por": "portability_acc",
    "loc": "locality_acc",
    "misalignment": "misalignment",
}
# which metrics a set of reproduced records stands for, per paper table
TABLE_METRICS = {
    "main": ("eff", "gen", "spe", "flu", "por", "loc"),
    "table3": ("misalignment",),
    "figure5": ("eff",),
}
DATASET_KINDS = {"counterfact": "CF", "zsre": "ZS", "wikirecent": "WR", "wiki_recent": "WR"}
# §6.6: ±3 points for accuracies, ±0.1 for fluency, ±2 for a Figure 5 reading ("approx").
# A string "N%" is relative to the paper value: the misalignment score's definition is inferred (§5),
# so only its order of magnitude is checked.
DEFAULT_TOLERANCES: dict[str, float | str] = {
    "eff": 3.0, "gen": 3.0, "spe": 3.0, "por": 3.0, "loc": 3.0, "flu": 0.1, "misalignment": "50%",
    "approx": 2.0,
}
KEYS = ["table", "model", "method", "dataset", "metric"]
# row and column order of each paper artefact
MODEL_ORDER = {
    "main": PAPER_MODELS,
    "table3": ["LLaMA2-7B", "Qwen2.5-7B", "DeepSeek-7B", "Falcon-7B"],
    "figure5": ["LLaMA2-7B", "DeepSeek-7B", "Qwen2.5-7B"],
}
TABLE3_METHODS = ["eamet", "memit", "pmet"]
STATUSES = ("within", "outside", "reported only", "not reproduced", "no paper value")


def paper_names(config: Mapping) -> dict[str, dict[str, str]]:
    """``{"models": config name -> paper name, "datasets": config name -> CF | WR | ZS}`` from a model's
    ``paper_name`` and a dataset's ``paper_name`` or, failing that, its ``kind``."""
    models = {name: spec["paper_name"] for name, spec in (config.get("models") or {}).items()
              if spec.get("paper_name")}
    datasets = {}
    for name, spec in (config.get("datasets") or {}).items():
        paper = spec.get("paper_name") or DATASET_KINDS.get(spec.get("kind", ""))
        if paper:
            datasets[name] = paper
    return {"models": models, "datasets": datasets}


def _number(value) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def _int_or_none(value) -> int | None:
    number = _number(value)
    return None if number is None else int(number)


def reproduced_long(records: Iterable[Mapping], model_names: Mapping[str, str] | None = None,
                    dataset_names: Mapping[str, str] | None = None, table: str = "main",
                    metrics: Iterable[str] | None = None) -> pd.DataFrame:
    """Reproduced numbers in the §6.6 long format, one row per record × metric present in it.

    ``table`` says which paper artefact the records reproduce (main, table3, figure5); ``metrics`` defaults
    to that table's (``TABLE_METRICS``). Missing or NaN values are left out.
    """
    if table not in TABLE_METRICS:
        raise ValueError(f"unknown paper table {table!r}; known: {sorted(TABLE_METRICS)}")
    model_names, dataset_names = model_names or {}, dataset_names or {}
    rows = []
    for record in records:
        for metric in metrics or TABLE_METRICS[table]:
            value = _number(record.get(SUMMARY_KEYS.get(metric, metric)))
            if value is None:
                continue
            rows.append({
                "table": table,
                "model": model_names.get(record["model"], record["model"]),
                "method": record["method"],
                "dataset": dataset_names.get(record["dataset"], record["dataset"]),
                "metric": metric, "value": value, "source": "reproduced", "preset": record.get("preset"),
                "n_edits": _int_or_none(record.get("n_edits")),
                "prefix_len": _int_or_none(record.get("prefix_len")),
                "seed": _int_or_none(record.get("seed")), "approx": False,
                "config_model": record["model"], "config_dataset": record["dataset"],
            })
    columns = ["table", *LONG_COLUMNS, "config_model", "config_dataset"]
    out = pd.DataFrame(rows, columns=columns)
    for column in ("n_edits", "prefix_len", "seed"):
        out[column] = out[column].astype("Int64")
    return out


def long_table(paper: pd.DataFrame, reproduced: pd.DataFrame) -> pd.DataFrame:
    """Both sides stacked (§6.6): ``table`` plus the §6.6 columns, and the config names of reproduced rows."""
    columns = ["table", *LONG_COLUMNS, "config_model", "config_dataset"]
    parts = [frame.reindex(columns=columns) for frame in (paper, reproduced) if not frame.empty]
    if not parts:
        return pd.DataFrame(columns=columns)
    return pd.concat(parts, ignore_index=True)


def tolerance(metric: str, paper_value: float, approx: bool = False,
              tolerances: Mapping[str, float | str] | None = None) -> float:
    """The allowed |reproduced − paper| for one paper cell (``DEFAULT_TOLERANCES``, updated by ``tolerances``)."""
    table = {**DEFAULT_TOLERANCES, **(tolerances or {})}
    spec = table["approx"] if approx else table.get(metric)
    if spec is None:
        raise ValueError(f"no tolerance for metric {metric!r}; give one in `tolerances`")
    if isinstance(spec, str):
        if not spec.endswith("%"):
            raise ValueError(f"tolerance {spec!r} for {metric!r}: a number or a percentage such as '50%'")
        return abs(paper_value) * float(spec[:-1]) / 100.0
    return float(spec)


def _compatible(paper: Mapping, reproduced: Mapping, strict: bool) -> bool:
    """Whether a reproduced number stands for a paper cell: with ``strict``, the batch size and the prefix
    length must agree wherever the paper states them (Figure 5's x value always must)."""
    checked = ("n_edits", "prefix_len") if strict else ("prefix_len",) if paper["table"] == "figure5" else ()
    for column in checked:
        want = paper.get(column)
        if want is not None and not pd.isna(want) and reproduced.get(column) != want:
            return False
    return True


def _na(value):
    return None if value is None or (not isinstance(value, str) and pd.isna(value)) else value


def compare(paper: pd.DataFrame, reproduced: pd.DataFrame, strict: bool = True,
            tolerances: Mapping[str, float | str] | None = None) -> pd.DataFrame:
    """Pair reproduced numbers with paper cells on table, model, method, dataset and metric.

    With ``strict`` a pair also needs the same n_edits and prefix length where the paper states them;
    without it, runs of another size are compared too (Figure 5 always pairs by prefix length). Every
    number appears at least once; a reproduced number matching several paper cells appears once per cell.
    ``status`` is within/outside (the tolerance), reported only (MEND), not reproduced, or no
    paper value (a pre-edit row, an unmapped model, a run of another size).
    """
    paper_rows = [{k: _na(v) for k, v in row.items()} for row in paper.to_dict("records")]
    repro_rows = [{k: _na(v) for k, v in row.items()} for row in reproduced.to_dict("records")]
    by_key: dict[tuple, list[int]] = {}
    for i, row in enumerate(paper_rows):
        by_key.setdefault(tuple(row[k] for k in KEYS), []).append(i)
    out, matched = [], set()
    for row in repro_rows:
        hits = [i for i in by_key.get(tuple(row[k] for k in KEYS), []) if _compatible(paper_rows[i], row, strict)]
        for i in hits:
            matched.add(i)
            out.append(_pair(paper_rows[i], row, tolerances))
        if not hits:
            out.append(_pair(None, row, tolerances))
    out.extend(_pair(row, None, tolerances) for i, row in enumerate(paper_rows) if i not in matched)
    columns = [*KEYS, "n_edits", "prefix_len", "seed", "preset", "config_model", "paper_n_edits", "paper",
               "approx", "reproduced", "difference", "tolerance", "status"]
    result = pd.DataFrame(out, columns=columns)
    for column in ("n_edits", "prefix_len", "seed", "paper_n_edits"):
        result[column] = result[column].astype("Int64")
    return _sorted(result).reset_index(drop=True)


def _pair(paper: Mapping | None, reproduced: Mapping | None, tolerances) -> dict:
    base = reproduced if reproduced is not None else paper
    row = {k: base[k] for k in KEYS}
    row.update(n_edits=base.get("n_edits"), prefix_len=base.get("prefix_len"), seed=None, preset=None,
               config_model=None, paper_n_edits=None, paper=None, approx=False, reproduced=None,
               difference=None, tolerance=None)
    if paper is not None:
        row.update(paper_n_edits=paper.get("n_edits"), paper=paper["value"], approx=bool(paper.get("approx")))
        if row["prefix_len"] is None:  # the reproduced run's own prefix length wins where it has one
            row["prefix_len"] = paper.get("prefix_len")
    if reproduced is not None:
        row.update(reproduced=reproduced["value"], seed=reproduced.get("seed"), preset=reproduced.get("preset"),
                   config_model=reproduced.get("config_model"), n_edits=reproduced.get("n_edits"))
    if paper is not None and reproduced is not None:
        row["difference"] = reproduced["value"] - paper["value"]
        row["tolerance"] = tolerance(row["metric"], paper["value"], row["approx"], tolerances)
        row["status"] = "within" if abs(row["difference"]) <= row["tolerance"] + 1e-9 else "outside"
    elif paper is not None:
        row["status"] = "reported only" if paper["method"] in REPORTED_ONLY else "not reproduced"
    else:
        row["status"] = "no paper value"
    return row


def _rank(values: Iterable, order: list) -> list:
    return [(order.index(v), "") if v in order else (len(order), str(v)) for v in values]


def _sorted(table: pd.DataFrame) -> pd.DataFrame:
    """The paper's order: tables, models, methods (pre-edit first), the main table's columns."""
    columns = [f"{d}/{m}" for d, m in MAIN_COLUMNS]

    def key(row) -> tuple:
        return (_rank([row.table], ["main", "table3", "figure5"])[0],
                _rank([row.model], MODEL_ORDER.get(row.table, PAPER_MODELS))[0],
                _rank([row.method], ["unedited", *PAPER_METHODS])[0],
                _rank([f"{row.dataset}/{row.metric}"], columns)[0],
                -1 if pd.isna(row.prefix_len) else int(row.prefix_len),
                -1 if pd.isna(row.n_edits) else int(row.n_edits))

    order = sorted(range(len(table)), key=lambda i: key(table.iloc[i]))
    return table.iloc[order]


# ------------------------------------------------------------------------------------------- markdown

# per table: the row keys and the column keys of the paper's layout
LAYOUTS = {
    "main": (("model", "method"), ("dataset", "metric")),
    "table3": (("model",), ("method", "dataset")),
    "figure5": (("model", "method"), ("prefix_len",)),
}
TITLES = {
    "main": "Main results (10k edits for CF and ZS, 1,266 for WR)",
    "table3": "Table 3: misalignment score (lower is better)",
    "figure5": "Figure 5: Eff. (%) against prefix length",
}


def _fmt(value, metric: str, approx: bool = False) -> str:
    if value is None or pd.isna(value):
        return "–"
    text = f"{value:.0f}" if metric == "misalignment" else f"{value:.2f}"
    return "~" + text if approx else text


def _key(values) -> tuple:
    """A hashable cell key with every missing value as None (pandas mixes None, NaN and NA)."""
    return tuple(None if _na(v) is None else (int(v) if isinstance(v, float) and v.is_integer() else v)
                 for v in values)


def _cell(rows: pd.DataFrame) -> str:
    """``reproduced / paper (difference)``, ⚠ outside the tolerance; several reproduced runs joined by '; '."""
    parts = []
    for _, r in rows.iterrows():
        text = f"{_fmt(r['reproduced'], r['metric'])} / {_fmt(r['paper'], r['metric'], r['approx'])}"
        if r["difference"] is not None and not pd.isna(r["difference"]):
            sign = "+" if r["difference"] >= 0 else "−"
            text += f" ({sign}{_fmt(abs(r['difference']), r['metric'])})"
            if r["status"] == "outside":
                text += " ⚠"
        parts.append(text)
    return "; ".join(parts)


def _column_label(table: str, key: tuple) -> str:
    if table == "main":
        return f"{key[0]} {key[1].capitalize()}"
    if table == "table3":
        return f"{METHOD_LABELS.get(key[0], key[0])} {key[1]}"
    return f"p = {key[0]}"


def _row_label(table: str, key: tuple) -> list[str]:
    cells = [str(key[0])]
    if len(key) > 1:
        method = key[1]
        label = METHOD_LABELS.get(method, method)
        cells.append(f"{label} (reported only)" if method in REPORTED_ONLY else label)
    return cells


def comparison_markdown(comparison: pd.DataFrame, table: str = "main") -> str:
    """One paper table as markdown in the paper's layout, each cell ``reproduced / paper (difference)``."""
    if table not in LAYOUTS:
        raise ValueError(f"unknown paper table {table!r}; known: {sorted(LAYOUTS)}")
    part = comparison[comparison["table"] == table]
    if part.empty:
        raise ValueError(f"no rows of table {table!r} to render")
    row_keys, column_keys = LAYOUTS[table]
    rows = list(dict.fromkeys(_key(r) for r in part[list(row_keys)].itertuples(index=False)))
    columns = list(dict.fromkeys(_key(c) for c in part[list(column_keys)].itertuples(index=False)))
    if table == "main":
        columns = [c for c in MAIN_COLUMNS if c in columns] + [c for c in columns if c not in MAIN_COLUMNS]
    elif table == "figure5":
        columns = sorted(columns, key=lambda c: (c[0] is None, c[0] or 0))
    elif table == "table3":
        columns = sorted(columns, key=lambda c: tuple(_rank([c[0]], TABLE3_METHODS)[0]) + (c[1],))
    head = [k.capitalize() for k in row_keys] + [_column_label(table, c) for c in columns]
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join(["---"] * len(row_keys) + ["---:"] * len(columns)) + "|"]
    cells_of: dict[tuple, list[int]] = {}
    for i, key in enumerate(part[list(row_keys) + list(column_keys)].itertuples(index=False)):
        cells_of.setdefault(_key(key), []).append(i)
    for row in rows:
        cells = _row_label(table, row)
        for column in columns:
            hits = cells_of.get(_key(row + column))
            cells.append(_cell(part.iloc[hits]) if hits else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_comparison(paper: pd.DataFrame, reproduced: pd.DataFrame, out_long_csv: str, out_csv: str,
                     out_md: str, strict: bool = True,
                     tolerances: Mapping[str, float | str] | None = None) -> pd.DataFrame:
    """Write the long table (§6.6), the pairs with differences and flags, and the markdown of every paper
    table; return the pairs."""
    pairs = compare(paper, reproduced, strict, tolerances)
    io.write_text(out_long_csv, long_table(paper, reproduced).to_csv(index=False))
    io.write_text(out_csv, pairs.to_csv(index=False, float_format="%.4f"))
    counts = pairs["status"].value_counts()
    summary = ", ".join(f"{counts.get(s, 0)} {s}" for s in STATUSES)
    limits = {**DEFAULT_TOLERANCES, **(tolerances or {})}
    described = "; ".join(f"{'Figure 5 readings marked ~' if k == 'approx' else k} ±{v}" for k, v in limits.items())
    scope = "" if strict else " (non-strict: other batch sizes are paired too)"
    text = [
        f"Each cell: reproduced / paper (reproduced − paper); ⚠ outside the tolerance ({described}). "
        f"MEND is reported only (not reimplemented). Pairs need the paper's number of edits and prefix length"
        f" where it states them{scope}.\n\nCells: {summary}.\n"
    ]
    for table in LAYOUTS:
        if (pairs["table"] == table).any():
            text.append(f"\n## {TITLES[table]}\n\n" + comparison_markdown(pairs, table))
    io.write_text(out_md, "".join(text))
    return pairs
