"""The paper's pipeline end to end on a tiny random model: every method, CounterFact-style and ZsRE data,
the analyses (prefix lengths, facts per subject, general abilities, misalignment), the comparison with
the paper and the HTML report; plus dry runs of config/paper.yaml and config/cpu.yaml."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml

from test_workflow import ROOT, job_counts, snakemake

MIRROR = Path(os.environ.get("MASSEDIT_MIRROR") or ROOT.parent / "shared" / "data")
needs_mirror = pytest.mark.skipif(not (MIRROR / "zsre").is_dir(), reason=f"no data mirror at {MIRROR}")

METHODS = ["ft", "rome", "memit", "pmet", "alphaedit", "eamet"]


def tiny_paper_config(model_dir: Path) -> dict:
    residual = {"v_num_grad_steps": 2, "templates": {"seeds": ["The", "It"], "max_new_tokens": 3}}
    return {
        "mirror_dir": str(MIRROR),
        "models": {"tiny": {"source": {"kind": "local", "path": str(model_dir)}, "bos": False}},
        "datasets": {
            "quickstart": {"kind": "quickstart", "keep_known": False},
            "zsre": {"kind": "zsre", "source": "zsre_mend_train_1k"},
        },
        "corpora": {"model-sample": {"kind": "model_sample", "doc_tokens": 16}},
        "stats": {"corpus": "model-sample", "n_docs": 8, "maxlen": 16, "batch_tokens": 256},
        "methods": {
            "eamet": {"defaults": {**residual, "layers": [0, 1], "top_m": 4}},
            "memit": {"defaults": {**residual, "layers": [0, 1]}},
            "pmet": {"defaults": {**residual, "layers": [0, 1]}},
            "alphaedit": {"defaults": {**residual, "layers": [0, 1]}},
            "rome": {"defaults": {"layers": [1], "v_num_grad_steps": 2,
                                  "templates": {"lengths": [[3, 2]], "top_k": 5}}},
            "ft": {"defaults": {"layers": [1], "num_steps": 2}},
        },
        "evaluation": {"prefix_len": 3, "n_prefixes": 2, "fluency_max_new_tokens": 4, "batch_size": 8,
                       "general": {"tasks": ["sst2", "rte"], "n_per_task": 2, "gen_len": 2}},
        "grid": {"models": ["tiny"], "datasets": ["quickstart", "zsre"], "methods": METHODS, "n_edits": [3]},
        "extra_grids": [{"models": ["tiny"], "datasets": ["quickstart"], "methods": ["eamet", "memit"],
                         "n_edits": [5]}],
        "analyses": {
            "prefix_robustness": {"models": ["tiny"], "datasets": ["quickstart"], "methods": ["eamet", "memit"],
                                  "n_edits": 3, "prefix_lens": [3, 6]},
            "facts_per_subject": {"models": ["tiny"], "dataset": "zsre", "methods": ["memit"], "values": [1, 2],
                                  "max_edits": 3},
            "general_abilities": {"models": ["tiny"], "datasets": ["quickstart"], "methods": ["eamet"],
                                  "n_edits": 3},
            "misalignment": {"methods": ["eamet", "memit"]},
        },
    }


@pytest.fixture(scope="module")
def paper_run(tmp_path_factory):
    from massedit.testing import save_tiny_model

    workdir = tmp_path_factory.mktemp("paper_workflow")
    model_dir = save_tiny_model(workdir / "tiny-model", arch="llama", n_layers=2, seed=0, style="gpt2")
    configfile = workdir / "config.yaml"
    configfile.write_text(yaml.safe_dump(tiny_paper_config(model_dir), sort_keys=False))
    snakemake(workdir, configfile, "--cores", "2", "--max-threads", "1", "--resources", "gpu=2")
    return workdir, configfile


@needs_mirror
def test_every_table_figure_and_the_report(paper_run):
    workdir, configfile = paper_run
    for path in ("results/tables/main.md", "results/tables/comparison.md", "results/tables/table3_misalignment.md",
                 "results/figures/scaling.png", "results/figures/figure5_prefix_robustness.png",
                 "results/figures/figure6_facts_per_subject.png", "results/figures/figure9_general_ability.png"):
        assert (workdir / path).stat().st_size > 0, path
    main = (workdir / "results/tables/main.csv").read_text()
    for method in METHODS:
        assert method in main.lower() or method.upper() in main, method
    snakemake(workdir, configfile, "--report", str(workdir / "report.html"))
    html = (workdir / "report.html").read_text(errors="replace")
    assert "figure5_prefix_robustness.png" in html and "table3_misalignment" in html


@needs_mirror
def test_smaller_batches_take_the_residuals_of_the_largest(paper_run):
    """n=3 and n=5 of EAMET on the same dataset share one residual file; its head is the n=3 residuals."""
    import json

    workdir, _ = paper_run
    residual_files = sorted((workdir / "results/residuals/tiny/quickstart/eamet").glob("n*/residuals.pt"))
    assert [p.parent.name for p in residual_files] == ["n5"]
    meta = json.loads((workdir / "results/edits/tiny/quickstart/eamet/n3/edit.json").read_text())
    assert meta["residuals_from"].endswith("eamet/n5/residuals.pt") and meta["n_edits"] == 3


@needs_mirror
def test_second_run_has_nothing_to_do(paper_run):
    workdir, configfile = paper_run
    assert "Nothing to be done" in snakemake(workdir, configfile, "-n", "--cores", "1")


def test_paper_config_plans_the_full_grid(tmp_path):
    """config/paper.yaml: 6 models x 3 datasets x 6 methods at 10,000 edits, and the analyses."""
    output = snakemake(tmp_path, ROOT / "config" / "paper.yaml", "-n", "--cores", "1",
                       "--config", f"mirror_dir={MIRROR}")
    counts = job_counts(output)
    assert counts["acquire_model"] == 6
    assert counts["edit_model"] == 6 * 3 * 6 + 3 * 20 * 4 + 3 * 4  # grid + Figure 6 + Figure 5's n=1000
    assert counts["evaluate_model"] == 6 * 3 * 7 + 3 * 20 * 4
    assert counts["evaluate_prefix_length"] == 3 * 4 * 4
    assert counts["evaluate_general"] == 3 * 2 * 4
    assert counts["misalignment_score"] == 6 * 3 * 3
    # EAMET, MEMIT and AlphaEdit share layers 3-4; PMET has its own (LLaMA2-13B: 3-4 too); ROME layer 5
    assert counts["compute_layer_stats"] == 6 * 3 - 1
    for rule in ("compare_with_paper", "make_table3", "plot_prefix_robustness", "plot_facts_per_subject",
                 "plot_general_ability", "plot_scaling", "make_tables"):
        assert counts[rule] == 1, rule


def test_cpu_config_dry_run(tmp_path):
    output = snakemake(tmp_path, ROOT / "config" / "cpu.yaml", "-n", "--cores", "1", "--config",
                       f"mirror_dir={MIRROR}")
    counts = job_counts(output)
    assert counts["acquire_model"] == 2 and counts["plot_general_ability"] == 1
    # One residual file per model x dataset x method for the largest batch; AlphaEdit shares MEMIT's settings
    # there, so it reads MEMIT's: SmolLM2 CounterFact and ZsRE (EAMET, MEMIT, PMET), Gemma (EAMET, MEMIT), and
    # 3 facts-per-subject datasets x (EAMET, MEMIT).
    assert counts["optimise_residuals"] == 2 * 3 + 2 + 3 * 2
    assert "residuals/smollm2-135m/counterfact/alphaedit" not in output
    assert "residuals/smollm2-135m/counterfact/memit/n500/residuals.pt" in output
    # The largest batch's chain (its records, then its residuals) is scheduled before everything else.
    priorities = {int(p) for p in re.findall(r"priority: (\d+)", output)}
    assert max(priorities) == 500
    assert re.search(r"wildcards: model=smollm2-135m, dataset=counterfact, n=500\s+priority: 500", output)
    assert re.search(r"dataset=counterfact, method=eamet, n=500\s+priority: 500", output)
