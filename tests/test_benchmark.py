"""The benchmark's bookkeeping: FLOP counters, matmul rate, peak memory, CSV and markdown, comparisons.

No timing is asserted: speed is measured by scripts/benchmark.py, never in tests."""
from types import SimpleNamespace

import pytest
import torch

from massedit import benchmark as bm
from massedit.editing import update as update_module
from massedit.editing.residual import EditPrompts
from massedit.testing import tiny_config, tiny_model, tiny_tokenizer

RECORDS = [
    {"case_id": 0, "prompt": "The capital of {} is", "subject": "France", "target_new": "Rome", "target_true": "Paris",
     "paraphrase_prompts": ["France has its capital in"],
     "neighborhood": [{"prompt": "The capital of Italy is", "target": "Rome"}],
     "generation_prompts": ["France is known for", "The people of France"]},
    {"case_id": 1, "prompt": "{} plays", "subject": "Lionel Messi", "target_new": "tennis", "target_true": "football",
     "paraphrase_prompts": [], "neighborhood": [{"prompt": "Roger Federer plays", "target": "tennis"}],
     "generation_prompts": ["Lionel Messi is"]},
]
RATES = {"float32": 1e9, "float64": 5e8}


@pytest.fixture(scope="module")
def llama():
    return bm.ModelShape.from_config(tiny_config("llama"))  # d 32, d_ff 64, 2 layers, vocab 600, 4 heads, 2 kv


def test_model_shape_from_tiny_configs(llama):
    assert (llama.hidden, llama.intermediate, llama.n_layers, llama.vocab) == (32, 64, 2, 600)
    assert (llama.q_dim, llama.kv_dim, llama.mlp_matrices) == (32, 16, 3)
    # Q, O: 32·32 each; K, V: 32·16 each; gate, up, down: 32·64 each
    assert llama.layer_params == 2 * 1024 + 2 * 512 + 3 * 2048 == 9216
    gpt2 = bm.ModelShape.from_config(tiny_config("gpt2"))
    assert (gpt2.kv_dim, gpt2.mlp_matrices) == (32, 2)
    assert gpt2.layer_params == 4 * 1024 + 2 * 2048 == 8192


def test_statistics_flops_by_hand(llama):
    forward, moments = bm.statistics_flops(llama, [1, 0], 100)
    assert forward == 2 * 9216 * 2 * 100  # blocks 0 and 1 (the deepest), 100 tokens
    assert moments == 2 * 64 * 64 * 100 * 2  # kᵀk for two layers


def _prompts(subject_cols, target_cols):
    n = len(subject_cols)
    return EditPrompts(torch.zeros(n, 9, dtype=torch.long), torch.ones(n, 9, dtype=torch.long),
                       torch.tensor(subject_cols), torch.tensor(target_cols), torch.tensor([5, 6]))


def test_residual_flops_by_hand(llama):
    # two rewriting rows (subject at 1 and 3, targets at 4–5 and 6–7) and the essence row (subject at 2)
    suffix, scored = bm.suffix_positions(_prompts([1, 3, 2], [[4, 5], [6, 7]]))
    assert (suffix, scored) == (5 + 5 + 1, 4 + 1)
    # z = 0 in a 2-layer model: one block after z. 20 real tokens, 3 iterations: 3 forwards, 2 backwards.
    step = 2 * 9216 * 1 * 11 + 2 * 32 * 600 * 5
    clean = 2 * 9216 * 2 * 20
    assert bm.residual_flops(llama, 0, [(20, suffix, scored, 3)]) == clean + 5 * step == 2_711_040
    assert bm.residual_flops(llama, 1, [(20, suffix, scored, 1)]) == clean + 2 * 32 * 600 * 5  # z = last block


def test_solve_flops_by_hand():
    # Cholesky 64³/3, K Kᵀ 2·64²·4, two triangular solves 2·64²·4, R Xᵀ 2·32·64·4
    assert bm.solve_flops(32, 64, 4) == 87_381 + 32_768 + 32_768 + 16_384


def test_evaluation_flops_count_shared_positions_once(llama):
    items = [([1, 2, 3], [4, 5]), ([1, 2, 3], [6]), ([1, 2, 7], [4])]
    # inputs: 1, 1-2, 1-2-3, 1-2-3-4, 1-2-7; scored: after 1-2-3 (twice), 1-2-3-4, 1-2-7
    assert bm.distinct_positions(items) == (5, 3)
    assert bm.evaluation_flops(llama, 5, 3) == 2 * 9216 * 2 * 5 + 2 * 32 * 600 * 3


def test_generation_flops_by_hand(llama):
    # 2 rows, 10 real prompt tokens in all, 4 new tokens each: 10 + 2·3 positions fed, 8 through the head
    assert bm.generation_flops(llama, 10, 2, 4) == 2 * 9216 * 2 * 16 + 2 * 32 * 600 * 8


def test_matmul_rate_is_positive():
    assert bm.matmul_rate(((16, 32, 8), (8, 8, 8)), repeats=2) > 0
    assert bm.matmul_rate(((8, 8, 8),), torch.float64, repeats=1) > 0


def test_peak_memory_sees_an_allocation():
    with bm.PeakMemory() as mem:
        block = torch.ones(16 * 2**20 // 4)  # 16 MiB, touched
        del block
    assert mem.method and mem.peak >= mem.growth >= 0
    if mem.method == "VmHWM":  # exact on Linux; the sampling fallback may miss a short spike
        assert mem.growth >= 8 * 2**20


def _rows():
    mem = SimpleNamespace(growth=3 * 2**20, peak=500 * 2**20, method="VmHWM")
    return [
        bm.phase_row("statistics (layers 3-4, float32)", 2.5, 8000, "tokens/s", cpu_s=4.9, flops=4e10,
                     rates=RATES, memory=mem),
        bm.phase_row("memit residuals (straightforward)", 40.0, 2, "s/edit", flops=2e10, rates=RATES, memory=mem,
                     method="memit", mode="straightforward"),
        bm.phase_row("memit residuals (fast)", 10.0, 2, "s/edit", flops=2e10, rates=RATES, memory=mem,
                     method="memit", mode="fast", speedup=4.0, check="max rel diff 1e-06, same iterations"),
        bm.phase_row("memit solve", 0.2, 2, "s/layer", flops=0, flops_fp64=1e9, rates=RATES),
    ]


def test_phase_rows_floor_ratio_and_throughput():
    stats, _, fast, solve = _rows()
    assert stats["throughput"] == 3200 and stats["floor_s"] == 40 and stats["ratio"] == pytest.approx(0.0625)
    assert stats["peak_mb"] == 3 and stats["peak_rss_mb"] == 500
    assert fast["throughput"] == 5 and fast["ratio"] == 0.5
    assert solve["floor_s"] == 2 and solve["throughput"] == 0.1 and solve["gflop_fp64"] == 1  # at the fp64 rate


def test_csv_and_markdown_round_trip(tmp_path):
    machine = {"machine": "test cpu, 2 CPUs", "host": "box 1", "device": "cpu", "threads": 2}
    recorder = bm.Recorder(tmp_path / "benchmarks", machine, run_id="20250101-000000", n_edits=2)
    rows = _rows()
    recorder.add(*rows[:2])
    recorder.add(*rows[2:])
    run_file, latest = recorder.paths
    assert run_file.name == "20250101-000000_box-1-cpu.csv" and latest.name == "latest.csv"
    back = bm.read_csv(latest)
    assert back == bm.read_csv(run_file) and len(back) == 4
    assert all(r["machine"] == "test cpu, 2 CPUs" and r["n_edits"] == "2" for r in back)
    table = bm.markdown_table(back)
    assert table == bm.markdown_table(recorder.rows)
    lines = table.splitlines()
    assert lines[0] == "| " + " | ".join(bm.MARKDOWN_HEADER) + " |" and len(lines) == 6
    assert "| memit residuals (fast) | 10.0 | 5.00 | s/edit | 20.0 | 0.500× | 3.00 | 4.00× (max rel diff" in table


def _evaluation(flip: bool = False, accuracy: float = 50.0):
    rows = [{"case_id": 0, "rewrite_prompts_correct": [True, False], "neighborhood_prompts_correct": [True]},
            {"case_id": 1, "rewrite_prompts_correct": [False], "neighborhood_prompts_correct": [True, not flip]}]
    return rows, {"rewrite_acc": accuracy, "paraphrase_acc": None, "neighborhood_acc": 100.0}


def test_comparisons_flag_mismatches():
    assert bm.compare_evaluations(_evaluation(), _evaluation()) == []
    flipped = bm.compare_evaluations(_evaluation(), _evaluation(flip=True))
    assert len(flipped) == 1 and "record 1: neighborhood_prompts_correct" in flipped[0]
    assert "summary rewrite_acc" in bm.compare_evaluations(_evaluation(), _evaluation(accuracy=60.0))[0]
    assert bm.compare_texts(["a", "b"], ["a", "b"]) == [] and len(bm.compare_texts(["a", "b"], ["a", "c"])) == 1

    ref = SimpleNamespace(residuals=torch.tensor([[1.0, 0.0], [0.0, 2.0]]), iterations=[3, 4])
    assert bm.compare_residuals(ref, SimpleNamespace(residuals=ref.residuals * (1 + 1e-7), iterations=[3, 4]))[0]
    ok, text = bm.compare_residuals(ref, SimpleNamespace(residuals=ref.residuals + 0.1, iterations=[3, 4]))
    assert not ok and text.startswith("MISMATCH")
    ok, text = bm.compare_residuals(ref, SimpleNamespace(residuals=ref.residuals, iterations=[3, 5]))
    assert not ok and "iterations" in text


def test_select_phases_adds_what_a_phase_needs():
    assert bm.select_phases(["solve"]) == ["corpus", "stats", "solve"]
    assert bm.select_phases(["eval", "residuals"]) == ["residuals", "eval"]
    with pytest.raises(ValueError, match="unknown phases"):
        bm.select_phases(["evaluation"])


@pytest.fixture(scope="module")
def ctx():
    tok = tiny_tokenizer("gpt2")
    model = tiny_model("llama", tok, n_layers=3, seed=1)
    with torch.no_grad():  # larger weights than the random init, so the outputs depend on the inputs
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(6.0)
    shape = bm.ModelShape.from_config(model.config)
    return bm.Context(model, tok, shape, RATES, "cpu", False, 0, RECORDS)


def test_evaluation_and_generation_rows_on_a_tiny_model(ctx):
    rows = bm.evaluation_rows(ctx, ["The river flows. ", "What is it. "], batch_size=4)
    assert [r["mode"] for r in rows] == ["straightforward", "fast"]
    assert rows[1]["check"].startswith("identical") and rows[0]["gflop"] == rows[1]["gflop"] > 0
    gen = bm.generation_rows(ctx, max_new_tokens=3, batch_size=2)
    assert [r["phase"] for r in gen] == ["fluency generation (no cache)", "fluency generation (KV cache)"]
    assert gen[1]["check"] == "identical" and gen[1]["amount"] == 3 * 3  # three prompts, three new tokens
    assert "generate" not in vars(ctx.model)  # the counting wrapper is gone


def test_edit_rows_instrument_run_edit_and_restore(ctx):
    hp = {"layers": [0, 1], "v_lr": 0.5, "v_num_grad_steps": 3, "kl_factor": 0.0625, "clamp_norm_factor": 4.0,
          "v_weight_decay": 0.5, "early_stop": 0.01, "mom2_update_weight": 10.0,
          "templates": {"seeds": ["The", "I"], "max_new_tokens": 3}}
    moments = {layer: torch.eye(ctx.shape.intermediate, dtype=torch.float64) for layer in (0, 1)}
    before = {name: p.detach().clone() for name, p in ctx.model.named_parameters()}
    original = update_module.closed_form_delta
    rows = bm.edit_rows(ctx, "memit", hp, moments, with_residuals=True)
    assert [r["phase"] for r in rows] == ["memit residuals (straightforward)", "memit residuals (fast)",
                                          "memit keys (update)", "memit solve"]
    assert not rows[1]["check"].startswith("MISMATCH"), rows[1]["check"]
    assert rows[0]["gflop"] > 0 and rows[3]["gflop_fp64"] > 0 and rows[3]["peak_method"]
    assert update_module.closed_form_delta is original
    assert all(torch.equal(p, before[name]) for name, p in ctx.model.named_parameters())  # weights restored


def test_recorder_refloors_with_better_rates(tmp_path):
    recorder = bm.Recorder(tmp_path, {"host": "h", "device": "cpu"}, run_id="r")
    recorder.add(*_rows())
    recorder.set_rates({"float32": 2e9, "float64": 1e9})
    stats, _, _, solve = bm.read_csv(tmp_path / "latest.csv")
    assert float(stats["floor_s"]) == 20 and float(solve["floor_s"]) == 1
    assert float(stats["matmul_gflops_fp32"]) == 2 and float(solve["ratio"]) == 0.2


def test_run_on_a_tiny_model_records_a_failed_phase_and_goes_on(tmp_path, monkeypatch):
    from massedit.testing import save_tiny_model

    model_dir = save_tiny_model(tmp_path / "model", n_layers=3)
    monkeypatch.setattr(bm, "measure_rates", lambda shape, device="cpu": dict(RATES))  # no 2048³ products
    hp = {"layers": [1, 2], "v_lr": 0.5, "v_num_grad_steps": 2, "kl_factor": 0.0625, "clamp_norm_factor": 4.0,
          "v_weight_decay": 0.5, "early_stop": 0.01, "mom2_update_weight": 10.0,
          "templates": {"seeds": ["The"], "max_new_tokens": 2}}
    hparams = {"memit": hp, "broken": hp}  # an unknown method: its phase fails, the others run
    rows = bm.run(str(model_dir), hparams, n_edits=1, phases=["residuals", "eval", "generation"],
                  evaluation={"n_prefixes": 2, "prefix_len": 2, "fluency_max_new_tokens": 2},
                  out_dir=str(tmp_path / "out"), run_id="t")
    phases = [r["phase"] for r in rows]
    assert phases == ["load model", "memit residuals (straightforward)", "memit residuals (fast)",
                      "broken residuals", "evaluation scoring (straightforward)", "evaluation scoring (fast)",
                      "fluency generation (no cache)", "fluency generation (KV cache)"]
    assert [r["phase"] for r in rows if bm.problem(r)] == ["broken residuals"]
    assert rows[3]["check"].startswith("FAILED: ValueError: unknown method 'broken'")
    assert len(bm.read_csv(tmp_path / "out" / "latest.csv")) == len(rows)
