"""EAMET's reproduction switches: the cosine at δ = 0, δ's initialisation, the norm control, the loss layer,
per-layer λ, and fixed or authors'-order context templates."""
import pytest
import torch

from massedit import config as mc
from massedit.architectures import arch_for
from massedit.editing import eamet
from massedit.editing.alignment import NORMALIZE_EPS, residual_cosines
from massedit.editing.residual import build_edit_prompts, check_loss_layer
from massedit.editing.run import compute_residuals, layer_lambdas
from massedit.templates import context_templates, eval_prefixes, sample_continuations, seeded_stream
from massedit.testing import tiny_model, tiny_tokenizer

RECORD = {"prompt": "The official language of {} is", "subject": "New Delhi", "target_new": "Buenos Aires"}
GROUPS = [["{}"], ["The river flows. {}", "What is {}"]]
Z_LAYER = 1


def test_code_cosine_has_the_eps_gradient_at_zero_delta():
    previous = torch.tensor([[3.0, 4.0, 0.0], [0.0, 0.0, 2.0]])
    unit = previous / previous.norm(dim=1, keepdim=True)
    delta = torch.zeros(3, requires_grad=True)
    u = residual_cosines(delta, previous, "code")
    assert torch.equal(u.detach(), torch.zeros(2))
    (u * torch.tensor([1.0, -2.0])).sum().backward()
    # d/dδ Σ_j c_j r̂_j·δ/max(‖δ‖, eps) at δ = 0 is Σ_j c_j r̂_j / eps.
    expected = (unit[0] - 2 * unit[1]) / NORMALIZE_EPS
    assert torch.allclose(delta.grad, expected, rtol=1e-6)
    assert delta.grad.abs().max() > 1e11


def test_zero_cosine_has_no_gradient_at_zero_delta_and_both_agree_elsewhere():
    previous = torch.tensor([[3.0, 4.0, 0.0], [0.0, 0.0, 2.0]])
    delta = torch.zeros(3, requires_grad=True)
    u = residual_cosines(delta, previous, "zero")
    assert torch.equal(u, torch.zeros(2)) and not u.requires_grad
    x = torch.tensor([1.0, 2.0, 2.0])
    assert torch.allclose(residual_cosines(x, previous, "zero"), residual_cosines(x, previous, "code"))
    assert torch.allclose(residual_cosines(x, previous, "code"), torch.tensor([11 / 15, 2 / 3]))
    with pytest.raises(ValueError, match="zero_delta_cosine"):
        residual_cosines(x, previous, "paper")


def _big_hidden_model(tok):
    """A tiny model whose block outputs have norms far above 100, as at the "massive activation" positions
    that make eq. (6) start δ at 0."""
    model = tiny_model("llama", tok, n_layers=2, seed=3)
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(2000.0)
    return model


def _hp(**extra):
    hp = {"clamp_ks_factor": 1e6, "v_lr": 0.5, "v_num_grad_steps": 2, "kl_factor": 0.0625, "cs_factor": 2.0,
          "mse_factor": 8.0, "tau": 0.07, "early_stop": 0.0, "forward": "full"}
    hp.update(extra)
    return hp


def _first_step(zero_delta, previous, similarities, **extra):
    tok = tiny_tokenizer("gpt2")
    model = _big_hidden_model(tok)
    prompts = build_edit_prompts(tok, GROUPS, RECORD, False)
    return eamet.optimise_residual(model, arch_for(model), prompts, Z_LAYER, key_norm=5.0,
                                   similarities=similarities, previous=previous,
                                   hp=_hp(zero_delta_cosine=zero_delta, **extra))


def test_paper_first_step_follows_the_alignment_gradient_clean_the_nll():
    d = 32
    r = torch.randn(1, d, generator=torch.Generator().manual_seed(0))
    s = torch.tensor([0.5])
    paper = _first_step("code", r, s)
    clean = _first_step("zero", r, s)
    alone = _first_step("zero", torch.zeros(0, d), torch.zeros(0))  # i = 0: no alignment terms at all
    assert paper.h.norm() >= 100 and paper.iterations == 2
    # The 1e12-sized alignment gradient -16·s·r̂/eps decides the sign of Adam's first step in every coordinate:
    # δ¹ = lr·sign(s·r̂).
    assert torch.allclose(paper.delta, 0.5 * torch.sign(s * r[0]), atol=1e-4)
    # At δ = 0 the clean cosine contributes nothing: the first step is the one without alignment terms.
    assert torch.allclose(clean.delta, alone.delta, atol=1e-7)
    assert (torch.sign(clean.delta) != torch.sign(paper.delta)).any()


def test_target_init_below_the_threshold_starts_along_h_and_zero_init_does_not():
    tok = tiny_tokenizer("gpt2")
    model = tiny_model("llama", tok, n_layers=2, seed=3)
    prompts = build_edit_prompts(tok, GROUPS, RECORD, False)
    arch = arch_for(model)
    hp = _hp(v_num_grad_steps=1)  # one forward pass: the result is δ⁰ itself
    target = eamet.optimise_residual(model, arch, prompts, Z_LAYER, 5.0, torch.zeros(0), torch.zeros(0, 32), hp)
    zero = eamet.optimise_residual(model, arch, prompts, Z_LAYER, 5.0, torch.zeros(0), torch.zeros(0, 32),
                                   {**hp, "delta_init": "zero"})
    assert target.h.norm() < 100
    assert torch.allclose(target.delta, 5.0 * target.h / target.h.norm(), atol=1e-6)
    assert torch.equal(zero.delta, torch.zeros(32))
    with pytest.raises(ValueError, match="delta_init"):
        eamet.optimise_residual(model, arch, prompts, Z_LAYER, 5.0, torch.zeros(0), torch.zeros(0, 32),
                                {**hp, "delta_init": "random"})


def test_norm_control_methods():
    h = torch.tensor([3.0, 4.0])
    delta = torch.tensor([0.6, 0.8], requires_grad=True)
    # fix_ks: η(‖δ‖ − c_k‖k‖)²; off when η = 0 (every EAMET config).
    assert eamet.norm_penalty(delta, h, 2.0, "fix_ks", {"norm_factor": 0}) is None
    assert eamet.norm_penalty(delta, h, 2.0, "fix_ks", {"norm_factor": 3.0}).item() == pytest.approx(3.0)
    assert eamet.clamp_radius(h, 2.0, "fix_ks", {"clamp_norm_factor": 1.5}) == 2.0
    # norm: v_weight_decay‖δ‖/‖h‖² and the clamp clamp_norm_factor·‖h‖.
    assert eamet.norm_penalty(delta, h, 2.0, "norm", {"v_weight_decay": 0.5}).item() == pytest.approx(0.5 / 25)
    assert eamet.clamp_radius(h, 2.0, "norm", {"clamp_norm_factor": 1.5}) == pytest.approx(7.5)


def test_norm_method_clamps_at_the_hidden_norm():
    tok = tiny_tokenizer("gpt2")
    model = tiny_model("llama", tok, n_layers=2, seed=3)
    prompts = build_edit_prompts(tok, GROUPS, RECORD, False)
    hp = _hp(v_num_grad_steps=4, v_lr=5.0, weight_decay_method="norm", clamp_norm_factor=0.01, v_weight_decay=0.5)
    result = eamet.optimise_residual(model, arch_for(model), prompts, Z_LAYER, 5.0, torch.zeros(0),
                                     torch.zeros(0, 32), hp)
    assert result.delta.norm() <= 0.01 * result.h.norm() * (1 + 1e-5)
    assert "weight_decay" in result.losses
    fix_ks = eamet.optimise_residual(model, arch_for(model), prompts, Z_LAYER, 5.0, torch.zeros(0),
                                     torch.zeros(0, 32), {**hp, "weight_decay_method": "fix_ks"})
    assert fix_ks.delta.norm() > 0.1 * fix_ks.h.norm()


def test_loss_layer_must_be_the_last_block():
    check_loss_layer({}, 30)
    check_loss_layer({"v_loss_layer": 29}, 30)
    with pytest.raises(ValueError, match=r"v_loss_layer = 27: only the last block \(29"):
        check_loss_layer({"v_loss_layer": 27}, 30)
    tok = tiny_tokenizer("gpt2")
    model = tiny_model("llama", tok, n_layers=2, seed=3)
    with pytest.raises(ValueError, match="v_loss_layer = 0"):
        compute_residuals(model, tok, [RECORD], "memit", {"layers": [1], "v_loss_layer": 0}, 0, False, False)


def test_per_layer_lambdas():
    assert layer_lambdas({"layers": [3, 4], "mom2_update_weight": 4000}) == [4000.0, 4000.0]
    assert layer_lambdas({"layers": [3, 4], "mom2_update_weight": [5000, 10000]}) == [5000.0, 10000.0]
    with pytest.raises(ValueError, match="2 values for 3 layers"):
        layer_lambdas({"layers": [3, 4, 5], "mom2_update_weight": [1, 2]})


def test_fixed_templates_are_used_verbatim():
    tok = tiny_tokenizer("gpt2")
    model = tiny_model("llama", tok, n_layers=2, seed=3)
    fixed = ["Therefore, the answer. {}", "Odd  spacing , kept {} as given"]
    assert context_templates(model, tok, {"fixed": fixed}, 0, False) == [["{}"], fixed]
    with pytest.raises(ValueError, match=r"templates.fixed\[1\]"):
        context_templates(model, tok, {"fixed": ["ok {}", "no slot"]}, 0, False)


def test_after_prefixes_stream_continues_after_the_evaluation_prefixes():
    tok = tiny_tokenizer("gpt2")
    model = tiny_model("llama", tok, n_layers=2, seed=3)
    cfg = {"seeds": ["The", "Because"], "max_new_tokens": 4, "temperature": 1.0, "top_k": 0, "top_p": 1.0}
    prefixes = {"length": 3, "n": 2, "seed": 7}
    authors = context_templates(model, tok, {**cfg, "stream": "after_prefixes", "prefixes": prefixes}, 0, False)
    with seeded_stream(7):
        eval_prefixes(model, tok, 3, 2, None, False)
        texts = sample_continuations(model, tok, cfg["seeds"], 4, None, False, 1.0, 0, 1.0)
    assert authors[1] == [t + ". {}" for t in texts]
    own = context_templates(model, tok, {**cfg, "stream": "own"}, 7, False)
    assert own != authors  # the prefixes drawn first move the stream
    # The stream is seeded with the prefix seed; the run's seed is not used.
    assert context_templates(model, tok, {**cfg, "stream": "after_prefixes", "prefixes": prefixes}, 99, False) == authors


def test_presets_set_the_cosine_switch_for_eamet_only():
    base = {"preset": "paper", "methods": {
        "eamet": {"defaults": {"templates": {"stream": "after_prefixes"}}, "models": {}},
        "memit": {"defaults": {}, "models": {}}},
        "evaluation": {"prefix_len": 5, "n_prefixes": 10, "prefix_seed": 3}}
    assert mc.resolve_hparams(base, "eamet", "m")["zero_delta_cosine"] == "code"
    assert mc.resolve_hparams({**base, "preset": "clean"}, "eamet", "m")["zero_delta_cosine"] == "zero"
    assert "zero_delta_cosine" not in mc.resolve_hparams(base, "memit", "m")
    explicit = {**base, "methods": {**base["methods"], "eamet": {"defaults": {"zero_delta_cosine": "zero"},
                                                                  "models": {}}}}
    assert mc.resolve_hparams(explicit, "eamet", "m")["zero_delta_cosine"] == "zero"
    assert mc.resolve_hparams(base, "eamet", "m")["templates"]["prefixes"] == {"length": 5, "n": 10, "seed": 3}


def test_starts_at_zero_counts_the_edits_at_the_threshold():
    h = torch.tensor([[60.0, 80.0], [3.0, 4.0], [0.0, 101.0]])
    assert eamet.starts_at_zero(h, {}).tolist() == [True, False, True]
    assert eamet.starts_at_zero(h, {"init_norm_threshold": 200}).tolist() == [False, False, False]
    assert eamet.starts_at_zero(h, {"delta_init": "zero"}).tolist() == [True, True, True]


def _with_eamet(**hparams) -> dict:
    return {
        "models": {"m": {"source": {"kind": "local", "path": "model"}}},
        "datasets": {"d": {"kind": "quickstart"}},
        "grid": {"models": ["m"], "datasets": ["d"], "n_edits": [2]},
        "methods": {"eamet": {"defaults": hparams}},
    }


def test_the_authors_eamet_keys_validate_and_resolve():
    authors = {"mom2_update_weight": [4000, 4000], "v_loss_layer": 29, "delta_init": "target_init",
               "norm_factor": 0, "weight_decay_method": "fix_ks", "v_weight_decay": 0.5, "clamp_norm_factor": 1.5}
    config = mc.validate(_with_eamet(**authors))
    resolved = mc.resolve_hparams(config, "eamet", "m")
    assert {key: resolved[key] for key in authors} == authors
    assert layer_lambdas(resolved) == [4000.0, 4000.0]
    memit = mc.validate({**_with_eamet(), "methods": {"memit": {"defaults": {"mom2_update_weight": [1, 2],
                                                                             "v_loss_layer": 29}}}})
    assert mc.resolve_hparams(memit, "memit", "m")["mom2_update_weight"] == [1, 2]


@pytest.mark.parametrize("key,value", [("weight_decay_method", "l2"), ("delta_init", "random"),
                                       ("zero_delta_cosine", "eps"), ("mom2_update_weight", [4000, -1]),
                                       ("v_loss_layer", -1), ("templates", {"stream": "shared"})])
def test_bad_values_of_the_new_keys_are_named(key, value):
    with pytest.raises(ValueError, match=key if key != "templates" else "stream"):
        mc.validate(_with_eamet(**{key: value}))
