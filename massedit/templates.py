"""Texts sampled from the unedited model: context templates for editing and evaluation prefixes.

The authors sample both without a seed; here every sample is seeded from the config and saved as an
artefact that downstream steps read, so all methods see identical strings (method.md §3.1,
evaluation.md §2).
"""
from __future__ import annotations

import torch

from massedit.architectures import input_device
from massedit.tokens import bos_prefix, encode_text

EAMET_TEMPLATE_SEEDS = ["The", "Therefore", "Because", "I", "You", "However", "Also", "Nevertheless", "He",
                        "It", "Can", "Because"]  # "Because" twice, as the authors' list has it
PREFIX_SEEDS = ["The", "Therefore", "You", "However", "And", "While", "To", "Nevertheless", "Never", "He"]


@torch.no_grad()
def sample_continuations(
    model,
    tokenizer,
    seeds: list[str],
    max_new_tokens: int,
    seed: int,
    add_bos: bool,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    batch_size: int = 64,
) -> list[str]:
    """Continue each seed text by sampling; return the decoded texts, seed included, special tokens skipped."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = input_device(model)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    texts: list[str] = []
    try:
        for start in range(0, len(seeds), batch_size):
            chunk = [bos_prefix(tokenizer, add_bos) + encode_text(tokenizer, s) for s in seeds[start : start + batch_size]]
            width = max(len(c) for c in chunk)
            # left padding, so every row continues right after its own text
            ids = torch.tensor([[pad_id] * (width - len(c)) + c for c in chunk], device=device)
            mask = torch.tensor([[0] * (width - len(c)) + [1] * len(c) for c in chunk], device=device)
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                do_sample=True,
                temperature=temperature,
                top_k=top_k if top_k else None,
                top_p=top_p,
                max_new_tokens=max_new_tokens,
                pad_token_id=pad_id,
            ).cpu()
            texts.extend(tokenizer.decode(row[width - len(c) :], skip_special_tokens=True) for row, c in zip(out, chunk))
    finally:
        torch.random.set_rng_state(generator_state)
    return texts


def context_templates(model, tokenizer, cfg: dict, seed: int, add_bos: bool) -> list[list[str]]:
    """Template groups ``[["{}"], generated]`` (method.md §2.2, §3.1)."""
    texts = sample_continuations(
        model,
        tokenizer,
        list(cfg.get("seeds", EAMET_TEMPLATE_SEEDS)),
        max_new_tokens=int(cfg.get("max_new_tokens", 10)),
        seed=seed,
        add_bos=add_bos,
        temperature=float(cfg.get("temperature", 0.5)),
        top_k=int(cfg.get("top_k", 100)),
        top_p=float(cfg.get("top_p", 0.9)),
    )
    generated = [t.replace("{", " ").replace("}", " ") + ". {}" for t in texts]
    return [["{}"], generated]


def eval_prefixes(model, tokenizer, length: int, n_prefixes: int, seed: int, add_bos: bool) -> list[str]:
    """Evaluation prefixes (evaluation.md §2), each ending in ". "; length 0 means none."""
    if length <= 0 or n_prefixes <= 0:
        return []
    seeds = [PREFIX_SEEDS[i % len(PREFIX_SEEDS)] for i in range(n_prefixes)]
    texts = sample_continuations(
        model, tokenizer, seeds, max_new_tokens=length, seed=seed, add_bos=add_bos,
        temperature=0.7, top_k=50, top_p=0.9,
    )
    return [t + ". " for t in texts]
