"""Texts sampled from the unedited model: context templates for editing and evaluation prefixes.

The authors sample both without a seed; here every sample is seeded from the config and saved as an
artefact that downstream steps read, so all methods see identical strings (method.md §3.1,
evaluation.md §2).
"""
from __future__ import annotations

import contextlib

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
    seed: int | None,
    add_bos: bool,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    batch_size: int = 64,
) -> list[str]:
    """Continue each seed text by sampling; return the decoded texts, seed included, special tokens skipped.
    ``seed`` None continues the caller's random stream instead of seeding (and restoring) one."""
    if seed is None:
        return _sample(model, tokenizer, seeds, max_new_tokens, add_bos, temperature, top_k, top_p, batch_size)
    with seeded_stream(seed):
        return _sample(model, tokenizer, seeds, max_new_tokens, add_bos, temperature, top_k, top_p, batch_size)


@contextlib.contextmanager
def seeded_stream(seed: int):
    """The global torch generators (CPU and CUDA: generate samples on the model's device) seeded with ``seed``
    inside the block and restored after it, so sampling here changes no other random draw."""
    with torch.random.fork_rng(devices=list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []):
        torch.manual_seed(seed)
        yield


def _sample(model, tokenizer, seeds, max_new_tokens, add_bos, temperature, top_k, top_p, batch_size) -> list[str]:
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = input_device(model)
    texts: list[str] = []
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
    return texts


TEMPLATE_STREAMS = ("own", "after_prefixes")


def context_templates(model, tokenizer, cfg: dict, seed: int, add_bos: bool) -> list[list[str]]:
    """Template groups ``[["{}"], generated]`` (method.md §2.2, §3.1).

    ``cfg["fixed"]``: the generated group given verbatim (e.g. the strings of another run); nothing is sampled.
    ``cfg["stream"]``: ``own`` samples from a generator seeded with ``seed``; ``after_prefixes`` reproduces the
    authors' order, where one random stream first samples the evaluation prefixes and then the templates: the
    stream is seeded with ``cfg["prefixes"]["seed"]`` (the evaluation's prefix seed, so the prefixes drawn are
    the ones evaluation uses) and ``seed`` is not used."""
    if cfg.get("fixed") is not None:
        return [["{}"], fixed_templates(cfg["fixed"])]
    stream = cfg.get("stream", "own")
    if stream not in TEMPLATE_STREAMS:
        raise ValueError(f"templates.stream must be one of {TEMPLATE_STREAMS}, not {stream!r}")
    settings = dict(
        max_new_tokens=int(cfg.get("max_new_tokens", 10)),
        add_bos=add_bos,
        temperature=float(cfg.get("temperature", 0.5)),
        top_k=int(cfg.get("top_k", 100)),
        top_p=float(cfg.get("top_p", 0.9)),
    )
    seeds = list(cfg.get("seeds", EAMET_TEMPLATE_SEEDS))
    if stream == "own":
        texts = sample_continuations(model, tokenizer, seeds, seed=seed, **settings)
    else:
        prefixes = cfg.get("prefixes")
        if not prefixes:
            raise ValueError("templates.stream after_prefixes needs the evaluation's prefix settings "
                             "(templates.prefixes: {length, n, seed}; the workflow fills them in)")
        with seeded_stream(int(prefixes["seed"])):
            eval_prefixes(model, tokenizer, int(prefixes["length"]), int(prefixes["n"]), None, add_bos)
            texts = sample_continuations(model, tokenizer, seeds, seed=None, **settings)
    generated = [t.replace("{", " ").replace("}", " ") + ". {}" for t in texts]
    return [["{}"], generated]


def fixed_templates(templates: list[str]) -> list[str]:
    """Given templates, checked: each must hold exactly one ``{}`` for the prompt."""
    for index, template in enumerate(templates):
        if not isinstance(template, str) or template.count("{}") != 1:
            raise ValueError(f"templates.fixed[{index}] = {template!r}: a template must contain exactly one '{{}}'")
    return list(templates)


def eval_prefixes(model, tokenizer, length: int, n_prefixes: int, seed: int | None, add_bos: bool) -> list[str]:
    """Evaluation prefixes (evaluation.md §2), each ending in ". "; length 0 means none. ``seed`` None continues
    the caller's random stream."""
    if length <= 0 or n_prefixes <= 0:
        return []
    seeds = [PREFIX_SEEDS[i % len(PREFIX_SEEDS)] for i in range(n_prefixes)]
    texts = sample_continuations(
        model, tokenizer, seeds, max_new_tokens=length, seed=seed, add_bos=add_bos,
        temperature=0.7, top_k=50, top_p=0.9,
    )
    return [t + ". " for t in texts]
