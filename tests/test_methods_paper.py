"""The baselines' guarantees: batched residuals equal the one-at-a-time path, PMET's square-root spreading,
AlphaEdit's null-space projection, ROME's rank-one closed form and FT's L∞ constraint."""
import math

import pytest
import torch

from massedit.architectures import arch_for, down_proj_matrix
from massedit.editing import alphaedit, batched, ft, memit, pmet, rome
from massedit.editing.batch_forward import BatchForward, stack_prompts
from massedit.editing import update as update_module
from massedit.editing.keys import KeysAndOutputs, compute_keys
from massedit.editing.residual import build_edit_prompts
from massedit.editing.run import compute_residuals, method_entry, method_spec, run_edit
from massedit.editing.sharing import residual_owner
from massedit.editing.update import apply_multilayer_update
from massedit.testing import tiny_model, tiny_tokenizer

RECORDS = [
    {"prompt": "The official language of {} is", "subject": "New Delhi", "target_new": "Buenos Aires"},
    {"prompt": "{} is located in", "subject": "Berlin", "target_new": "Japan"},
    {"prompt": "The capital of {} is", "subject": "France", "target_new": "Mexico City"},
    {"prompt": "{} plays", "subject": "Lionel Messi", "target_new": "tennis"},
    {"prompt": "{} speaks", "subject": "Marie Curie", "target_new": "Polish"},
]
GROUPS = [["{}"], ["The river flows. {}", "What is {}"]]
HP = {"v_lr": 0.5, "v_num_grad_steps": 10, "kl_factor": 0.0625, "clamp_norm_factor": 4.0, "v_weight_decay": 0.5}


def _model(arch: str = "qwen2", tok=None, n_layers: int = 4):
    # Random init is so small that δ barely moves the outputs; larger weights make the losses move.
    model = tiny_model(arch, tok, n_layers=n_layers, seed=1)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(6.0)
    return model


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


# ---------------------------------------------------------------------------------------- batched residuals


def test_row_adam_equals_one_torch_adam_per_row():
    """Rows stepped at different times (and some stopped for good) follow torch.optim.Adam exactly."""
    g = torch.Generator().manual_seed(0)
    n, d, lr = 4, 6, 0.3
    start = torch.randn(n, d, generator=g)
    grads = torch.randn(8, n, d, generator=g)
    moves = torch.rand(8, n, generator=g) < 0.7  # which rows take a step at each time
    moves[5:, 2] = False  # row 2 stops after time 4: it must not move again (no momentum drift)
    params = [start[i].clone().requires_grad_(True) for i in range(n)]
    optimisers = [torch.optim.Adam([p], lr=lr) for p in params]
    batch = start.clone()
    adam = batched.RowAdam((n, d), lr)
    for t in range(8):
        rows = moves[t].nonzero().squeeze(1)
        for i in rows.tolist():
            params[i].grad = grads[t, i].clone()
            optimisers[i].step()
        adam.step(batch, grads[t, rows], rows)
        expected = torch.stack([p.detach() for p in params])
        assert torch.allclose(batch, expected, rtol=0, atol=1e-6), (t, (batch - expected).abs().max())
    assert adam.steps.tolist() == moves.sum(dim=0).tolist()
    assert not torch.equal(batch[2], start[2])


@pytest.mark.parametrize("arch,mode", [("qwen2", "fast"), ("qwen2", "full"), ("gpt2", "fast")])
def test_batched_memit_equals_one_at_a_time(arch, mode):
    """MEMIT residuals of five edits of different widths and target lengths, optimised together, equal the
    one-at-a-time ``memit.optimise_residual`` (torch's Adam), including edits that stop at different
    iterations and edits that never stop. GPT-2 has no fast path: both fall back to the full forward."""
    tok = tiny_tokenizer("llama")
    model = _model(arch, tok)
    prompts = [build_edit_prompts(tok, GROUPS, r, True) for r in RECORDS]
    arch = arch_for(model)
    assert len({p.input_ids.shape[1] for p in prompts}) >= 3 and len({p.target_ids.numel() for p in prompts}) >= 2
    hp = {**HP, "early_stop": 6.5, "forward": mode}
    one = [memit.optimise_residual(model, arch, p, 2, hp) for p in prompts]
    block = batched.optimise_block(model, arch, prompts, 2, batched.MEMIT, hp)
    iterations = [r.iterations for r in one]
    assert [r.iterations for r in block] == iterations
    if arch == "qwen2":  # the case worth testing: edits stop at different iterations, others run to the end
        assert len(set(iterations)) >= 3 and max(iterations) == 10 and min(iterations) < 10
    for a, b in zip(one, block):
        if a.iterations == 1:  # stopped in the first pass: δ never moved
            assert a.delta.norm() == b.delta.norm() == 0
        else:
            assert _rel(b.delta, a.delta) <= 1e-4, _rel(b.delta, a.delta)
        assert torch.allclose(b.h, a.h, rtol=1e-5, atol=1e-6)
        assert abs(b.losses["total"] - a.losses["total"]) <= 1e-4 * abs(a.losses["total"])


@pytest.mark.parametrize("kl_stop", [0.01, -1.0])
def test_batched_pmet_equals_one_at_a_time(kl_stop):
    """PMET's two vectors per edit, its adaptive NLL weight and KL stop, batched against the reference loop.
    The last edit's target is what the model already predicts: with ``kl_stop`` 0.01 it stops at once on
    the KL rule; without, it continues with the NLL weight cut to 0.1."""
    tok = tiny_tokenizer("llama")
    model = _model("qwen2", tok)
    arch = arch_for(model)
    ids = torch.tensor([[tok.bos_token_id] + tok("Marie Curie speaks", add_special_tokens=False)["input_ids"]])
    greedy = tok.decode(model(ids).logits[0, -1].argmax()).strip()
    records = RECORDS[:4] + [{**RECORDS[4], "target_new": greedy}]
    prompts = [build_edit_prompts(tok, [["{}"]], r, True) for r in records]
    assert prompts[-1].target_ids.numel() == 1
    hp = {**HP, "early_stop": 4.0, "nll_loss_factor": 1.0, "kl_stop": kl_stop, "forward": "fast"}
    one = [pmet.optimise_residual(model, arch, p, 2, hp) for p in prompts]
    block = batched.optimise_block(model, arch, prompts, 2, batched.PMET, hp)
    assert [r.iterations for r in block] == [r.iterations for r in one]
    assert one[-1].iterations == (1 if kl_stop > 0 else 2) and one[0].iterations == 10
    for a, b in zip(one[:-1], block[:-1]):
        assert _rel(b.delta, a.delta) <= 1e-4, _rel(b.delta, a.delta)
        assert _rel(b.h, a.h) <= 1e-5
    # δ_mlp is 0 at a stop in the first pass; after one update it has moved in both paths alike
    assert (one[-1].delta.norm() == 0) == (kl_stop > 0)
    assert torch.allclose(block[-1].delta, one[-1].delta, rtol=1e-4, atol=1e-7)


def test_pmet_residual_is_added_inside_the_block():
    """δ_attn reaches the MLP input, so PMET's forward differs from adding the sum at the block output, and
    the fast and full forwards of the batched path agree."""
    tok = tiny_tokenizer("llama")
    model = _model("llama", tok)
    arch = arch_for(model)
    prompts = [build_edit_prompts(tok, GROUPS, r, True) for r in RECORDS[:3]]
    hp = {**HP, "v_num_grad_steps": 4, "early_stop": 0.0, "nll_loss_factor": 1.0}
    runs = {mode: batched.optimise_block(model, arch, prompts, 1, batched.PMET, {**hp, "forward": mode})
            for mode in ("fast", "full")}
    for a, b in zip(runs["full"], runs["fast"]):
        assert a.iterations == b.iterations == 4
        assert _rel(b.delta, a.delta) <= 1e-4 and _rel(b.h, a.h) <= 1e-5
    # The same vector added at the attention output differs from adding it at the block output; at the MLP
    # output of a pre-norm block it is the same thing (ROME's site).
    batch = stack_prompts(prompts)
    delta = torch.randn(model.config.hidden_size, generator=torch.Generator().manual_seed(0))
    logp = {site: BatchForward(model, arch, batch, 1, (site,), "full")({site: lambda c: delta}).target_logp
            for site in ("block", "attn", "mlp")}
    assert (logp["attn"] - logp["block"]).abs().max() > 1e-3
    assert torch.allclose(logp["mlp"], logp["block"], atol=1e-5)
    # h is the MLP output, not the block output
    block_out = compute_keys(model, tok, arch, RECORDS[:1], [["{}"]], [1], True, output_layer=1).outputs[0]
    mlp_out = compute_keys(model, tok, arch, RECORDS[:1], [["{}"]], [1], True, output_layer=1,
                           output_module="mlp_down").outputs[0]
    assert torch.allclose(runs["full"][0].h, mlp_out, atol=1e-5) and not torch.allclose(mlp_out, block_out, atol=1e-3)


def test_compute_residuals_blocks_keep_record_order():
    """``batch_edits`` groups edits by width; every residual must come back at its record's index."""
    tok = tiny_tokenizer("llama")
    model = _model("llama", tok)
    hp = {**HP, "layers": [1, 2], "v_num_grad_steps": 3, "early_stop": 0.01,
          "templates": {"seeds": ["The", "I"], "max_new_tokens": 3}}
    one = compute_residuals(model, tok, RECORDS, "memit", {**hp, "batch_edits": 1}, 0, True, progress=False)
    two = compute_residuals(model, tok, RECORDS, "memit", {**hp, "batch_edits": 2}, 0, True, progress=False)
    assert one.templates == two.templates and one.iterations == two.iterations
    rel = (two.residuals - one.residuals).norm(dim=1) / one.residuals.norm(dim=1)
    assert rel.max() <= 1e-4, rel
    assert torch.allclose(two.h, one.h, atol=1e-5)


# ---------------------------------------------------------------------------------------- PMET update


def test_pmet_square_root_spreading_by_hand(monkeypatch):
    """Three layers whose updates add linearly to the z-layer output (a stand-in model): with orthonormal
    keys and λ → 0 each layer writes exactly R_j = (Z − H_j)/√(m − j). For a unit residual the shares are
    1/√3, (1 − 1/√3)/√2 and the rest; the linear rule would give 1/3 each."""
    d, d_ff = 3, 4
    K = torch.eye(d_ff, dtype=torch.float64)[:, :1]  # one edit, key e_0
    H0 = torch.zeros(1, d)
    Z = torch.tensor([[1.0, 0.0, 0.0]])
    written: dict[int, torch.Tensor] = {}

    def fake_keys(model, tok, arch, records, groups, layers, add_bos, output_layer=None, batch_size=64,
                  output_module="block"):
        assert output_module == "mlp_down"
        out = H0.double() + sum((dw @ K).T for dw in written.values()) if written else H0.double()
        return KeysAndOutputs({layers[0]: K.T.float()}, out.float())

    monkeypatch.setattr(update_module, "compute_keys", fake_keys)
    monkeypatch.setattr(update_module, "add_to_down_proj",
                        lambda model, arch, layer, dw: written.__setitem__(layer, dw))
    moments = {layer: torch.eye(d_ff, dtype=torch.float64) for layer in (0, 1, 2)}
    _, spreading = method_entry("pmet")
    deltas, _ = apply_multilayer_update(None, None, None, [{}], [["{}"]], [0, 1, 2], 2, Z, moments, [1e-9] * 3,
                                        False, spreading, output=method_spec("pmet").output)
    shares = [float(deltas[layer][0, 0]) for layer in (0, 1, 2)]
    first = 1 / math.sqrt(3)
    second = (1 - first) / math.sqrt(2)
    assert shares == pytest.approx([first, second, 1 - first - second], abs=1e-6)
    assert shares[0] == pytest.approx(0.57735, abs=1e-5) and shares[1] == pytest.approx(0.29886, abs=1e-5)


def test_pmet_update_reaches_the_mlp_targets():
    """After PMET's update with a negligible λ, the z-layer MLP outputs at the bare prompts equal
    z_mlp = a_mlp + δ_mlp: the last layer takes whatever the earlier ones left."""
    tok = tiny_tokenizer("llama")
    model = _model("llama", tok)
    arch = arch_for(model)
    groups = [["{}"]]
    prompts = [build_edit_prompts(tok, groups, r, True) for r in RECORDS[:3]]
    hp = {**HP, "v_num_grad_steps": 5, "early_stop": 0.0, "nll_loss_factor": 1.0, "forward": "fast"}
    results = batched.optimise_block(model, arch, prompts, 2, batched.PMET, hp)
    Z = torch.stack([r.h + r.delta for r in results])
    assert (Z - torch.stack([r.h for r in results])).norm() > 0
    moments = {layer: torch.eye(64, dtype=torch.float64) for layer in (1, 2)}
    apply_multilayer_update(model, tok, arch, RECORDS[:3], groups, [1, 2], 2, Z, moments, [1e-6, 1e-6], True, "sqrt",
                            output="mlp_down")
    after = compute_keys(model, tok, arch, RECORDS[:3], groups, [2], True, output_layer=2,
                         output_module="mlp_down").outputs
    assert torch.allclose(after, Z, atol=1e-4), (after - Z).abs().max()


# ---------------------------------------------------------------------------------------- AlphaEdit


def _spectrum_moment(d_ff: int, big: int, seed: int = 0):
    """C = Q diag(λ) Qᵀ: ``big`` eigenvalues in [1, 3] (directions the statistics saw), the rest ≤ 1e-3."""
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(d_ff, d_ff, generator=g, dtype=torch.float64))
    values = torch.cat([1 + 2 * torch.rand(big, generator=g, dtype=torch.float64),
                        1e-3 * torch.rand(d_ff - big, generator=g, dtype=torch.float64)])
    return Q @ torch.diag(values) @ Q.T, Q[:, :big], Q[:, big:]


def test_null_space_projection_is_the_authors_projector():
    C, kept, free = _spectrum_moment(24, 15)
    P = alphaedit.null_space_projection(C, 2e-2)
    assert P.dtype == torch.float32
    assert torch.allclose(P, P.T, atol=1e-6)
    assert torch.allclose(P @ P, P, atol=1e-5)
    assert (P.double() @ kept).abs().max() < 1e-5  # the directions the statistics saw are annihilated
    assert torch.allclose(P.double() @ free, free, atol=1e-5)  # the null space passes unchanged
    assert alphaedit.projection_rank(P) == 9
    # the authors' formula: SVD of C in fp32, singular vectors with singular value below the threshold
    U, S, _ = torch.linalg.svd(C.float(), full_matrices=False)
    small = U[:, S < 2e-2]
    assert torch.allclose(P, small @ small.T, atol=1e-5)
    # the threshold is absolute: scaling C changes the rank
    assert alphaedit.projection_rank(alphaedit.null_space_projection(C * 1e-3, 2e-2)) == 24


def test_alphaedit_solve_matches_its_normal_equations():
    g = torch.Generator().manual_seed(1)
    C, _, _ = _spectrum_moment(12, 7)
    P = alphaedit.null_space_projection(C, 2e-2, torch.float64)
    K = torch.randn(12, 4, generator=g, dtype=torch.float64)
    R = torch.randn(5, 4, generator=g, dtype=torch.float64)
    acc = torch.randn(12, 12, generator=g, dtype=torch.float64)
    acc = acc @ acc.T
    for l2 in (1.0, 10.0):
        delta = alphaedit.alphaedit_delta(P, K, R, l2, accumulated=acc, dtype="float64")
        X = delta.T
        residual = (P @ (K @ K.T + acc) + l2 * torch.eye(12, dtype=torch.float64)) @ X - P @ K @ R.T
        assert residual.abs().max() < 1e-10
        assert torch.allclose(X, P @ X, atol=1e-10)  # ΔW lives in the null space: ΔW = ΔW P
    fp32 = alphaedit.alphaedit_delta(P, K, R, 1.0)
    assert _rel(fp32, alphaedit.alphaedit_delta(P, K, R, 1.0, dtype="float64")) < 1e-4


def test_alphaedit_edit_leaves_preserved_keys_unchanged():
    """After AlphaEdit's two-layer update, ΔW k = 0 for every key in the span of the directions the
    statistics saw, while the edits themselves still change the weights; precomputed projections give the
    same update as projections computed from the moments."""
    tok = tiny_tokenizer("llama")
    hp = {**HP, "layers": [1, 2], "v_num_grad_steps": 4, "early_stop": 0.05, "L2": 1.0, "nullspace_threshold": 2e-2,
          "clamp_norm_factor": 0.75, "templates": {"seeds": ["The", "I"], "max_new_tokens": 3}}
    C, kept, _ = _spectrum_moment(64, 40, seed=3)
    moments = {1: C, 2: C}
    results = {}
    for given in (None, {layer: alphaedit.null_space_projection(C, 2e-2) for layer in (1, 2)}):
        model = _model("llama", tok)
        arch = arch_for(model)
        before = {layer: down_proj_matrix(model, arch, layer).detach().clone() for layer in (1, 2)}
        result = run_edit(model, tok, RECORDS[:3], moments if given is None else {}, "alphaedit", hp, 0, True,
                          progress=False, projections=given)
        assert result.info["projection_rank"] == {1: 24, 2: 24}
        for layer in (1, 2):
            change = down_proj_matrix(model, arch, layer).detach() - before[layer]
            assert torch.allclose(change, result.deltas[layer], atol=1e-6)
            assert change.norm() > 1e-4
            preserved = kept @ torch.randn(40, 6, generator=torch.Generator().manual_seed(layer), dtype=torch.float64)
            assert (change.double() @ preserved).norm() <= 1e-4 * change.norm() * preserved.norm()
        results[given is None] = result.deltas
    for layer in (1, 2):
        assert _rel(results[False][layer], results[True][layer]) < 1e-5


def test_alphaedit_edit_from_memits_residuals_is_its_own():
    """AlphaEdit's residual step is MEMIT's: with equal residual settings, an AlphaEdit edit that reads MEMIT's
    residuals gives the deltas of one that optimises its own (what lets the workflow share the file)."""
    tok = tiny_tokenizer("llama")
    hp = {**HP, "layers": [1, 2], "v_num_grad_steps": 4, "early_stop": 0.05, "L2": 1.0, "nullspace_threshold": 2e-2,
          "clamp_norm_factor": 0.75, "templates": {"seeds": ["The", "I"], "max_new_tokens": 3}}
    memit_hp = {k: v for k, v in hp.items() if k not in ("L2", "nullspace_threshold")}
    assert residual_owner("alphaedit", {"alphaedit": hp, "memit": memit_hp}.get) == "memit"
    C, _, _ = _spectrum_moment(64, 40, seed=3)
    memit_residuals = compute_residuals(_model("llama", tok), tok, RECORDS[:3], "memit", memit_hp, 0, True,
                                        progress=False)
    own = run_edit(_model("llama", tok), tok, RECORDS[:3], {1: C, 2: C}, "alphaedit", hp, 0, True, progress=False)
    shared = run_edit(_model("llama", tok), tok, RECORDS[:3], {1: C, 2: C}, "alphaedit", hp, 0, True,
                      progress=False, residuals=memit_residuals)
    for layer in (1, 2):
        assert own.deltas[layer].norm() > 1e-4
        assert _rel(shared.deltas[layer], own.deltas[layer]) < 1e-5


def test_residual_step_table_matches_the_methods():
    """sharing.RESIDUAL_STEP (read while the DAG is built, without torch) names methods whose residual phase
    is the same code: the same step, target module and template generator."""
    from massedit.editing.run import METHODS
    from massedit.editing.sharing import RESIDUAL_STEP, SHAREABLE_RESIDUALS

    assert set(RESIDUAL_STEP) == set(SHAREABLE_RESIDUALS)
    for method, step in RESIDUAL_STEP.items():
        a, b = METHODS[method], METHODS[step]
        assert (a.step, a.output, a.templates) == (b.step, b.output, b.templates), method


def test_residual_owner_needs_equal_residual_settings():
    memit_hp = {"layers": [3, 4], "v_lr": 0.5, "mom2_update_weight": 15000}
    same = {"layers": [2, 4], "v_lr": 0.5, "L2": 10.0, "nullspace_threshold": 0.02}   # update-only keys differ
    other = {"layers": [3, 4], "v_lr": 0.1}
    assert residual_owner("alphaedit", {"alphaedit": same, "memit": memit_hp}.get) == "memit"
    assert residual_owner("alphaedit", {"alphaedit": other, "memit": memit_hp}.get) == "alphaedit"
    assert residual_owner("alphaedit", {"alphaedit": {**same, "layers": [5]}, "memit": memit_hp}.get) == "alphaedit"
    assert residual_owner("eamet", {"eamet": memit_hp, "memit": memit_hp}.get) == "eamet"
    assert residual_owner("memit", {"memit": memit_hp}.get) == "memit"


# ---------------------------------------------------------------------------------------- ROME


def test_rome_closed_form_is_rank_one_and_maps_the_key():
    g = torch.Generator().manual_seed(2)
    d, d_ff = 6, 10
    X = torch.randn(50, d_ff, generator=g, dtype=torch.float64)
    C = X.T @ X / 50
    W = torch.randn(d, d_ff, generator=g, dtype=torch.float64)
    k_avg, k_bare = torch.randn(2, d_ff, generator=g, dtype=torch.float64)
    v = torch.randn(d, generator=g, dtype=torch.float64)
    for map_key in (None, k_bare):
        delta = rome.rome_delta(C, k_avg, v, W, map_key=map_key)
        k_star = k_avg if map_key is None else map_key
        assert torch.linalg.matrix_rank(delta).item() == 1
        assert torch.allclose((W + delta) @ k_star, v, atol=1e-10)
    # with k̄ = k*, the smallest change in tr(ΔW C ΔWᵀ) that maps k* to v*: adding any N with N k* = 0 costs more
    delta = rome.rome_delta(C, k_avg, v, W)
    cost = torch.trace(delta @ C @ delta.T)
    for _ in range(5):
        N = torch.randn(d, d_ff, generator=g, dtype=torch.float64)
        N = N - torch.outer(N @ k_avg, k_avg) / (k_avg @ k_avg)
        assert torch.allclose((W + delta + N) @ k_avg, v, atol=1e-10)
        assert torch.trace((delta + N) @ C @ (delta + N).T) > cost


def test_rome_sequential_edits_on_a_model():
    """Each edit adds a rank-one ΔW that makes the layer map the edit's bare-prompt key to v* = a + δ; the
    last edit holds exactly, and the summed update has rank (at most) the number of edits."""
    tok = tiny_tokenizer("llama")
    model = _model("llama", tok)
    arch = arch_for(model)
    g = torch.Generator().manual_seed(0)
    X = torch.randn(400, 64, generator=g, dtype=torch.float64)
    C = X.T @ X / 400
    hp = {**HP, "layers": [1], "v_num_grad_steps": 4, "early_stop": 0.05, "templates": {"lengths": [[3, 2], [4, 2]]}}
    before = down_proj_matrix(model, arch, 1).detach().clone()
    result = run_edit(model, tok, RECORDS[:3], {1: C}, "rome", hp, 0, True, progress=False)
    assert len(result.templates) == 1 and len(result.templates[0]) == 5  # one group of 1 + 2 + 2: uniform key average
    change = down_proj_matrix(model, arch, 1).detach() - before
    assert torch.allclose(change, result.deltas[1], atol=1e-6)
    singular = torch.linalg.svdvals(result.deltas[1].double())
    assert singular[2] > 1e-3 * singular[0] and singular[3] < 1e-5 * singular[0], singular[:5]  # rank 3
    k_bare = compute_keys(model, tok, arch, RECORDS[2:3], [["{}"]], [1], True).keys[1][0]
    value = model.model.layers[1].mlp.down_proj(k_bare)
    target = result.h[2] + result.residuals[2]
    assert result.residuals[2].norm() > 0
    assert torch.allclose(value, target, atol=1e-4), (value - target).abs().max()


# ---------------------------------------------------------------------------------------- FT


@pytest.mark.parametrize("objective", ["last_token", "teacher_forcing"])
def test_ft_changes_only_the_chosen_layer_within_the_bound(objective):
    tok = tiny_tokenizer("llama")
    model = _model("llama", tok)
    arch = arch_for(model)
    state = {name: p.detach().clone() for name, p in model.named_parameters()}
    eps = 1e-3
    hp = {"layers": [1], "lr": 5e-3, "num_steps": 3, "norm_constraint": eps, "batch_size": 2, "objective": objective}
    out = ft.run(model, tok, RECORDS, hp, True, progress=False)
    changed = [name for name, p in model.named_parameters() if not torch.equal(p, state[name])]
    assert changed == ["model.layers.1.mlp.down_proj.weight"]
    delta = out.deltas[1]
    assert delta.abs().max() <= eps * (1 + 1e-5)
    assert delta.abs().max() >= 0.99 * eps  # lr 5e-3 > eps: the constraint binds
    assert out.epochs == 3 and out.epoch_losses[-1] < out.epoch_losses[0]
    assert all(p.requires_grad for p in model.parameters())  # flags restored


def test_registry():
    assert method_entry("pmet")[1] == "sqrt" and method_spec("pmet").output == "mlp_down"
    assert method_entry("alphaedit")[1] == "linear" and method_spec("alphaedit").update == "alphaedit"
    assert method_spec("rome").update == "rome" and method_entry("ft") == (None, "none")
    assert method_spec("eamet").block_step is None  # EAMET's residuals depend on the earlier ones
    for name in ("memit", "pmet", "alphaedit", "rome"):
        assert method_spec(name).block_step is not None
