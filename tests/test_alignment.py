"""EAMET's loss terms against hand computations (method.md §2.4, §3.3)."""
import math

import torch

from massedit.editing.alignment import kl_alignment, residual_cosines, topm_mse_alignment
from massedit.editing.residual import clamp_norm_, essence_kl, nll_loss


def _softmax(xs):
    exps = [math.exp(x) for x in xs]
    return [e / sum(exps) for e in exps]


def test_residual_cosines_safe_at_zero():
    previous = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    u = residual_cosines(torch.tensor([2.0, 0.0]), previous, "zero")
    assert torch.allclose(u, torch.tensor([1.0, 1 / math.sqrt(2)]))
    zero = torch.zeros(2, requires_grad=True)
    u0 = residual_cosines(zero, previous, "zero")
    assert torch.equal(u0, torch.zeros(2))
    # the clean choice: no direction at zero, no gradient (the authors' eps-guarded cosine pushes with 1/eps,
    # tests/test_eamet_switches.py)
    assert not u0.requires_grad
    # away from zero the gradient is the usual one, orthogonal to δ, for both choices
    for choice in ("zero", "code"):
        d = torch.tensor([0.0, 3.0], requires_grad=True)
        residual_cosines(d, torch.tensor([[1.0, 0.0]]), choice).sum().backward()
        assert torch.allclose(d.grad, torch.tensor([1 / 3, 0.0]))
    d = torch.tensor([0.0, 3.0], requires_grad=True)
    residual_cosines(d, torch.tensor([[1.0, 0.0]])).sum().backward()
    assert torch.allclose(d.grad, torch.tensor([1 / 3, 0.0]))


def test_kl_alignment_both_directions_by_hand():
    tau, eps = 0.5, 1e-8
    s, u = [0.2, -0.1, 0.4], [0.0, 0.3, -0.2]
    pk = _softmax([x / tau for x in s])
    pr = _softmax([x / tau for x in u])
    code = sum(a * math.log((a + eps) / (b + eps)) for a, b in zip(pk, pr))
    page = sum(b * math.log((b + eps) / (a + eps)) for a, b in zip(pk, pr))
    st, ut = torch.tensor(s, dtype=torch.float64), torch.tensor(u, dtype=torch.float64)
    assert math.isclose(kl_alignment(st, ut, tau, "code").item(), code, rel_tol=1e-9)
    assert math.isclose(kl_alignment(st, ut, tau, "page").item(), page, rel_tol=1e-9)
    assert not math.isclose(code, page, rel_tol=1e-3)  # the direction matters


def test_kl_alignment_single_item_is_zero():
    assert kl_alignment(torch.tensor([0.7]), torch.tensor([-0.3]), 0.07).item() == 0.0


def test_topm_mse_selects_most_similar_and_renormalises():
    tau = 0.1
    s = [0.9, 0.1, 0.5, -0.3]
    u = [0.2, 0.8, 0.5, 0.0]
    # top-2 by key similarity: indices 0 (0.9) and 2 (0.5)
    w = _softmax([0.9 / tau, 0.5 / tau])
    expected = w[0] * (0.9 - 0.2) ** 2 + w[1] * (0.5 - 0.5) ** 2
    got = topm_mse_alignment(torch.tensor(s, dtype=torch.float64), torch.tensor(u, dtype=torch.float64), tau, 2)
    assert math.isclose(got.item(), expected, rel_tol=1e-9)
    # M larger than the number of earlier items uses all of them
    w_all = _softmax([x / tau for x in s])
    expected_all = sum(wi * (si - ui) ** 2 for wi, si, ui in zip(w_all, s, u))
    got_all = topm_mse_alignment(torch.tensor(s, dtype=torch.float64), torch.tensor(u, dtype=torch.float64), tau, 50)
    assert math.isclose(got_all.item(), expected_all, rel_tol=1e-9)


def test_essence_kl_direction_current_to_reference():
    q = [0.7, 0.2, 0.1]
    ref = [0.4, 0.4, 0.2]
    expected = sum(a * math.log(a / b) for a, b in zip(q, ref))
    got = essence_kl(torch.tensor(q).log(), torch.tensor(ref).log())
    assert math.isclose(got.item(), expected, rel_tol=1e-5)


def test_nll_normalises_per_prompt_then_averages():
    logp = torch.tensor([[-1.0, -3.0], [-2.0, -2.0], [-0.5, -0.5]])
    assert math.isclose(nll_loss(logp).item(), (2.0 + 2.0 + 0.5) / 3)


def test_clamp_projects_onto_ball_only_when_outside():
    v = torch.tensor([3.0, 4.0])
    clamp_norm_(v, 10.0)
    assert torch.equal(v, torch.tensor([3.0, 4.0]))
    clamp_norm_(v, 2.5)
    assert torch.allclose(v, torch.tensor([1.5, 2.0]))
