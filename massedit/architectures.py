"""Registry of supported model architectures: Hugging Face ``config.model_type`` → module names.

Editing code never hard-codes a module path; it asks the registry (reference method.md §5.1). Names
are templates where ``{}`` is the layer index. They were checked against transformers 5.24 by
instantiating tiny models of every registered type (tests/test_architectures.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


class UnsupportedArchitecture(ValueError):
    """Raised for a model type that has no entry in the registry."""


@dataclass(frozen=True)
class ArchSpec:
    model_type: str
    layers: str  # the ModuleList holding the blocks
    block: str
    mlp: str
    mlp_down: str  # the rewritten module: the MLP's output projection (d_ff → d)
    attn: str
    final_norm: str
    lm_head: str
    embed: str
    # GPT-2's Conv1D stores its weight as (in, out) = (d_ff, d); nn.Linear stores (out, in) = (d, d_ff).
    down_weight_transposed: bool = False

    def name(self, field: str, layer: int | None = None) -> str:
        """The module name of ``field`` (e.g. "mlp_down"), with ``layer`` filled in for per-layer fields."""
        template = getattr(self, field)
        if "{}" in template:
            if layer is None:
                raise ValueError(f"{field} is per-layer ({template!r}); give a layer index")
            return template.format(layer)
        return template


def _decoder(prefix: str, model_type: str, norm: str = "norm") -> ArchSpec:
    """The Llama family layout, rooted at ``prefix`` (e.g. "model")."""
    return ArchSpec(
        model_type=model_type,
        layers=f"{prefix}.layers",
        block=f"{prefix}.layers.{{}}",
        mlp=f"{prefix}.layers.{{}}.mlp",
        mlp_down=f"{prefix}.layers.{{}}.mlp.down_proj",
        attn=f"{prefix}.layers.{{}}.self_attn",
        final_norm=f"{prefix}.{norm}",
        lm_head="lm_head",
        embed=f"{prefix}.embed_tokens",
    )


_REGISTRY: dict[str, ArchSpec] = {}


def register(spec: ArchSpec) -> ArchSpec:
    _REGISTRY[spec.model_type] = spec
    return spec


# DeepSeek-LLM 7B reports model_type "llama", so it is covered by the first entry.
for _t in ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi3", "olmo2"):
    register(_decoder("model", _t))
# Multimodal Gemma 3 nests its text decoder; GGUF and text-only checkpoints load as gemma3_text.
register(_decoder("model.language_model", "gemma3"))
register(ArchSpec(
    model_type="falcon",
    layers="transformer.h",
    block="transformer.h.{}",
    mlp="transformer.h.{}.mlp",
    mlp_down="transformer.h.{}.mlp.dense_4h_to_h",
    attn="transformer.h.{}.self_attention",
    final_norm="transformer.ln_f",
    lm_head="lm_head",
    embed="transformer.word_embeddings",
))
register(ArchSpec(
    model_type="gpt2",
    layers="transformer.h",
    block="transformer.h.{}",
    mlp="transformer.h.{}.mlp",
    mlp_down="transformer.h.{}.mlp.c_proj",
    attn="transformer.h.{}.attn",
    final_norm="transformer.ln_f",
    lm_head="lm_head",
    embed="transformer.wte",
    down_weight_transposed=True,
))
register(ArchSpec(
    model_type="gptj",
    layers="transformer.h",
    block="transformer.h.{}",
    mlp="transformer.h.{}.mlp",
    mlp_down="transformer.h.{}.mlp.fc_out",
    attn="transformer.h.{}.attn",
    final_norm="transformer.ln_f",
    lm_head="lm_head",
    embed="transformer.wte",
))
register(ArchSpec(
    model_type="gpt_neox",
    layers="gpt_neox.layers",
    block="gpt_neox.layers.{}",
    mlp="gpt_neox.layers.{}.mlp",
    mlp_down="gpt_neox.layers.{}.mlp.dense_4h_to_h",
    attn="gpt_neox.layers.{}.attention",
    final_norm="gpt_neox.final_layer_norm",
    lm_head="lm_head",
    embed="gpt_neox.embed_in",
))


def supported_types() -> list[str]:
    return sorted(_REGISTRY)


def arch_for(obj) -> ArchSpec:
    """The spec for a model, a config, or a ``model_type`` string."""
    if isinstance(obj, str):
        model_type = obj
    else:
        config = getattr(obj, "config", obj)
        model_type = getattr(config, "model_type", None)
        if model_type is None:
            raise UnsupportedArchitecture(f"cannot tell the model type of {type(obj).__name__}")
    try:
        return _REGISTRY[model_type]
    except KeyError:
        raise UnsupportedArchitecture(
            f"unsupported model type {model_type!r}; supported: {', '.join(supported_types())}"
        ) from None


def get_module(model: torch.nn.Module, name: str) -> torch.nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError as err:
        raise LookupError(f"{type(model).__name__} has no module {name!r}: {err}") from None


def input_device(model: torch.nn.Module) -> torch.device:
    """Device of the input embeddings: where input ids must go (also for device-mapped models)."""
    try:
        return model.get_input_embeddings().weight.device
    except (AttributeError, NotImplementedError):
        return next(model.parameters()).device


def num_layers(model: torch.nn.Module) -> int:
    """Number of transformer blocks, counted from the module tree (config field names vary)."""
    return len(get_module(model, arch_for(model).layers))


def down_proj_weight(model: torch.nn.Module, spec: ArchSpec, layer: int) -> torch.nn.Parameter:
    """The rewritten weight in its stored layout; see ``spec.down_weight_transposed``."""
    return get_module(model, spec.name("mlp_down", layer)).weight


def down_proj_matrix(model: torch.nn.Module, spec: ArchSpec, layer: int) -> torch.Tensor:
    """The rewritten weight as (d, d_ff) whatever the layout. It is a view: in-place updates reach the model."""
    weight = down_proj_weight(model, spec, layer)
    return weight.T if spec.down_weight_transposed else weight


def add_to_down_proj(model: torch.nn.Module, spec: ArchSpec, layer: int, delta: torch.Tensor) -> None:
    """Add a (d, d_ff) update to the rewritten weight in its own layout, dtype and device.

    Half-precision weights get the sum computed in fp32 and then rounded once (method.md §8.1)."""
    target = down_proj_matrix(model, spec, layer)
    if tuple(delta.shape) != tuple(target.shape):
        raise ValueError(f"update shape {tuple(delta.shape)} != weight shape (d, d_ff) {tuple(target.shape)}")
    with torch.no_grad():
        if target.dtype in (torch.float16, torch.bfloat16):
            summed = target.float() + delta.to(dtype=torch.float32, device=target.device)
            target.copy_(summed.to(target.dtype))
        else:
            target.add_(delta.to(dtype=target.dtype, device=target.device))
