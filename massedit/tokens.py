"""Tokenisation conventions shared by editing and evaluation (reference method.md §6).

The clean convention is the default everywhere: inputs are concatenations of token ids, never of decoded
strings, and every index follows from the ids actually fed to the model.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Encoded:
    """A prompt encoded for the model: ``ids`` (BOS included when the policy asks for it) and the
    position of the subject's last token within ``ids`` (None when the text has no subject)."""

    ids: list[int]
    subject_last: int | None


def bos_prefix(tokenizer, add_bos: bool) -> list[int]:
    if not add_bos:
        return []
    if tokenizer.bos_token_id is None:
        raise ValueError(f"BOS requested but tokenizer {tokenizer.name_or_path!r} has no BOS token")
    return [tokenizer.bos_token_id]


def encode_text(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def fill(template: str, subject: str) -> tuple[str, tuple[int, int]]:
    """Put ``subject`` into the single ``{}`` of ``template``; return the text and the subject's char span."""
    if template.count("{}") != 1:
        raise ValueError(f"template must contain exactly one '{{}}': {template!r}")
    start = template.index("{}")
    text = template[:start] + subject + template[start + 2 :]
    return text, (start, start + len(subject))


def last_token_in_span(tokenizer, text: str, span: tuple[int, int]) -> int:
    """Index (without BOS) of the last token whose character span overlaps ``span``."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    last = None
    for i, (a, b) in enumerate(enc["offset_mapping"]):
        if a < span[1] and b > span[0]:
            last = i
    if last is None:
        raise ValueError(f"no token overlaps the subject span {span} in {text!r}")
    return last


def encode_prompt(tokenizer, template: str, subject: str, add_bos: bool) -> Encoded:
    """Encode ``template`` with ``subject`` filled in, locating the subject's last token."""
    text, span = fill(template, subject)
    ids = encode_text(tokenizer, text)
    bos = bos_prefix(tokenizer, add_bos)
    return Encoded(bos + ids, len(bos) + last_token_in_span(tokenizer, text, span))


def encode_plain(tokenizer, text: str, add_bos: bool) -> Encoded:
    return Encoded(bos_prefix(tokenizer, add_bos) + encode_text(tokenizer, text), None)


def target_ids(tokenizer, prompt: str, target: str) -> list[int]:
    """Token ids of ``target`` as it continues ``prompt`` after one space (method.md §6.2, clean rule).

    Tokenise ``prompt + " " + target`` and ``prompt``; when the prompt's ids are a prefix, the rest are
    the target's ids. Otherwise fall back to the ids of ``" " + target`` and log the record.
    """
    target = target.strip()
    if not target:
        raise ValueError(f"empty target for prompt {prompt!r}")
    full = encode_text(tokenizer, prompt + " " + target)
    head = encode_text(tokenizer, prompt)
    if full[: len(head)] == head and len(full) > len(head):
        return full[len(head) :]
    log.warning("prompt/target token boundary merges for %r + %r; using ids of ' %s'", prompt, target, target)
    ids = encode_text(tokenizer, " " + target)
    return ids


def authors_subject_last(tokenizer, template: str, subject: str, llama_class: bool = False) -> int:
    """The authors' rule (method.md §6.3): tokenise prefix, subject and suffix separately.

    Used to check the offset-based rule; returns the index without BOS.
    """
    prefix, suffix = template.split("{}")
    if llama_class:
        subject = subject.strip()
    prefix_ids = encode_text(tokenizer, prefix.rstrip(" ")) if prefix else []
    subject_ids = encode_text(tokenizer, (" " if prefix else "") + subject)
    return len(prefix_ids) + len(subject_ids) - 1


def pad_right(sequences: list[list[int]], pad_id: int):
    """Right-padded ``input_ids`` and ``attention_mask`` tensors for a list of id lists."""
    import torch

    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    return ids, mask


def length_sorted_batches(lengths: list[int], max_items: int, max_tokens: int | None = None) -> list[list[int]]:
    """Indices grouped into batches of similar length, so padding stays small.

    A batch holds at most ``max_items`` sequences and, when ``max_tokens`` is set, at most that many
    padded tokens (a single longer sequence still forms its own batch).
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        width = max(lengths[i], max((lengths[j] for j in current), default=0))
        too_many = len(current) >= max_items
        too_big = max_tokens is not None and current and width * (len(current) + 1) > max_tokens
        if current and (too_many or too_big):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches
