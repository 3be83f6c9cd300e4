"""Search of a method's edit settings for one model on held-out edits (the `tune` target, docs/tuning.md).

The grid covers the edited layers (as layer sets), λ (``mom2_update_weight``), the residual's clamp factor
(``clamp_ks_factor`` for EAMET, ``clamp_norm_factor`` for the others) and its learning rate (``v_lr``).
The residuals depend on the z-layer (the last edited layer) and on the residual settings (clamp, learning
rate, …) but not on λ or the lower layers, so they are optimised once per (z-layer, clamp, learning rate)
and every λ × layer set ending at that z-layer reuses them; only the closed-form update runs per trial.
The weights are restored from a snapshot after every trial.

Each trial is scored on the tune edits with practical measures (every target token is the argmax):

* Eff.: the new target on the bare rewrite prompts;
* Gen.: the new target on the paraphrase prompts;
* Spe.: neighbourhood prompts keep their answer, i.e. the argmax tokens over the neighbourhood's own
  answer are those of the unedited model.

Choice rule: the highest mean of Eff., Gen. and Spe. (each in %; a measure without prompts is left out of
the mean); ties go to the larger λ (the gentler edit), then to the smaller clamp factor (the smaller
residual), then to the earlier trial in grid order (layer sets and learning rates as configured).

The tune edits are held out: never among the records that the grid's batches edit (``held_out``).
"""
from __future__ import annotations

import copy
import csv
import json
import logging
import math
import random
import time

log = logging.getLogger(__name__)

# The grid's axes and the hyperparameter each sets; the clamp's key depends on the method.
CLAMP_KEYS = {"eamet": "clamp_ks_factor"}
DEFAULT_CLAMP_KEY = "clamp_norm_factor"
PICKS = ("end", "sample")
# Methods whose update is the closed form with λ (massedit.editing.run.METHODS, update "closed_form"); the
# search checks the registry itself, this list only keeps the others out of the default `tune` target.
CLOSED_FORM_METHODS = ("eamet", "memit", "pmet")
# Below this efficacy (%) at the chosen trial the outputs warn that the grid is too gentle for the model.
WEAK_EFFICACY = 50.0
# Decimal places a trial's mean score is compared at: means of percentages differ in float rounding.
SCORE_DIGITS = 6

DEFAULT_GRID = {
    "layer_sets": [[3, 4], [4]],
    "mom2_update_weight": [100, 1000, 4000],
    # Per method: the two clamps differ in kind (EAMET's multiplies ‖k‖, the others' ‖h‖), so one list
    # cannot serve both. A method not named here keeps its configured clamp.
    "clamp_factor": {"eamet": [2.0, 20.0], "memit": [0.75]},
    "v_lr": [0.5],
}
DEFAULTS = {"n_edits": 8, "pick": "end", "grid": DEFAULT_GRID}


def clamp_key(method: str) -> str:
    """The hyperparameter that bounds ‖δ‖ for ``method``."""
    return CLAMP_KEYS.get(method, DEFAULT_CLAMP_KEY)


# --------------------------------------------------------------------------------------------------------
# Settings


def settings(config: dict) -> dict:
    """The config's ``tune`` section with every default filled in (also when the schema has no such section):
    models, methods and dataset default to the grid's models, methods and first dataset."""
    given = config.get("tune") or {}
    out = {
        "models": list(given.get("models") or config["grid"]["models"]),
        "methods": list(given.get("methods")
                        or [m for m in config["grid"].get("methods", ["eamet", "memit"]) if m in CLOSED_FORM_METHODS]),
        "dataset": given.get("dataset") or config["grid"]["datasets"][0],
        "n_edits": int(given.get("n_edits", DEFAULTS["n_edits"])),
        "pick": given.get("pick", DEFAULTS["pick"]),
        "grid": {**copy.deepcopy(DEFAULT_GRID), **copy.deepcopy(given.get("grid") or {})},
    }
    if out["pick"] not in PICKS:
        raise ValueError(f"tune.pick must be one of {PICKS}, got {out['pick']!r}")
    for section, names in (("models", out["models"]), ("methods", out["methods"])):
        unknown = [name for name in names if name not in config[section]]
        if unknown:
            raise ValueError(f"tune.{section}: {unknown} not defined under {section}")
    unsupported = [name for name in out["methods"] if name not in CLOSED_FORM_METHODS]
    if unsupported:
        raise ValueError(f"tune.methods: {unsupported} cannot be tuned (the search varies the λ of the closed-form "
                         f"update: {', '.join(CLOSED_FORM_METHODS)})")
    if out["dataset"] not in config["datasets"]:
        raise ValueError(f"tune.dataset: {out['dataset']!r} is not defined under datasets")
    return out


def selection(config: dict, tune: dict | None = None) -> dict:
    """How the rule picks its held-out edits: ``n_edits`` of them (``pick``, seeded by the config's seed), clear
    of every batch the grid evaluates on the tune dataset (``grid.n_edits`` drawn with the dataset's
    ``select`` mode and the config's seed, as select_edits draws them)."""
    tune = tune if tune is not None else settings(config)
    return {
        "n_edits": int(tune["n_edits"]),
        "pick": tune["pick"],
        "pick_seed": int(config.get("seed", 0)),
        # every batch size any grid block edits on the tune dataset
        "evaluated_n_edits": sorted({int(n) for g in [config["grid"], *config.get("extra_grids", [])]
                                     if tune["dataset"] in g["datasets"] for n in g["n_edits"]}
                                    or {int(n) for n in config["grid"]["n_edits"]}),
        "select": config["datasets"][tune["dataset"]].get("select", "first"),
        "select_seed": int(config.get("seed", 0)),
    }


def _values(name: str, values) -> list:
    if not isinstance(values, (list, tuple)) or not values:
        raise ValueError(f"tune grid {name}: expected a non-empty list, got {values!r}")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"tune grid {name}: values must be positive numbers, got {value!r}")
    if len(set(values)) != len(values):
        raise ValueError(f"tune grid {name}: repeated values in {values}")
    return list(values)


def method_grid(grid: dict, method: str, base_hp: dict) -> dict:
    """The grid for ``method``, validated: ``layer_sets`` (ascending lists), ``mom2_update_weight``,
    ``clamp_factor`` and ``v_lr`` (lists). ``clamp_factor`` may be one list for every method or a mapping
    method -> list; a method it does not name, and an absent ``v_lr``, keep ``base_hp``'s value."""
    unknown = sorted(set(grid) - set(DEFAULT_GRID))
    if unknown:
        raise ValueError(f"tune grid: unknown keys {unknown} (known: {sorted(DEFAULT_GRID)})")
    sets = grid.get("layer_sets")
    if not isinstance(sets, (list, tuple)) or not sets:
        raise ValueError(f"tune grid layer_sets: expected a non-empty list of layer lists, got {sets!r}")
    layer_sets = []
    for layers in sets:
        if (not isinstance(layers, (list, tuple)) or not layers
                or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in layers)):
            raise ValueError(f"tune grid layer_sets: {layers!r} is not a non-empty list of layer indices")
        if list(layers) != sorted(set(layers)):
            raise ValueError(f"tune grid layer_sets: layers must be ascending and distinct, got {list(layers)}")
        if list(layers) in layer_sets:
            raise ValueError(f"tune grid layer_sets: {list(layers)} appears twice")
        layer_sets.append(list(layers))
    clamps = grid.get("clamp_factor")
    if isinstance(clamps, dict):
        clamps = clamps.get(method)
    clamps = [_configured(base_hp, clamp_key(method), method)] if clamps is None else clamps
    lrs = grid.get("v_lr")
    lrs = [_configured(base_hp, "v_lr", method)] if lrs is None else lrs
    return {
        "layer_sets": layer_sets,
        "mom2_update_weight": _values("mom2_update_weight", grid.get("mom2_update_weight")),
        "clamp_factor": _values(f"clamp_factor ({method})", clamps),
        "v_lr": _values("v_lr", lrs),
    }


def _configured(base_hp: dict, key: str, method: str):
    if key not in base_hp:
        raise ValueError(f"the tune grid gives no {key} for {method} and its hyperparameters have none")
    return base_hp[key]


def grid_layers(grid: dict) -> list[int]:
    """Every layer some layer set edits: the statistics file must cover them all."""
    return sorted({int(layer) for layers in grid["layer_sets"] for layer in layers})


def residual_combinations(grid: dict) -> list[tuple[int, float, float]]:
    """(z-layer, clamp factor, learning rate) of each residual pass, in the order the search runs them."""
    z_layers = list(dict.fromkeys(max(layers) for layers in grid["layer_sets"]))
    return [(z, clamp, lr) for z in z_layers for clamp in grid["clamp_factor"] for lr in grid["v_lr"]]


def n_trials(grid: dict) -> int:
    return len(grid["layer_sets"]) * len(grid["mom2_update_weight"]) * len(grid["clamp_factor"]) * len(grid["v_lr"])


def search_hparams(hp: dict, method: str) -> dict:
    """``hp`` without the keys every trial sets itself (the workflow's parameters: including a chosen
    fragment in the config then reruns no search)."""
    tuned = {"layers", "mom2_update_weight", clamp_key(method), "v_lr"}
    return {key: value for key, value in hp.items() if key not in tuned}


# --------------------------------------------------------------------------------------------------------
# Held-out edits


def held_out(
    records: list[dict],
    n_tune: int,
    evaluated_ns: list[int],
    select_mode: str = "first",
    select_seed: int = 0,
    pick: str = "end",
    pick_seed: int = 0,
) -> tuple[list[dict], list]:
    """``n_tune`` records that no evaluated batch edits, and the case_ids of the evaluated ones (file order).

    The evaluated batches are those ``select_records`` draws for each n of ``evaluated_ns`` (with the
    dataset's ``select_mode`` and ``select_seed``), so the tune edits are disjoint from every batch of the
    grid. ``pick="end"`` takes the last ``n_tune`` of the remaining records, ``"sample"`` a seeded sample of
    them; either keeps file order. ``records`` are the candidates after any known-fact filter."""
    from massedit.datasets.selection import select_records

    if not isinstance(n_tune, int) or isinstance(n_tune, bool) or n_tune < 1:
        raise ValueError(f"tune.n_edits must be a positive int, got {n_tune!r}")
    if pick not in PICKS:
        raise ValueError(f"pick must be one of {PICKS}, got {pick!r}")
    evaluated: set = set()
    for n in evaluated_ns:
        chosen = records if n >= len(records) else select_records(records, int(n), select_mode, select_seed)
        evaluated.update(r["case_id"] for r in chosen)
    rest = [r for r in records if r["case_id"] not in evaluated]
    if len(rest) < n_tune:
        largest = max(evaluated_ns, default=0)
        raise ValueError(
            f"too few records to hold out {n_tune} tune edits: {len(records)} candidate records, of which the "
            f"evaluated batches (n_edits up to {largest}) take {len(evaluated)}, leaving {len(rest)}. Lower "
            f"tune.n_edits or the grid's n_edits, or tune on a larger dataset."
        )
    if pick == "end":
        tune = rest[len(rest) - n_tune:]
    else:
        tune = [rest[i] for i in sorted(random.Random(pick_seed).sample(range(len(rest)), n_tune))]
    return tune, [r["case_id"] for r in records if r["case_id"] in evaluated]


# --------------------------------------------------------------------------------------------------------
# Scoring


def scoring_items(records: list[dict]) -> dict[str, list[tuple[str, str]]]:
    """(prompt, target) pairs: new target on rewrite and paraphrase prompts; own answer on neighbourhood."""
    from massedit.evaluation.counterfact import rewrite_text

    return {
        "rewrite": [(rewrite_text(r), r["target_new"]) for r in records],
        "paraphrase": [(p, r["target_new"]) for r in records for p in r.get("paraphrase_prompts") or []],
        "neighborhood": [(nb["prompt"], nb["target"]) for r in records for nb in r.get("neighborhood") or []],
    }


def _percent(flags: list[bool]) -> float:
    return 100.0 * sum(flags) / len(flags) if flags else math.nan


def score(model, tokenizer, items: dict, add_bos: bool,
          reference: list[list[int]] | None) -> tuple[dict, list[list[int]]]:
    """``({eff, gen, spe, nbr_acc, score}, neighbourhood argmax tokens)``: the measures in % and the mean
    ``score`` of Eff., Gen. and Spe.; ``reference`` holds the unedited model's neighbourhood argmax tokens
    (``None``: score the unedited model itself, whose Spe. is 100 by definition)."""
    from massedit.evaluation.scoring import score_targets

    rewrite = score_targets(model, tokenizer, items["rewrite"], add_bos)
    paraphrase = score_targets(model, tokenizer, items["paraphrase"], add_bos)
    neighborhood = score_targets(model, tokenizer, items["neighborhood"], add_bos)
    argmax = [s.argmax_ids for s in neighborhood]
    kept = [a == b for a, b in zip(argmax, reference if reference is not None else argmax)]
    out = {
        "eff": _percent([s.exact for s in rewrite]),
        "gen": _percent([s.exact for s in paraphrase]),
        "spe": _percent(kept),
        "nbr_acc": _percent([s.exact for s in neighborhood]),  # the neighbourhood's own answers, for reference
    }
    measures = [out[k] for k in ("eff", "gen", "spe") if not math.isnan(out[k])]
    out["score"] = round(sum(measures) / len(measures), SCORE_DIGITS) if measures else math.nan
    return out, argmax


# --------------------------------------------------------------------------------------------------------
# Search


def _snapshot(model, arch, layers) -> dict[int, torch.Tensor]:
    from massedit.architectures import down_proj_weight

    return {layer: down_proj_weight(model, arch, layer).detach().clone() for layer in layers}


def _restore(model, arch, snapshot: dict[int, torch.Tensor]) -> None:
    import torch

    from massedit.architectures import down_proj_weight

    with torch.no_grad():
        for layer, weight in snapshot.items():
            down_proj_weight(model, arch, layer).copy_(weight)


def search(
    model,
    tokenizer,
    records_tune: list[dict],
    moments_by_layer: dict[int, torch.Tensor],
    method: str,
    base_hp: dict,
    grid: dict,
    seed: int,
    add_bos: bool,
    progress: bool = False,
) -> list[dict]:
    """Every trial of ``grid`` (raw or from ``method_grid``) on ``records_tune``: one row per layer set × λ ×
    clamp × learning rate, in grid order. The model is left as it was (restored from a snapshot)."""
    import torch

    from massedit.architectures import arch_for
    from massedit.editing import run as editing_run
    from massedit.editing.update import apply_multilayer_update

    spec = editing_run.method_spec(method)
    if spec.update != "closed_form" or spec.step is None:
        raise ValueError(f"tuning searches the λ of the closed-form update; {method} uses the {spec.update!r} update")
    grid = method_grid(grid, method, base_hp)
    missing = [layer for layer in grid_layers(grid) if layer not in moments_by_layer]
    if missing:
        raise ValueError(f"statistics lack layers {missing} of the tune grid")
    if not records_tune:
        raise ValueError("no tune records")
    arch = arch_for(model)
    items = scoring_items(records_tune)
    unedited, reference = score(model, tokenizer, items, add_bos, None)
    log.info("unedited model on the tune edits: %s", unedited)
    ckey = clamp_key(method)
    results: dict[tuple, dict] = {}
    for z, clamp, lr in residual_combinations(grid):
        hp = {**base_hp, "layers": [z], ckey: clamp, "v_lr": lr}
        res = editing_run.compute_residuals(model, tokenizer, records_tune, method, hp, seed, add_bos, progress)
        nll = [loss["nll"] for loss in res.losses if "nll" in loss]
        Z = res.h + res.residuals
        for layers in (s for s in grid["layer_sets"] if max(s) == z):
            for lam in grid["mom2_update_weight"]:
                row = {"method": method, "z_layer": z, "layers": list(layers), "mom2_update_weight": lam,
                       "clamp_key": ckey, "clamp_factor": clamp, "v_lr": lr,
                       "residual_nll": sum(nll) / len(nll) if nll else math.nan,
                       "residual_s": res.timings.get("residuals_s", math.nan), "error": ""}
                snapshot = _snapshot(model, arch, layers)
                t0 = time.perf_counter()
                try:
                    deltas, _ = apply_multilayer_update(
                        model, tokenizer, arch, records_tune, res.templates, layers, z, Z, moments_by_layer,
                        [float(lam)] * len(layers), add_bos, spec.spreading, output=spec.output,
                    )
                    if not all(torch.isfinite(d).all() for d in deltas.values()):
                        raise ValueError("the update is not finite")
                    measured, _ = score(model, tokenizer, items, add_bos, reference)
                    row["delta_norm"] = math.sqrt(sum(float(d.norm()) ** 2 for d in deltas.values()))
                except ValueError as err:  # e.g. an indefinite system at a tiny λ: the trial fails, the search goes on
                    measured = {k: math.nan for k in ("eff", "gen", "spe", "nbr_acc", "score")}
                    row["delta_norm"], row["error"] = math.nan, str(err)
                finally:
                    _restore(model, arch, snapshot)
                row.update(measured)
                row["update_s"] = time.perf_counter() - t0
                log.info("trial layers=%s λ=%g %s=%g v_lr=%g: Eff %.0f Gen %.0f Spe %.0f%s", layers, lam, ckey,
                         clamp, lr, row["eff"], row["gen"], row["spe"], f" ({row['error']})" if row["error"] else "")
                results[(tuple(layers), lam, clamp, lr)] = row
    # Grid order: layer set, then λ, clamp and learning rate (the search ran in residual-pass order).
    return [
        {"trial": i, **results[key]}
        for i, key in enumerate(
            (tuple(layers), lam, clamp, lr)
            for layers in grid["layer_sets"]
            for lam in grid["mom2_update_weight"]
            for clamp in grid["clamp_factor"]
            for lr in grid["v_lr"]
        )
    ]


def choose(rows: list[dict]) -> dict:
    """The overrides of the best row: highest mean score, then larger λ, then smaller clamp factor, then the
    earlier row. Rows whose score is NaN (a failed trial) are never chosen."""
    valid = [(i, row) for i, row in enumerate(rows) if not math.isnan(float(row["score"]))]
    if not valid:
        raise ValueError("no trial of the tune grid succeeded")
    _, best = min(valid, key=lambda item: (-round(float(item[1]["score"]), SCORE_DIGITS),
                                           -float(item[1]["mom2_update_weight"]),
                                           float(item[1]["clamp_factor"]), item[0]))
    return {"layers": [int(x) for x in best["layers"]], "mom2_update_weight": best["mom2_update_weight"],
            best["clamp_key"]: best["clamp_factor"], "v_lr": best["v_lr"]}


# --------------------------------------------------------------------------------------------------------
# Outputs


def fragment(chosen: dict, method: str, model: str) -> dict:
    """The chosen settings as a config fragment: ``methods: {method: {models: {model: chosen}}}``."""
    return {"methods": {method: {"models": {model: dict(chosen)}}}}


CSV_FIELDS = ("trial", "method", "layers", "z_layer", "mom2_update_weight", "clamp_key", "clamp_factor", "v_lr",
              "eff", "gen", "spe", "score", "nbr_acc", "residual_nll", "delta_norm", "residual_s", "update_s",
              "chosen", "error")


def _is_chosen(row: dict, chosen: dict) -> bool:
    return (list(row["layers"]) == list(chosen["layers"])
            and row["mom2_update_weight"] == chosen["mom2_update_weight"]
            and row["clamp_factor"] == chosen.get(row["clamp_key"]) and row["v_lr"] == chosen["v_lr"])


def write_outputs(rows: list[dict], chosen: dict, method: str, model: str, out_csv: str, out_yaml: str,
                  case_ids: list | None = None, unedited: dict | None = None) -> None:
    """The search table (CSV, one row per trial, ``chosen`` marking the choice) and the chosen settings as a
    config fragment (YAML) that a run can add after its config: ``--configfile config/config.yaml <yaml>``.
    The YAML's header comments name the table, the choice's scores and the held-out tune ``case_ids``."""
    import yaml

    from massedit import io

    with io.atomic_path(out_csv) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            out = {**row, "chosen": _is_chosen(row, chosen)}
            out["layers"] = json.dumps([int(x) for x in row["layers"]])
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in out.items()})
    best = next((row for row in rows if _is_chosen(row, chosen)), None)
    header = [f"Edit settings of {method} for {model}, chosen by the `tune` target (docs/tuning.md).",
              f"Search table: {out_csv}.",
              "Use: snakemake --configfile config/config.yaml <this file> (later files override earlier ones)."]
    if best is not None:
        header.append(f"Chosen trial: Eff {best['eff']:.1f}, Gen {best['gen']:.1f}, Spe {best['spe']:.1f} "
                      f"(mean {best['score']:.1f}) on the held-out tune edits.")
    if best is not None and not best["eff"] >= WEAK_EFFICACY:
        header.append(f"WARNING: only {best['eff']:.0f}% of the tune edits take at the best trial; widen the grid "
                      f"(smaller λ, a larger clamp factor or learning rate, other layers).")
    if unedited is not None:
        header.append(f"Unedited model: Eff {unedited['eff']:.1f}, Gen {unedited['gen']:.1f}.")
    if case_ids is not None:
        header.append(f"Tune edits (held out), case_ids: {json.dumps(list(case_ids))}")
    text = "".join(f"# {line}\n" for line in header)
    text += yaml.safe_dump(fragment(chosen, method, model), sort_keys=False, default_flow_style=None)
    io.write_text(out_yaml, text)


# --------------------------------------------------------------------------------------------------------
# The rule


def tune_model(method: str, model_name: str, base_hp: dict, grid: dict, selection: dict, model_dir: str,
               model_cfg: dict, records: str, dataset_spec: dict, stats_npz: str, seed: int, out_csv: str,
               out_yaml: str, out_meta: str) -> None:
    """Rule tune_method: known-fact filter (if the dataset asks for it), held-out tune edits, search, choice.

    ``selection``: ``n_edits`` (tune edits), ``pick`` and ``pick_seed``, and the evaluated batches to keep
    clear of: ``evaluated_n_edits``, ``select`` and ``select_seed``."""
    from massedit import io
    from massedit.steps import _load, _model_fingerprint, load_moments

    t0 = time.perf_counter()
    model, tokenizer = _load(model_dir, model_cfg)
    add_bos = bool(model_cfg.get("bos", False))
    rows = io.read_jsonl(records)
    n_candidates = len(rows)
    if dataset_spec.get("keep_known", False):
        from massedit.evaluation.counterfact import known_mask

        rows = [r for r, k in zip(rows, known_mask(model, tokenizer, rows, add_bos)) if k]
        log.info("%d of %d facts are known to the unedited model", len(rows), n_candidates)
    tune, evaluated = held_out(rows, int(selection["n_edits"]), [int(n) for n in selection["evaluated_n_edits"]],
                               selection.get("select", "first"), int(selection.get("select_seed", 0)),
                               selection.get("pick", "end"), int(selection.get("pick_seed", 0)))
    case_ids = [r["case_id"] for r in tune]
    log.info("tune edits (held out): %s", case_ids)
    method_hp = method_grid(grid, method, base_hp)
    moments = load_moments(stats_npz, grid_layers(method_hp), model_dir)
    unedited, _ = score(model, tokenizer, scoring_items(tune), add_bos, None)
    table = search(model, tokenizer, tune, moments, method, base_hp, grid, seed, add_bos)
    chosen = choose(table)
    log.info("chosen: %s", chosen)
    best = next(row for row in table if _is_chosen(row, chosen))
    if not best["eff"] >= WEAK_EFFICACY:
        log.warning("only %.0f%% of the tune edits take at the best trial: widen the grid", best["eff"])
    write_outputs(table, chosen, method, model_name, out_csv, out_yaml, case_ids, unedited)
    io.write_json(out_meta, _finite({
        "method": method, "model": model_name, "chosen": chosen, "grid": method_hp, "base_hparams": base_hp,
        "selection": selection, "keep_known": bool(dataset_spec.get("keep_known", False)),
        "n_candidates": n_candidates, "n_known": len(rows), "tune_case_ids": case_ids,
        "evaluated_case_ids": evaluated, "unedited": unedited, "seed": seed, "bos": add_bos,
        "stats": str(stats_npz), "model_fingerprint": _model_fingerprint(model_dir),
        "wall_s": time.perf_counter() - t0, "library_versions": io.library_versions(),
    }))


def _finite(obj):
    """NaN (a measure without prompts) as null, so the JSON stays standard."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {key: _finite(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(value) for value in obj]
    return obj
