"""The tune target's library (massedit.tuning): held-out edits, the residual-reusing search, the choice rule and
the config fragment it writes."""
from __future__ import annotations

import csv
import itertools
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from massedit import config as mc
from massedit import tuning
from massedit.architectures import arch_for, down_proj_weight
from massedit.editing import run as editing_run
from massedit.editing import update as editing_update
from massedit.testing import tiny_model, tiny_tokenizer

ROOT = Path(__file__).resolve().parents[1]

FACTS = [  # subject, prompt, new, true, paraphrase, neighbour prompt, neighbour answer
    ("France", "The capital of {} is", "Rome", "Paris", "France's capital city is", "The capital of Spain is",
     "Madrid"),
    ("Japan", "The official language of {} is", "Spanish", "Japanese", "People in Japan speak",
     "The official language of Italy is", "Italian"),
    ("Kenya", "{} is located in", "Europe", "Africa", "Kenya is located in the continent of",
     "Egypt is located in", "Africa"),
]


def records(n: int = 3) -> list[dict]:
    return [
        {"case_id": i, "subject": s, "prompt": p, "target_new": new, "target_true": true, "relation": None,
         "paraphrase_prompts": [para], "neighborhood": [{"prompt": nb, "target": ans}], "generation_prompts": []}
        for i, (s, p, new, true, para, nb, ans) in enumerate(FACTS[:n])
    ]


HP = {  # small residual settings: a few Adam steps, two short context templates
    "v_num_grad_steps": 3, "kl_factor": 0.0625, "early_stop": 0.01, "v_weight_decay": 0.5, "v_lr": 0.5,
    "clamp_norm_factor": 0.75, "clamp_ks_factor": 2.0, "cs_factor": 2, "mse_factor": 8, "tau": 0.07, "top_m": 4,
    "templates": {"seeds": ["The", "It"], "max_new_tokens": 3},
}
GRID = {"layer_sets": [[0, 1], [1], [2]], "mom2_update_weight": [1, 100], "clamp_factor": [0.5, 1.0],
        "v_lr": [0.5]}


@pytest.fixture(scope="module")
def tiny():
    tok = tiny_tokenizer("gpt2")
    model = tiny_model("llama", tok, n_layers=3, hidden=32, intermediate=64, seed=1)
    moments = {layer: torch.eye(64, dtype=torch.float64) for layer in range(3)}
    return model, tok, moments


def _weights(model) -> dict[int, torch.Tensor]:
    arch = arch_for(model)
    return {layer: down_proj_weight(model, arch, layer).detach().clone() for layer in range(3)}


# ------------------------------------------------------------------------------------------------ search


def test_residuals_once_per_pass_every_point_and_weights_restored(tiny, monkeypatch):
    model, tok, moments = tiny
    original = _weights(model)
    passes, trials = [], []

    real_residuals = editing_run.compute_residuals

    def counting_residuals(model_, tok_, recs, method, hp, *args, **kwargs):
        passes.append((tuple(hp["layers"]), hp["clamp_norm_factor"], hp["v_lr"]))
        return real_residuals(model_, tok_, recs, method, hp, *args, **kwargs)

    real_update = editing_update.apply_multilayer_update

    def checked_update(model_, *args, **kwargs):
        # Every trial starts from the unedited weights, bit for bit.
        current = _weights(model_)
        assert all(torch.equal(current[layer], original[layer]) for layer in original)
        trials.append(args[5])
        return real_update(model_, *args, **kwargs)

    monkeypatch.setattr(editing_run, "compute_residuals", counting_residuals)
    monkeypatch.setattr(editing_update, "apply_multilayer_update", checked_update)
    rows = tuning.search(model, tok, records(), moments, "memit", HP, GRID, seed=0, add_bos=False)

    # One residual pass per (z-layer, clamp, learning rate): z-layers 1 and 2, two clamps, one rate.
    assert sorted(passes) == sorted(itertools.product([(1,), (2,)], [0.5, 1.0], [0.5]))
    expected = set(itertools.product([(0, 1), (1,), (2,)], [1, 100], [0.5, 1.0], [0.5]))
    got = [(tuple(r["layers"]), r["mom2_update_weight"], r["clamp_factor"], r["v_lr"]) for r in rows]
    assert len(got) == len(expected) == tuning.n_trials(tuning.method_grid(GRID, "memit", HP)) == len(trials)
    assert set(got) == expected
    assert [r["trial"] for r in rows] == list(range(len(rows)))
    assert all(r["clamp_key"] == "clamp_norm_factor" and r["z_layer"] == max(r["layers"]) for r in rows)
    for row in rows:
        assert not row["error"], row["error"]
        assert row["delta_norm"] > 0
        for key in ("eff", "gen", "spe", "nbr_acc"):
            assert 0 <= row[key] <= 100
        assert row["score"] == pytest.approx((row["eff"] + row["gen"] + row["spe"]) / 3, abs=1e-5)
    after = _weights(model)
    assert all(torch.equal(after[layer], original[layer]) for layer in original)


def test_eamet_searches_its_own_clamp(tiny, monkeypatch):
    model, tok, moments = tiny
    seen = []
    real_residuals = editing_run.compute_residuals

    def counting_residuals(model_, tok_, recs, method, hp, *args, **kwargs):
        seen.append((hp["clamp_ks_factor"], hp["clamp_norm_factor"]))
        return real_residuals(model_, tok_, recs, method, hp, *args, **kwargs)

    monkeypatch.setattr(editing_run, "compute_residuals", counting_residuals)
    grid = {"layer_sets": [[1]], "mom2_update_weight": [10], "clamp_factor": {"eamet": [3.0], "memit": [9.0]}}
    rows = tuning.search(model, tok, records(2), moments, "eamet", HP, grid, seed=0, add_bos=False)
    # The EAMET clamp comes from the mapping; the absent v_lr axis keeps the configured rate.
    assert seen == [(3.0, 0.75)]
    assert [(r["clamp_key"], r["clamp_factor"], r["v_lr"]) for r in rows] == [("clamp_ks_factor", 3.0, 0.5)]
    assert tuning.choose(rows) == {"layers": [1], "mom2_update_weight": 10, "clamp_ks_factor": 3.0, "v_lr": 0.5}


def test_search_rejects_missing_statistics_and_other_updates(tiny):
    model, tok, moments = tiny
    with pytest.raises(ValueError, match=r"statistics lack layers \[2\]"):
        tuning.search(model, tok, records(1), {0: moments[0], 1: moments[1]}, "memit", HP, GRID, 0, False)
    with pytest.raises(ValueError, match="closed-form"):
        tuning.search(model, tok, records(1), moments, "rome", HP, GRID, 0, False)


def test_grid_validation():
    with pytest.raises(ValueError, match="ascending"):
        tuning.method_grid({**GRID, "layer_sets": [[2, 1]]}, "memit", HP)
    with pytest.raises(ValueError, match="positive numbers"):
        tuning.method_grid({**GRID, "mom2_update_weight": [0]}, "memit", HP)
    with pytest.raises(ValueError, match="unknown keys"):
        tuning.method_grid({**GRID, "lambda": [1]}, "memit", HP)
    assert tuning.grid_layers(tuning.method_grid(GRID, "memit", HP)) == [0, 1, 2]
    assert tuning.residual_combinations(tuning.method_grid(GRID, "memit", HP)) == [
        (1, 0.5, 0.5), (1, 1.0, 0.5), (2, 0.5, 0.5), (2, 1.0, 0.5)]


# ------------------------------------------------------------------------------------------------ choice


def _row(layers, lam, clamp, eff, gen, spe, lr=0.5, key="clamp_norm_factor"):
    return {"layers": layers, "mom2_update_weight": lam, "clamp_key": key, "clamp_factor": clamp, "v_lr": lr,
            "eff": eff, "gen": gen, "spe": spe, "score": (eff + gen + spe) / 3}


def test_choice_highest_mean_then_larger_lambda_then_smaller_clamp():
    rows = [
        _row([3, 4], 100, 0.75, 100, 50, 60),   # mean 70
        _row([4], 1000, 0.75, 100, 60, 80),     # mean 80
        _row([3, 4], 4000, 0.75, 90, 70, 80),   # mean 80, larger λ: chosen
        _row([3, 4], 4000, 1.5, 80, 80, 80),    # mean 80, same λ, larger clamp
        _row([4], 10, 0.75, math.nan, math.nan, math.nan),  # failed trial
    ]
    rows[4]["score"] = math.nan
    assert tuning.choose(rows) == {"layers": [3, 4], "mom2_update_weight": 4000, "clamp_norm_factor": 0.75,
                                   "v_lr": 0.5}
    # Equal means computed in a different order still tie (float rounding), and the earlier row wins.
    a, b = _row([4], 100, 2.0, 100, 100 / 3, 200 / 3), _row([3, 4], 100, 2.0, 200 / 3, 100, 100 / 3)
    assert tuning.choose([a, b])["layers"] == [4]
    assert tuning.choose([b, a])["layers"] == [3, 4]
    with pytest.raises(ValueError, match="no trial"):
        tuning.choose([rows[4]])


# ------------------------------------------------------------------------------------------------ held-out edits


def _dataset(n: int) -> list[dict]:
    return [{"case_id": 100 + i} for i in range(n)]


def test_tune_edits_come_from_the_end_and_are_disjoint():
    data = _dataset(30)
    tune, evaluated = tuning.held_out(data, 5, [4, 8, 16])
    assert [r["case_id"] for r in tune] == list(range(125, 130))
    assert evaluated == list(range(100, 116))
    assert not {r["case_id"] for r in tune} & set(evaluated)


@pytest.mark.parametrize("pick", ["end", "sample"])
def test_tune_edits_avoid_sampled_batches(pick):
    from massedit.datasets.selection import select_records

    data = _dataset(40)
    tune, evaluated = tuning.held_out(data, 10, [4, 8, 16], "sample", 3, pick, pick_seed=7)
    edited = {r["case_id"] for n in (4, 8, 16) for r in select_records(data, n, "sample", 3)}
    assert set(evaluated) == edited
    ids = [r["case_id"] for r in tune]
    assert len(ids) == 10 and ids == sorted(ids) and not set(ids) & edited
    # Seeded: the same again.
    assert tuning.held_out(data, 10, [4, 8, 16], "sample", 3, pick, pick_seed=7)[0] == tune


def test_too_small_dataset_fails_clearly():
    with pytest.raises(ValueError, match=r"too few records to hold out 8 tune edits: 20 candidate.*take 16, leaving 4"):
        tuning.held_out(_dataset(20), 8, [8, 16])
    with pytest.raises(ValueError, match="leaving 0"):
        tuning.held_out(_dataset(10), 1, [16])


# ------------------------------------------------------------------------------------------------ outputs


def _rows_for_output():
    rows = [{**_row([3, 4], 1000, 20.0, 100, 50, 80, key="clamp_ks_factor"), "trial": 0, "method": "eamet",
             "z_layer": 4, "error": ""},
            {**_row([4], 100, 20.0, 100, 40, 60, key="clamp_ks_factor"), "trial": 1, "method": "eamet",
             "z_layer": 4, "error": ""}]
    return rows, tuning.choose(rows)


def test_fragment_round_trips_through_the_config(tmp_path):
    rows, chosen = _rows_for_output()
    out_csv, out_yaml = tmp_path / "search.csv", tmp_path / "chosen.yaml"
    tuning.write_outputs(rows, chosen, "eamet", "smollm2-135m", str(out_csv), str(out_yaml), case_ids=[401, 402])

    table = list(csv.DictReader(out_csv.open()))
    assert [json.loads(r["layers"]) for r in table] == [[3, 4], [4]]
    assert [r["chosen"] for r in table] == ["True", "False"]
    text = out_yaml.read_text()
    assert "[401, 402]" in text and "search.csv" in text
    fragment = yaml.safe_load(text)
    assert fragment == {"methods": {"eamet": {"models": {"smollm2-135m": {
        "layers": [3, 4], "mom2_update_weight": 1000, "clamp_ks_factor": 20.0, "v_lr": 0.5}}}}}

    # Snakemake's own merge of a later --configfile, then validation and the accessor the rules use.
    from snakemake.utils import update_config

    config = mc.load_config(ROOT / "config" / "config.yaml")
    before = mc.resolve_hparams(config, "eamet", "smollm2-135m")
    memit_before = mc.resolve_hparams(config, "memit", "smollm2-135m")
    update_config(config, fragment)
    mc.validate(config)
    after = mc.resolve_hparams(config, "eamet", "smollm2-135m")
    assert {k: after[k] for k in chosen} == chosen
    assert {k: v for k, v in after.items() if k not in chosen} == {k: v for k, v in before.items() if k not in chosen}
    assert mc.resolve_hparams(config, "memit", "smollm2-135m") == memit_before
    # The statistics the edits need follow the chosen layers.
    assert mc.stats_wildcards(config, "smollm2-135m", "eamet")["layers"] == "3-4"


def test_settings_defaults_and_search_parameters():
    config = mc.load_config(ROOT / "config" / "config.yaml")
    config.pop("tune", None)
    s = tuning.settings(config)
    assert s["models"] == config["grid"]["models"] and s["methods"] == config["grid"]["methods"]
    assert s["dataset"] == config["grid"]["datasets"][0] and s["n_edits"] == 8 and s["pick"] == "end"
    assert s["grid"] == tuning.DEFAULT_GRID
    config["tune"] = {"grid": {"v_lr": [0.1, 0.5]}, "n_edits": 4}
    s = tuning.settings(config)
    assert s["grid"]["v_lr"] == [0.1, 0.5] and s["grid"]["layer_sets"] == [[3, 4], [4]] and s["n_edits"] == 4
    config["tune"] = {"methods": ["nope"]}
    with pytest.raises(ValueError, match="tune.methods"):
        tuning.settings(config)
    hp = mc.resolve_hparams(config, "eamet", "smollm2-135m")
    base = tuning.search_hparams(hp, "eamet")
    assert not {"layers", "mom2_update_weight", "clamp_ks_factor", "v_lr"} & set(base)
    assert base["kl_factor"] == hp["kl_factor"]


# ------------------------------------------------------------------------------------------------ the rule step


def test_tune_model_writes_outputs(tmp_path):
    from massedit import caches, io
    from massedit.testing import save_tiny_model

    model_dir = save_tiny_model(tmp_path / "model", arch="llama", n_layers=3, seed=1)
    data = records(3) + [{**r, "case_id": 10 + r["case_id"]} for r in records(3)]
    io.write_jsonl(tmp_path / "records.jsonl", data)
    # A statistics file as compute_layer_stats writes it, key included (tune_model verifies it).
    key = caches.stats_key("unknown", {"dtype": "float32", "bos": False}, "c", {"kind": "model_sample"}, [1, 2],
                           4, 32, "float32", 0)
    caches.save_stats(str(tmp_path / "stats.npz"), key, {layer: 4 * np.eye(64) for layer in (1, 2)}, 4)
    grid = {"layer_sets": [[1, 2], [2]], "mom2_update_weight": [10, 1000], "clamp_factor": {"memit": [0.75]}}
    selection = {"n_edits": 2, "evaluated_n_edits": [4], "select": "first", "select_seed": 0, "pick": "end",
                 "pick_seed": 0}
    out = {k: str(tmp_path / "out" / name) for k, name in
           (("out_csv", "search.csv"), ("out_yaml", "chosen.yaml"), ("out_meta", "tune.json"))}
    # As the rule passes them: every axis explicit, the base without the keys the trials set.
    grid = tuning.method_grid(grid, "memit", HP)
    tuning.tune_model("memit", "tiny", tuning.search_hparams(HP, "memit"), grid, selection, str(model_dir),
                      {"dtype": "float32", "bos": False}, str(tmp_path / "records.jsonl"), {"keep_known": False},
                      str(tmp_path / "stats.npz"), 0, **out)
    meta = io.read_json(out["out_meta"])
    assert meta["tune_case_ids"] == [11, 12] and meta["evaluated_case_ids"] == [0, 1, 2, 10]
    assert len(list(csv.DictReader(open(out["out_csv"])))) == 4
    chosen = yaml.safe_load(open(out["out_yaml"]))["methods"]["memit"]["models"]["tiny"]
    assert chosen == meta["chosen"] and chosen["clamp_norm_factor"] == 0.75 and chosen["v_lr"] == 0.5


# ------------------------------------------------------------------------------------------------ the rule


@pytest.mark.skipif('rules/tune.smk' not in (ROOT / "Snakefile").read_text(),
                    reason="the Snakefile does not include rules/tune.smk yet")
def test_tune_target_dry_run(tmp_path):
    # The target comes first: --configfile takes every argument after it as a file.
    cmd = [sys.executable, "-m", "snakemake", "tune", "-n", "--cores", "1", "-d", str(tmp_path), "-s",
           str(ROOT / "Snakefile"), "--configfile", str(ROOT / "config" / "config.yaml")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    for method in ("eamet", "memit"):
        assert f"results/tune/smollm2-135m/{method}/chosen.yaml" in output
    # One statistics file covers every layer of the grid (default layer sets [3, 4] and [4]).
    assert "resources/stats/smollm2-135m/model-sample/L3-4_" in output


def _schema_tune():
    return yaml.safe_load((ROOT / "config" / "schema.yaml").read_text())["properties"].get("tune")


@pytest.mark.skipif(_schema_tune() is None, reason="config/schema.yaml has no tune section yet")
def test_schema_defaults_match_the_library():
    """The schema fills the same defaults the library assumes when the section is absent."""
    config = mc.load_config(ROOT / "config" / "config.yaml")
    config["tune"] = {}
    mc.validate(config)
    assert config["tune"]["grid"] == tuning.DEFAULT_GRID
    assert {k: config["tune"][k] for k in ("n_edits", "pick")} == {k: tuning.DEFAULTS[k] for k in ("n_edits", "pick")}
    assert tuple(_schema_tune()["properties"]["methods"]["items"]["enum"]) == tuning.CLOSED_FORM_METHODS
