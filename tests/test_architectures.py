"""The registry's module names, checked on real (tiny) transformers models of every registered type."""
from __future__ import annotations

import pytest
import torch

from massedit.architectures import (
    UnsupportedArchitecture,
    add_to_down_proj,
    arch_for,
    down_proj_matrix,
    down_proj_weight,
    get_module,
    num_layers,
    supported_types,
)
from massedit.testing import tiny_config

HIDDEN, FF, LAYERS, VOCAB = 32, 64, 2, 64
REQUIRED = {"llama", "mistral", "qwen2", "gemma", "gemma2", "gemma3", "gemma3_text", "falcon", "gpt2", "gptj"}


def _model(arch: str):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    config = tiny_config(arch, vocab_size=VOCAB, n_layers=LAYERS, hidden=HIDDEN, intermediate=FF)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()


def _clone(x):
    if isinstance(x, tuple):
        return tuple(_clone(v) for v in x)
    return x.detach().clone() if isinstance(x, torch.Tensor) else x


def _first(x):
    return x[0] if isinstance(x, tuple) else x


def test_registry_covers_required_types():
    assert REQUIRED <= set(supported_types())


@pytest.mark.parametrize("arch", supported_types())
def test_module_names_match_the_real_model(arch):
    model = _model(arch)
    spec = arch_for(model)
    assert spec.model_type == model.config.model_type == arch
    layers = get_module(model, spec.layers)
    assert isinstance(layers, torch.nn.ModuleList) and len(layers) == LAYERS == num_layers(model)
    assert get_module(model, spec.embed) is model.get_input_embeddings()
    assert get_module(model, spec.lm_head) is model.get_output_embeddings()
    for layer in range(LAYERS):
        assert get_module(model, spec.name("block", layer)) is layers[layer]
        for field in ("mlp", "mlp_down", "attn"):
            assert spec.name(field, layer).startswith(spec.name("block", layer) + ".")
        # Every transformers model names these classes *Attention and *MLP.
        assert "Attention" in type(get_module(model, spec.name("attn", layer))).__name__
        assert "MLP" in type(get_module(model, spec.name("mlp", layer))).__name__
        assert spec.name("mlp_down", layer).startswith(spec.name("mlp", layer) + ".")
    assert down_proj_matrix(model, spec, LAYERS - 1).shape == (HIDDEN, FF)

    # Trace one forward pass to check the modules play the roles their names claim.
    seen: dict[str, tuple] = {}

    def keep(key):
        # Clone: some blocks (Falcon) add to the MLP output in place after the hook has run.
        return lambda _m, args, out: seen.__setitem__(key, (_clone(args), _clone(out)))

    last = LAYERS - 1
    names = {"mlp": spec.name("mlp", last), "down": spec.name("mlp_down", last), "attn": spec.name("attn", last),
             "block": spec.name("block", last), "norm": spec.final_norm, "head": spec.lm_head}
    hooks = [get_module(model, n).register_forward_hook(keep(k)) for k, n in names.items()]
    try:
        with torch.no_grad():
            model(input_ids=torch.arange(1, 9).unsqueeze(0))
    finally:
        for h in hooks:
            h.remove()
    assert "attn" in seen
    # The rewritten module is the MLP's last step, and maps d_ff → d through the (d, d_ff) matrix.
    (down_in,), down_out = seen["down"]
    assert down_in.shape[-1] == FF and down_out.shape[-1] == HIDDEN
    assert torch.allclose(_first(seen["mlp"][1]), down_out)
    bias = get_module(model, names["down"]).bias
    expected = down_in @ down_proj_matrix(model, spec, last).T + (0 if bias is None else bias)
    assert torch.allclose(expected, down_out, atol=1e-5)
    # The last block feeds the final norm, which feeds the LM head.
    assert torch.allclose(_first(seen["norm"][0]), _first(seen["block"][1]))
    assert torch.allclose(seen["head"][0][0], seen["norm"][1])


def test_arch_for_accepts_model_config_and_type_name():
    model = _model("llama")
    assert arch_for(model) is arch_for(model.config) is arch_for("llama")


def test_unknown_type_lists_supported_types():
    with pytest.raises(UnsupportedArchitecture) as info:
        arch_for("opt")
    assert isinstance(info.value, ValueError)
    assert "'opt'" in str(info.value)
    for t in supported_types():
        assert t in str(info.value)


def test_unknown_module_name_is_a_clear_error():
    with pytest.raises(LookupError, match="model.layers.7"):
        get_module(_model("llama"), "model.layers.7")


@pytest.mark.parametrize("arch,stored", [("llama", (HIDDEN, FF)), ("gpt2", (FF, HIDDEN))])
def test_down_proj_layout(arch, stored):
    model = _model(arch)
    spec = arch_for(model)
    assert spec.down_weight_transposed == (arch == "gpt2")
    weight = down_proj_weight(model, spec, 0)
    assert isinstance(weight, torch.nn.Parameter) and tuple(weight.shape) == stored
    matrix = down_proj_matrix(model, spec, 0)
    assert matrix.shape == (HIDDEN, FF)

    # An update given as (d, d_ff) lands on the right entries of the stored layout.
    delta = torch.zeros(HIDDEN, FF)
    delta[3, 5] = 1.0
    before = weight.detach().clone()
    add_to_down_proj(model, spec, 0, delta)
    changed = (weight.detach() - before).nonzero().tolist()
    assert changed == ([[3, 5]] if arch == "llama" else [[5, 3]])
    with pytest.raises(ValueError, match="shape"):
        add_to_down_proj(model, spec, 0, delta.T)


def test_half_precision_update_is_summed_in_fp32():
    model = _model("gpt2").to(torch.bfloat16)
    spec = arch_for(model)
    weight = down_proj_weight(model, spec, 1)
    before = weight.detach().float().clone()
    delta = torch.randn(HIDDEN, FF, dtype=torch.float64) * 0.01
    add_to_down_proj(model, spec, 1, delta)
    assert weight.dtype == torch.bfloat16
    expected = (before.T + delta.float()).to(torch.bfloat16).T
    assert torch.equal(weight.detach(), expected)
