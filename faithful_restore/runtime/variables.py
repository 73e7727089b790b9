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

from faithful_restore.runtime.keras_internals import iter_layers


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


def _local_cpu(tensor: Any) -> bool:
    device = str(getattr(tensor, "device", "")).lower()
    return "cpu" in device and ("/job:" not in device or "/job:localhost" in device)


def same_buffer(a: Any, b: Any) -> bool | None:
    """Whether two tensors share one buffer; None when that cannot be observed without a copy.

    Both host views stay alive while they are compared, and a second view of ``a`` must alias the
    first (NumPy aliases local CPU tensors; any copying conversion makes the answer None).
    """
    try:
        if not (_local_cpu(a) and _local_cpu(b)):
            return None
        view_a, again, view_b = np.asarray(a), np.asarray(a), np.asarray(b)
        if view_a.ctypes.data != again.ctypes.data or not view_a.nbytes:
            return None
        return bool(view_a.ctypes.data == view_b.ctypes.data)
    except Exception:  # noqa: BLE001 - unobservable: callers take the safe path
        return None


def unique(variables: Iterable[Any]) -> list[Any]:
    seen: dict[int, Any] = {}
    for v in variables:
        seen.setdefault(id(v), v)
    return list(seen.values())


def stateful_rnn_states(model: Any) -> list[Any]:
    """Hidden-state variables of stateful RNN layers (not in ``model.variables``; Keras never saves them)."""
    return [s for _path, layer in iter_layers(model) for s in rnn_states(layer)]


def rnn_states(layer: Any) -> list[Any]:
    """A stateful RNN layer's hidden-state variables, flattened; [] for any other layer."""
    if not getattr(layer, "stateful", False):
        return []
    import tensorflow as tf

    # Stacked cells keep nested lists ([[h1, c1], [h2, c2]]).
    return [s for s in tf.nest.flatten(list(getattr(layer, "states", None) or [])) if hasattr(s, "assign")]


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
                if same_buffer(value, read(c)):
                    continue  # never written: it still holds the snapshot's buffer
                c.assign(value)


_SLICE = 1 << 20


def _array(value: Any) -> np.ndarray:
    if hasattr(value, "assign"):
        # A variable's NumPy conversion copies it; a read tensor's array view is free.
        value = read(value)
    return np.asarray(value)


def same_bytes(a: Any, b: Any) -> bool:
    """Whether two arrays (or tensors, variables) have the same shape, dtype and bytes.

    Compares integer views slice by slice: no float64 temporaries and no ``tobytes`` copies,
    which matters for the gigabytes of weights and optimizer slots a round trip compares.
    """
    x, y = _array(a), _array(b)
    if x.shape != y.shape or x.dtype != y.dtype:
        return False
    if x.dtype.hasobject:
        return bool(np.array_equal(x, y))
    x, y = np.ascontiguousarray(x).reshape(-1).view(np.uint8), np.ascontiguousarray(y).reshape(-1).view(np.uint8)
    if x.size % 8 == 0:
        x, y = x.view(np.uint64), y.view(np.uint64)
    # In slices, so the boolean temporary stays small and a difference ends the scan early.
    return all(np.array_equal(x[i : i + _SLICE], y[i : i + _SLICE]) for i in range(0, x.size, _SLICE))
