"""The prefix-cached residual forward (forward: fast) against the whole-model forward (forward: full)."""
import logging

import pytest
import torch

from massedit.architectures import arch_for
from massedit.editing import eamet, memit, residual
from massedit.editing.prefix_cache import PrefixCachedForward
from massedit.editing.residual import build_edit_prompts, make_forward
from massedit.testing import tiny_model, tiny_tokenizer

RECORD = {"prompt": "The official language of {} is", "subject": "New Delhi", "target_new": "Buenos Aires"}
# Context templates of different lengths, so every row has its own subject position.
GROUPS = [["{}"], ["The river flows. {}", "She plays the piano, and he plays the guitar. {}", "What is {}"]]


def _model(arch: str, tok, n_layers: int = 4, seed: int = 1):
    # Random init is so small that δ barely moves the outputs; larger weights make disagreements visible.
    model = tiny_model(arch, tok, n_layers=n_layers, seed=seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(6.0)
    return model


def _run(forward, delta: torch.Tensor, per_row: bool):
    x = delta.clone().requires_grad_(True)
    seen = []

    def add(current):
        seen.append(current.detach().clone())
        return x if not per_row else x * torch.linspace(0.5, 1.5, current.shape[0]).unsqueeze(1)

    target_logp, essence_logp = forward(add)
    # Any scalar that mixes every output checks the whole backward, not just one term.
    weights = torch.linspace(-1, 1, essence_logp.shape[0])
    (target_logp.sum() + (essence_logp.exp() * weights).sum()).backward()
    return target_logp.detach(), essence_logp.detach(), x.grad.clone(), seen[0]


def _compare(model, prompts, z_layer, delta, per_row=False):
    arch = arch_for(model)
    full = _run(make_forward(model, arch, prompts, z_layer, "full"), delta, per_row)
    fast_forward = make_forward(model, arch, prompts, z_layer, "fast")
    fast = _run(fast_forward, delta, per_row)
    return full, fast, fast_forward


@pytest.mark.parametrize("arch", ["llama", "mistral", "qwen2", "gemma3_text"])
@pytest.mark.parametrize("style,bos", [("gpt2", False), ("gpt2", True), ("llama", False), ("llama", True)])
@pytest.mark.parametrize("z_layer", [0, 2, 3])
def test_fast_forward_equals_full(arch, style, bos, z_layer):
    tok = tiny_tokenizer(style)
    model = _model(arch, tok)
    prompts = build_edit_prompts(tok, GROUPS, RECORD, bos)
    assert prompts.target_ids.numel() >= 2 and len(set(prompts.subject_cols.tolist())) >= 3
    delta = torch.randn(model.config.hidden_size, generator=torch.Generator().manual_seed(0))
    full, fast, fast_forward = _compare(model, prompts, z_layer, delta, per_row=(style == "llama"))
    assert isinstance(fast_forward, PrefixCachedForward)
    # The test means something only if δ moves the outputs far more than the tolerance. At the last
    # block δ reaches only its own position, so the later target positions cannot move.
    clean = make_forward(model, arch_for(model), prompts, z_layer, "full")(lambda c: torch.zeros_like(c[0]))
    assert (clean[1] - full[1]).abs().max() > 1e-2
    if z_layer < 3:
        assert (clean[0] - full[0]).abs().max() > 1e-2
    assert torch.allclose(fast[0], full[0], atol=1e-5, rtol=0), (fast[0] - full[0]).abs().max()
    assert torch.allclose(fast[1], full[1], atol=1e-5, rtol=0), (fast[1] - full[1]).abs().max()
    assert (fast[2] - full[2]).norm() <= 1e-4 * full[2].norm(), (fast[2] - full[2]).norm() / full[2].norm()
    assert full[2].norm() > 0
    # The callback sees the same clean block outputs, so h and δ⁰ are recorded alike.
    assert torch.allclose(fast[3], full[3], atol=1e-5, rtol=0)


def test_target_positions_before_the_subject():
    """With the authors' string build a target position may precede the subject; it is then constant in δ
    and must come from the prefix pass."""
    tok = tiny_tokenizer("llama")
    model = _model("llama", tok)
    prompts = build_edit_prompts(tok, GROUPS, RECORD, True)
    prompts.target_cols[1, 0] = prompts.subject_cols[1] - 2
    prompts.target_cols[2, 1] = prompts.subject_cols[2] - 1
    delta = torch.randn(model.config.hidden_size, generator=torch.Generator().manual_seed(1))
    full, fast, _ = _compare(model, prompts, 2, delta)
    assert torch.allclose(fast[0], full[0], atol=1e-5, rtol=0), (fast[0] - full[0]).abs().max()
    assert torch.allclose(fast[1], full[1], atol=1e-5, rtol=0)
    assert (fast[2] - full[2]).norm() <= 1e-4 * full[2].norm()


def _hp(mode: str, **extra) -> dict:
    return {"v_lr": 0.5, "v_num_grad_steps": 8, "kl_factor": 0.0625, "early_stop": 0.01, "clamp_ks_factor": 2.0,
            "cs_factor": 2, "mse_factor": 8, "tau": 0.07, "top_m": 50, "clamp_norm_factor": 0.75,
            "v_weight_decay": 0.5, "forward": mode, **extra}


def _close(a: torch.Tensor, b: torch.Tensor, rel: float = 1e-4) -> bool:
    return bool((a - b).norm() <= rel * b.norm())


@pytest.mark.parametrize("style,bos", [("gpt2", False), ("llama", True)])
@pytest.mark.parametrize("ess_reference", ["init", "clean"])
def test_eamet_residuals_agree(style, bos, ess_reference):
    tok = tiny_tokenizer(style)
    model = _model("llama", tok)
    arch = arch_for(model)
    prompts = build_edit_prompts(tok, GROUPS, RECORD, bos)
    d = model.config.hidden_size
    g = torch.Generator().manual_seed(2)
    previous = torch.randn(3, d, generator=g)  # i = 3: the alignment terms are on
    sims = torch.tensor([0.9, -0.2, 0.4])
    results = {
        mode: eamet.optimise_residual(model, arch, prompts, 2, key_norm=4.0, similarities=sims, previous=previous,
                                      hp=_hp(mode, ess_reference=ess_reference))
        for mode in ("full", "fast")
    }
    full, fast = results["full"], results["fast"]
    assert full.iterations == fast.iterations == 8
    assert _close(fast.delta, full.delta) and _close(fast.h, full.h)
    assert abs(fast.losses["total"] - full.losses["total"]) <= 1e-4 * abs(full.losses["total"])


def test_memit_residuals_agree():
    tok = tiny_tokenizer("llama")
    model = _model("qwen2", tok)
    arch = arch_for(model)
    prompts = build_edit_prompts(tok, GROUPS, RECORD, True)
    results = {mode: memit.optimise_residual(model, arch, prompts, 1, _hp(mode)) for mode in ("full", "fast")}
    full, fast = results["full"], results["fast"]
    assert full.iterations == fast.iterations == 8
    assert full.delta.norm() > 0
    assert _close(fast.delta, full.delta) and _close(fast.h, full.h)
    # An early stop at iteration 0 happens in both modes alike.
    stopped = {mode: memit.optimise_residual(model, arch, prompts, 1, _hp(mode, early_stop=1e3))
               for mode in ("full", "fast")}
    assert stopped["full"].iterations == stopped["fast"].iterations == 1


def test_unsupported_architecture_falls_back(caplog, monkeypatch):
    monkeypatch.setattr(residual, "_fallbacks_logged", set())  # logged once per process: reset for this test
    tok = tiny_tokenizer("gpt2")
    model = _model("gpt2", tok)
    prompts = build_edit_prompts(tok, GROUPS, RECORD, False)
    delta = torch.randn(model.config.hidden_size, generator=torch.Generator().manual_seed(3))
    with caplog.at_level(logging.INFO, logger="massedit.editing.residual"):
        full, fast, fast_forward = _compare(model, prompts, 1, delta)
    assert not isinstance(fast_forward, PrefixCachedForward)
    assert "gpt2" in caplog.text and "full path" in caplog.text
    assert torch.allclose(fast[0], full[0], atol=1e-6) and torch.allclose(fast[2], full[2], atol=1e-6)
    result = memit.optimise_residual(model, arch_for(model), prompts, 1, _hp("fast", v_num_grad_steps=3))
    assert result.iterations == 3


def test_narrow_sliding_window_falls_back():
    tok = tiny_tokenizer("llama")
    model = _model("mistral", tok)
    prompts = build_edit_prompts(tok, GROUPS, RECORD, True)
    model.config.sliding_window = 4  # narrower than the prompts: the plain causal masks would be wrong
    assert not isinstance(make_forward(model, arch_for(model), prompts, 1, "fast"), PrefixCachedForward)
    model.config.sliding_window = 4096
    assert isinstance(make_forward(model, arch_for(model), prompts, 1, "fast"), PrefixCachedForward)


def test_unknown_mode_is_rejected():
    tok = tiny_tokenizer("gpt2")
    model = tiny_model("llama", tok)
    prompts = build_edit_prompts(tok, GROUPS, RECORD, False)
    with pytest.raises(ValueError, match="forward"):
        make_forward(model, arch_for(model), prompts, 0, "quick")


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_straightforward_forward_equals_full(arch):
    """The benchmark's reference (LM head and softmax at every position) gives the same values and gradient."""
    tok = tiny_tokenizer("gpt2")
    model = _model(arch, tok)
    prompts = build_edit_prompts(tok, GROUPS, RECORD, False)
    delta = torch.randn(model.config.hidden_size, generator=torch.Generator().manual_seed(1))
    arch_spec = arch_for(model)
    full = _run(make_forward(model, arch_spec, prompts, 1, "full"), delta, False)
    plain = _run(make_forward(model, arch_spec, prompts, 1, "straightforward"), delta, False)
    for a, b in zip(plain, full):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="forward must be"):
        make_forward(model, arch_spec, prompts, 1, "quick")
