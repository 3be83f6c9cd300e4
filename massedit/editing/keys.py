"""Keys (inputs of the MLP down-projection at the subject's last token) and block outputs.

A key is averaged over context templates group by group, then over groups (method.md §2.3, eq. 1):
with the groups ``[["{}"], generated]`` the bare prompt carries half the weight.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from massedit.architectures import get_module, input_device
from massedit.editing import hooks
from massedit.tokens import Encoded, encode_prompt, length_sorted_batches, pad_right


def compose(context: str, prompt: str) -> str:
    """Put a prompt template into a context template: both use ``{}``; the result keeps the subject slot."""
    if context.count("{}") != 1:
        raise ValueError(f"context template must contain exactly one '{{}}': {context!r}")
    return context.replace("{}", prompt)


def flat_templates(groups: list[list[str]]) -> list[str]:
    return [t for group in groups for t in group]


def encode_contexts(tokenizer, groups: list[list[str]], record: dict, add_bos: bool) -> list[Encoded]:
    """The record's prompt in every context template, in flat template order."""
    return [
        encode_prompt(tokenizer, compose(context, record["prompt"]), record["subject"], add_bos)
        for context in flat_templates(groups)
    ]


@dataclass
class KeysAndOutputs:
    keys: dict[int, torch.Tensor]  # layer -> (n, d_ff), template-averaged
    outputs: torch.Tensor | None  # (n, d) output (block by default) at the subject's last token of the bare prompt


@torch.no_grad()
def compute_keys(
    model,
    tokenizer,
    arch,
    records: list[dict],
    groups: list[list[str]],
    layers: list[int],
    add_bos: bool,
    output_layer: int | None = None,
    batch_size: int = 64,
    output_module: str = "block",
) -> KeysAndOutputs:
    """Template-averaged keys at ``layers`` and, optionally, the bare-prompt output of ``output_layer``'s
    ``output_module`` (an ``ArchSpec`` field: "block", or "mlp_down" for PMET's MLP-output targets).

    The bare prompt must be the first template of the first group. Every (record, template) pair is
    one sequence; sequences are batched by length and the forward stops after the deepest module read.
    Keys and outputs are returned on the device they are computed on (the model's).
    """
    if groups[0][0] != "{}":
        raise ValueError("the first context template must be the bare prompt '{}'")
    n_templates = sum(len(g) for g in groups)
    encoded = [enc for record in records for enc in encode_contexts(tokenizer, groups, record, add_bos)]
    device = input_device(model)
    weights = torch.tensor(
        [1.0 / (len(groups) * len(g)) for g in groups for _ in g], dtype=torch.float32, device=device
    )  # per-template weight of eq. (1)

    deepest = max(layers + ([output_layer] if output_layer is not None else []))
    key_sums = {layer: None for layer in layers}
    outputs = None
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    for batch in length_sorted_batches([len(e.ids) for e in encoded], batch_size):
        ids, mask = pad_right([encoded[i].ids for i in batch], pad_id)
        ids, mask = ids.to(device), mask.to(device)
        rows = torch.arange(len(batch), device=device)
        cols = torch.tensor([encoded[i].subject_last for i in batch], device=device)
        captured = {layer: [] for layer in layers}
        block_out: list = []
        factories = [hooks.capture_inputs(get_module(model, arch.mlp_down.format(l)), captured[l]) for l in layers]
        if output_layer is not None:
            module = get_module(model, arch.name(output_module, output_layer))
            factories.append(hooks.capture_outputs(module, block_out))
        factories.append(hooks.stop_after(get_module(model, arch.block.format(deepest))))
        with hooks.hooks(*factories):
            hooks.run_until(model, input_ids=ids, attention_mask=mask)
        record_idx = torch.tensor([i // n_templates for i in batch], device=device)
        template_idx = torch.tensor([i % n_templates for i in batch], device=device)
        w = weights[template_idx].unsqueeze(1)
        for layer in layers:
            vecs = captured[layer][0][rows, cols].float() * w
            if key_sums[layer] is None:
                key_sums[layer] = torch.zeros(len(records), vecs.shape[1], device=vecs.device)
            key_sums[layer].index_add_(0, record_idx, vecs)
        if output_layer is not None:
            out = block_out[0][rows, cols].float()
            if outputs is None:
                outputs = torch.zeros(len(records), out.shape[1], device=out.device)
            bare = template_idx == 0
            outputs[record_idx[bare]] = out[bare]
    return KeysAndOutputs(keys=key_sums, outputs=outputs)
