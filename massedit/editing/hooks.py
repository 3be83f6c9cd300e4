"""Forward hooks: read the inputs of a module, add a vector at chosen positions, stop a forward early."""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch


class StopForward(Exception):
    """Raised by a hook once every activation a pass needs has been seen."""


def _hidden(output):
    return output[0] if isinstance(output, tuple) else output


def _replace_hidden(output, hidden):
    if isinstance(output, tuple):
        return (hidden,) + tuple(output[1:])
    return hidden


@contextlib.contextmanager
def hooks(*handles_factories: Callable[[], torch.utils.hooks.RemovableHandle]) -> Iterator[None]:
    handles = [make() for make in handles_factories]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def capture_inputs(module: torch.nn.Module, store: list) -> Callable[[], torch.utils.hooks.RemovableHandle]:
    """Append the first positional input of ``module`` to ``store`` on every call."""

    def pre_hook(_module, args):
        store.append(args[0])

    return lambda: module.register_forward_pre_hook(pre_hook)


def capture_outputs(module: torch.nn.Module, store: list) -> Callable[[], torch.utils.hooks.RemovableHandle]:
    def hook(_module, _args, output):
        store.append(_hidden(output))

    return lambda: module.register_forward_hook(hook)


def stop_after(module: torch.nn.Module) -> Callable[[], torch.utils.hooks.RemovableHandle]:
    """Stop the forward pass once ``module`` has run: later layers cannot change what was captured."""

    def hook(_module, _args, _output):
        raise StopForward

    return lambda: module.register_forward_hook(hook)


def add_at_positions(
    module: torch.nn.Module,
    rows: torch.Tensor,
    cols: torch.Tensor,
    delta: Callable[[torch.Tensor], torch.Tensor],
) -> Callable[[], torch.utils.hooks.RemovableHandle]:
    """Add ``delta(current)`` to the output of ``module`` at (rows[i], cols[i]).

    ``delta`` receives the clean outputs at those positions (shape (len(rows), d)) and returns what to
    add, either one vector per position or one vector broadcast to all of them. Passing the clean
    outputs lets a caller record h and initialise δ from it inside the very pass that applies δ.
    """

    def hook(_module, _args, output):
        hidden = _hidden(output)
        r, c = rows.to(hidden.device), cols.to(hidden.device)
        current = hidden[r, c]
        add = delta(current)
        hidden = hidden.clone()
        hidden[r, c] = current + add.to(device=hidden.device, dtype=hidden.dtype)
        return _replace_hidden(output, hidden)

    return lambda: module.register_forward_hook(hook)


def run_until(model: torch.nn.Module, **inputs) -> None:
    """Run ``model`` and swallow the StopForward raised by a ``stop_after`` hook."""
    try:
        model(**inputs)
    except StopForward:
        pass
