"""The layers' random state (Keras ``SeedGenerator`` states, e.g. Dropout's).

Neither ``.keras`` files nor ``tf.train.Checkpoint(model=...)`` keep it, so a restored model
would draw different dropout masks on its next training step. The states are a few integers, so
they live in the manifest. Their variable paths change across a load (``seed_generator`` vs
``seed_generator_1``), so they are matched by position.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from faithful_restore.errors import BundleError


def seed_variables(model: Any) -> list[Any]:
    return [v for v in model.variables if v.name == "seed_generator_state"]


def components(variable: Any) -> list[Any]:
    """The per-replica tf.Variables behind a (possibly distributed) Keras variable."""
    inner = getattr(variable, "value", variable)
    values = getattr(inner, "values", None)
    if isinstance(values, tuple) and values:
        return list(values)
    return [variable]


def read(variable: Any) -> Any:
    """The variable's current value as an immutable TensorFlow tensor.

    A read shares the variable's buffer instead of copying it; TensorFlow copies on the next
    in-place update (reads have value semantics), so snapshotting gigabytes of weights is free
    and costs one copy only for variables that actually change.
    """
    import tensorflow as tf

    inner = variable if isinstance(variable, tf.Variable) else getattr(variable, "value", variable)
    return tf.identity(inner)


def _stateful_rnn_states(model: Any) -> list[Any]:
    from faithful_restore._architecture import iter_layers

    out: list[Any] = []
    for _path, layer in iter_layers(model):
        if getattr(layer, "stateful", False):
            out.extend(s for s in (getattr(layer, "states", None) or []) if hasattr(s, "assign"))
    return out


def reset_stateful_rnns(model: Any) -> None:
    for state in _stateful_rnn_states(model):
        state.assign(np.zeros(tuple(state.shape), dtype=np.dtype(str(state.dtype))))


@contextlib.contextmanager
def preserved(model: Any) -> Iterator[None]:
    """Puts back, on exit, the state that running a model in inference mode can change.

    Some layers draw from their seed generator even in inference mode (an LSTM with dropout
    draws its mask before checking ``training``), and stateful RNNs advance their hidden state on
    every call; running a probe must change neither.
    """
    with restoring(seed_variables(model) + _stateful_rnn_states(model)):
        yield


@contextlib.contextmanager
def restoring(variables: list[Any]) -> Iterator[None]:
    """Puts ``variables`` back to their current values on exit (every replica of each)."""
    saved = [[read(c) for c in components(v)] for v in variables]
    try:
        yield
    finally:
        for v, values in zip(variables, saved):
            for c, value in zip(components(v), values):
                c.assign(value)


def capture(model: Any) -> list[dict[str, Any]]:
    return [
        {"path": v.path, "dtype": str(v.dtype), "value": [int(x) for x in np.asarray(v).reshape(-1)]}
        for v in seed_variables(model)
    ]


def restore(model: Any, records: list[dict[str, Any]]) -> None:
    targets = seed_variables(model)
    if len(targets) != len(records):
        raise BundleError(
            f"the restored model has {len(targets)} random seed generators, the bundle saved "
            f"{len(records)}; the architecture differs from the saved one."
        )
    for target, record in zip(targets, records):
        try:
            value = np.asarray(record["value"], dtype=np.dtype(str(target.dtype)))
        except (OverflowError, ValueError, TypeError) as e:
            raise BundleError(
                f"seed generator {record.get('path')!r}: the saved value {record.get('value')!r} does not fit "
                f"{target.dtype}; the bundle is damaged."
            ) from e
        if value.shape != tuple(target.shape):
            raise BundleError(
                f"seed generator {record['path']}: saved {list(value.shape)} values, the restored "
                f"model holds {list(target.shape)}; the bundle is damaged or from another Keras."
            )
        target.assign(value)
