"""Reading and putting back variables: the one home for snapshots of model state.

A read shares the variable's buffer instead of copying it; TensorFlow copies on the next write
while a read is held (reads have value semantics). So a snapshot of gigabytes of weights is
free, every write during it moves the variable to a new buffer, and putting back costs one copy
only for the variables that were written.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np


def components(variable: Any) -> list[Any]:
    """The per-replica tf.Variables behind a (possibly distributed) Keras variable."""
    inner = getattr(variable, "value", variable)
    values = getattr(inner, "values", None)
    if isinstance(values, tuple) and values:
        return list(values)
    return [variable]


def read(variable: Any) -> Any:
    """The variable's current value as an immutable TensorFlow tensor sharing its buffer."""
    import tensorflow as tf

    inner = variable if isinstance(variable, tf.Variable) else getattr(variable, "value", variable)
    return tf.identity(inner)


def address(tensor: Any) -> int | None:
    """The host address of a CPU tensor's buffer; None where it cannot be seen without a copy."""
    try:
        if "CPU" not in tensor.device.upper():
            return None
        return int(np.asarray(tensor).__array_interface__["data"][0])
    except Exception:  # noqa: BLE001 - unobservable: callers take the safe path
        return None


def unique(variables: Iterable[Any]) -> list[Any]:
    seen: dict[int, Any] = {}
    for v in variables:
        seen.setdefault(id(v), v)
    return list(seen.values())


def stateful_rnn_states(model: Any) -> list[Any]:
    """Hidden-state variables of stateful RNN layers (not in ``model.variables``; Keras never saves them)."""
    from faithful_restore._architecture import iter_layers

    out: list[Any] = []
    for _path, layer in iter_layers(model):
        if getattr(layer, "stateful", False):
            out.extend(s for s in (getattr(layer, "states", None) or []) if hasattr(s, "assign"))
    return out


def reset_stateful_rnns(model: Any) -> None:
    """Sets every stateful RNN's hidden state to zeros, the state a restored model starts from."""
    for state in stateful_rnn_states(model):
        state.assign(np.zeros(tuple(state.shape), dtype=np.dtype(str(state.dtype))))


def of_model(model: Any) -> list[Any]:
    """Every variable a call, a probe or a training step can change: the model's, its metrics' and
    its stateful RNNs' hidden states."""
    metrics = [v for m in getattr(model, "metrics", []) or [] for v in m.variables]
    return unique(list(model.variables) + metrics + stateful_rnn_states(model))


@contextlib.contextmanager
def restoring(variables: Iterable[Any]) -> Iterator[None]:
    """Puts ``variables`` back bit for bit on exit (every replica of each).

    A component still holding the snapshot's buffer was not written and is left alone; any other
    is assigned its snapshot.
    """
    variables = list(variables)
    saved = [[read(c) for c in components(v)] for v in variables]
    try:
        yield
    finally:
        for v, values in zip(variables, saved):
            for c, value in zip(components(v), values):
                before = address(value)
                if before is not None and before == address(read(c)):
                    continue
                c.assign(value)
