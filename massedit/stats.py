"""Uncentred second moments of the MLP down-projection inputs (method.md §2.5).

C_ℓ = (1/N_tok) Σ_t k_t k_tᵀ over every non-padding token of a document sample, for all requested layers
in one pass, with the forward stopped after the deepest requested layer. The running sum and the token
count are stored; the moment is sum / count.

massedit.caches stores them with their key and verifies them on read.
"""
from __future__ import annotations

import time

import torch
from tqdm import tqdm

from massedit.architectures import get_module, input_device
from massedit.editing import hooks
from massedit.tokens import bos_prefix, encode_text, length_sorted_batches, pad_right

# stats dtype -> (dtype of the matrix products, dtype of the running sum). "bfloat16" is the GPU setting:
# products in half precision, each over at most HALF_CHUNK tokens, summed in fp32 (bfloat16 keeps fp32's
# exponent range, so no product overflows; float16 would).
DTYPES = {
    "float32": (torch.float32, torch.float32),
    "float64": (torch.float64, torch.float64),
    "bfloat16": (torch.bfloat16, torch.float32),
}
HALF_CHUNK = 1024


def _outer(k: torch.Tensor, mm_dtype: torch.dtype, acc_dtype: torch.dtype) -> torch.Tensor:
    """kᵀk in ``acc_dtype``, computed in ``mm_dtype`` (chunked over tokens when that is narrower)."""
    if mm_dtype == acc_dtype:
        k = k.to(acc_dtype)
        return k.T @ k
    total = torch.zeros(k.shape[1], k.shape[1], dtype=acc_dtype, device=k.device)
    for start in range(0, k.shape[0], HALF_CHUNK):
        part = k[start : start + HALF_CHUNK].to(mm_dtype)
        total += (part.T @ part).to(acc_dtype)
    return total


@torch.no_grad()
def second_moments(
    model,
    tokenizer,
    arch,
    layers: list[int],
    documents: list[str],
    maxlen: int,
    add_bos: bool,
    dtype: str = "float32",
    batch_tokens: int = 4096,
    progress: bool = True,
) -> tuple[dict[int, torch.Tensor], int, dict]:
    """Return (sum of k kᵀ per layer, token count, info). Documents are tokenised one by one (no packing),
    truncated to ``maxlen`` tokens and batched by length so padding stays small. The sums stay on the
    device the keys are computed on (the model's)."""
    if dtype not in DTYPES:
        raise ValueError(f"stats dtype must be one of {sorted(DTYPES)}, not {dtype!r}")
    mm_dtype, acc_dtype = DTYPES[dtype]
    t0 = time.perf_counter()
    bos = bos_prefix(tokenizer, add_bos)
    sequences = [(bos + encode_text(tokenizer, doc))[:maxlen] for doc in documents]
    sequences = [s for s in sequences if s]
    sums = {layer: None for layer in layers}
    count = 0
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    deepest = max(layers)
    device = input_device(model)
    batches = length_sorted_batches([len(s) for s in sequences], max_items=len(sequences), max_tokens=batch_tokens)
    for batch in tqdm(batches, desc="statistics", disable=not progress):
        ids, mask = pad_right([sequences[i] for i in batch], pad_id)
        ids, mask = ids.to(device), mask.to(device)
        captured = {layer: [] for layer in layers}
        factories = [hooks.capture_inputs(get_module(model, arch.mlp_down.format(l)), captured[l]) for l in layers]
        factories.append(hooks.stop_after(get_module(model, arch.block.format(deepest))))
        with hooks.hooks(*factories):
            hooks.run_until(model, input_ids=ids, attention_mask=mask)
        keep = mask.bool()
        for layer in layers:
            # padding removed with the attention mask
            outer = _outer(captured[layer][0][keep], mm_dtype, acc_dtype)
            sums[layer] = outer if sums[layer] is None else sums[layer] + outer
        count += int(keep.sum())
    info = {"n_documents": len(sequences), "n_tokens": count, "wall_s": time.perf_counter() - t0,
            "n_batches": len(batches)}
    return sums, count, info
