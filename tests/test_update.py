"""The closed-form update and the multi-layer residual spreading."""
import torch

from massedit.architectures import arch_for
from massedit.editing.keys import compute_keys
from massedit.editing.update import apply_deltas, apply_multilayer_update, closed_form_delta, spread
from massedit.testing import tiny_model, tiny_tokenizer


def test_closed_form_matches_least_squares():
    """ΔW minimises Σ‖ΔW k_i − r_i‖² + λ tr(ΔW C ΔWᵀ): with C = LLᵀ this is ordinary least squares on
    the stacked system [Kᵀ; √λ Lᵀ] ΔWᵀ = [Rᵀ; 0]."""
    g = torch.Generator().manual_seed(0)
    d_ff, d, n, lam = 12, 5, 7, 3.0
    X = torch.randn(40, d_ff, generator=g, dtype=torch.float64)
    C = X.T @ X / 40
    K = torch.randn(d_ff, n, generator=g, dtype=torch.float64)
    R = torch.randn(d, n, generator=g, dtype=torch.float64)
    L = torch.linalg.cholesky(C)
    design = torch.cat([K.T, lam**0.5 * L.T])
    rhs = torch.cat([R.T, torch.zeros(d_ff, d, dtype=torch.float64)])
    expected = torch.linalg.lstsq(design, rhs).solution.T
    got = closed_form_delta(C, K, R, lam)
    assert torch.allclose(got, expected, atol=1e-10)


def test_closed_form_rejects_indefinite_system():
    C = -torch.eye(3, dtype=torch.float64)
    K = torch.zeros(3, 1, dtype=torch.float64)
    R = torch.zeros(2, 1, dtype=torch.float64)
    try:
        closed_form_delta(C, K, R, 1.0)
    except ValueError as err:
        assert "positive definite" in str(err)
    else:
        raise AssertionError("an indefinite system must be rejected")


def test_spread_rules():
    r = torch.full((2, 3), 6.0)
    assert torch.equal(spread(r, 3), torch.full((2, 3), 2.0))
    assert torch.allclose(spread(r, 4, "sqrt"), torch.full((2, 3), 3.0))


def test_two_layer_spreading_reaches_targets_and_is_reversible():
    """With the bare prompt as the only template and a negligible λ, the update reproduces Z exactly at the
    z-layer: layer 0 takes half of the residual, layer 1 whatever remains after layer 0 was applied."""
    tok = tiny_tokenizer("gpt2")
    model = tiny_model("llama", tok, n_layers=3, hidden=32, intermediate=64, seed=1)
    arch = arch_for(model)
    records = [
        {"prompt": "The capital of {} is", "subject": "France"},
        {"prompt": "{} is located in", "subject": "Berlin"},
        {"prompt": "The language of {} is", "subject": "Spain"},
    ]
    groups = [["{}"]]
    before = compute_keys(model, tok, arch, records, groups, [0], False, output_layer=1).outputs
    g = torch.Generator().manual_seed(3)
    Z = before + 0.5 * torch.randn(before.shape, generator=g)
    moments = {layer: torch.eye(64, dtype=torch.float64) for layer in (0, 1)}
    original = {l: model.model.layers[l].mlp.down_proj.weight.clone() for l in (0, 1)}
    deltas, _ = apply_multilayer_update(model, tok, arch, records, groups, [0, 1], 1, Z, moments,
                                        [1e-6, 1e-6], add_bos=False)
    after = compute_keys(model, tok, arch, records, groups, [0], False, output_layer=1).outputs
    assert torch.allclose(after, Z, atol=1e-3), (after - Z).abs().max()
    # layer 0 was given half of the residual, so neither layer alone carries it
    assert deltas[0].norm() > 0 and deltas[1].norm() > 0
    apply_deltas(model, arch, deltas, sign=-1.0)
    for layer in (0, 1):
        assert torch.allclose(model.model.layers[layer].mlp.down_proj.weight, original[layer], atol=1e-6)


def test_blocked_closed_form_equals_one_block_and_least_squares():
    """Accumulating KKᵀ and R(A⁻¹K)ᵀ over blocks of edits gives the one-block answer, which is the ridge
    least-squares solution min Σ‖ΔW k_i − r_i‖² + λ tr(ΔW C ΔWᵀ)."""
    from massedit.editing.update import closed_form_delta

    g = torch.Generator().manual_seed(3)
    d_ff, d, n, lam = 12, 5, 29, 0.7
    X = torch.randn(d_ff, 40, generator=g, dtype=torch.float64)
    C = X @ X.T / 40
    K = torch.randn(d_ff, n, generator=g).float()
    R = torch.randn(d, n, generator=g).float()
    whole = closed_form_delta(C, K, R, lam, block=n)
    for block in (1, 4, 7):
        assert torch.allclose(closed_form_delta(C, K, R, lam, block=block), whole, rtol=1e-10, atol=1e-12)
    # Normal equations of the ridge problem, solved independently: ΔW (λC + KKᵀ) = R Kᵀ.
    Kd, Rd = K.double(), R.double()
    expected = torch.linalg.solve((lam * C + Kd @ Kd.T).T, (Rd @ Kd.T).T).T
    assert torch.allclose(whole, expected, rtol=1e-8, atol=1e-10)
