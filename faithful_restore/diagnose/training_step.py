"""One training step on a model without changing it: what continued training would do next.

The caller's model is snapshotted (every variable, per replica, plus metric state) and put back
afterwards, and the step uses a copy of the optimizer carrying the original's state, so weights,
optimizer state, iterations and random state are the same after the call as before.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from faithful_restore.fast import deferred_init as _deferred_init
from faithful_restore.runtime import keras_internals as _keras_internals
from faithful_restore.runtime.variables import components, of_model, read, reset_stateful_rnns, restoring


def is_distributed(model: Any) -> bool:
    return any(len(components(v)) > 1 for v in model.variables)


@contextlib.contextmanager
def preserved(model: Any) -> Iterator[None]:
    """Restores every variable of ``model`` (and its metrics) on exit."""
    with restoring(of_model(model)):
        yield


def loss_for(model: Any, loss_fn: Callable[..., Any] | None) -> Callable[..., Any] | None:
    """The loss of one step: ``loss_fn(y, y_pred)`` or the compiled loss, plus model.losses."""
    import tensorflow as tf

    if loss_fn is not None:

        def custom(x: Any, y: Any, y_pred: Any) -> Any:
            extra = tf.add_n([tf.cast(v, tf.float32) for v in model.losses]) if model.losses else 0.0
            return tf.cast(loss_fn(y, y_pred), tf.float32) + extra

        return custom
    if getattr(model, "compiled", False) and getattr(model, "loss", None) is not None:
        # Keras 3.4 added compute_loss(training=); before it, the loss is always the training one.
        try:
            takes_training = "training" in inspect.signature(model.compute_loss).parameters
        except (TypeError, ValueError):
            takes_training = False
        if takes_training:
            return lambda x, y, y_pred: model.compute_loss(x=x, y=y, y_pred=y_pred, training=True)
        return lambda x, y, y_pred: model.compute_loss(x=x, y=y, y_pred=y_pred)
    return None


def _is_sparse(loss_spec: Any, name: str | None, index: int) -> bool:
    if isinstance(loss_spec, dict):
        loss_spec = loss_spec.get(name)
    elif isinstance(loss_spec, (list, tuple)):
        loss_spec = loss_spec[index] if index < len(loss_spec) else None
    label = loss_spec if isinstance(loss_spec, str) else type(loss_spec).__name__ + getattr(loss_spec, "__name__", "")
    return "sparse" in label.lower()


def targets_like(model: Any, outputs: Any, seed: int = 0) -> Any:
    """Seeded targets shaped like ``outputs``: class ids for sparse losses, shifted values otherwise."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    loss_spec = getattr(model, "loss", None)
    names = list(outputs) if isinstance(outputs, dict) else None
    flat = tf.nest.flatten(outputs)
    out = []
    for i, tensor in enumerate(flat):
        array = np.asarray(tensor)
        name = sorted(names)[i] if names else None
        if _is_sparse(loss_spec, name, i):
            out.append(rng.integers(0, max(array.shape[-1], 1), size=array.shape[:-1]))
        else:
            shifted = array.astype(np.float32) + 0.5 * rng.normal(size=array.shape).astype(np.float32)
            out.append(np.clip(shifted, 0.0, 1.0) if "crossentropy" in str(loss_spec) else shifted)
    return tf.nest.pack_sequence_as(outputs, out)


def _step_targets(optimizer: Any, model: Any) -> list[Any]:
    """The variables a step updates: those ``optimizer`` was built on, else every trainable one."""
    built_on = _keras_internals.optimizer_built_on(optimizer)
    return list(built_on) if built_on else list(model.trainable_variables)


def _step_optimizer(optimizer: Any, model: Any) -> tuple[Any, list[Any]]:
    """A fresh optimizer of the same config, built on ``model`` like ``optimizer`` was."""
    copy = optimizer.__class__.from_config(optimizer.get_config())
    targets = _step_targets(optimizer, model)
    # Its slots are overwritten from the original before every step (_load_state).
    with _deferred_init.deferred():
        copy.build(targets)
        if optimizer.built:
            _load_state(optimizer, copy)
    if optimizer.built and len(optimizer.variables) != len(copy.variables):
        raise ValueError(f"optimizer copy has {len(copy.variables)} variables, the original {len(optimizer.variables)}")
    return copy, targets


def _load_state(optimizer: Any, copy: Any) -> None:
    for s, d in zip(optimizer.variables, copy.variables):
        if tuple(s.shape) == tuple(d.shape):
            d.assign(read(s))  # tensor to variable: one copy, no NumPy round trip


def next_steps(
    model: Any, optimizer: Any, x: Any, y: Any, loss: Callable[..., Any], times: int = 1, in_place: bool = False
) -> list[list[np.ndarray]]:
    """Runs one training step ``times`` times, each from the same snapshot of ``model``.

    The step uses one copy of the optimizer (built once, its state reloaded from ``optimizer``
    before every run); the model is put back after each run. Returns the updated trainable
    weights of every run (several runs measure the step's noise floor). With ``in_place`` (a
    model and optimizer about to be discarded; one run) the step changes them directly.
    """
    import tensorflow as tf

    if in_place:
        if times != 1:
            raise ValueError("an in-place step runs once")
        step_opt, targets = optimizer, _step_targets(optimizer, model)
    else:
        step_opt, targets = _step_optimizer(optimizer, model)
    results = []
    for run in range(times):
        with contextlib.nullcontext() if in_place else preserved(model):
            # Stateful RNNs step from the zero state a restored model starts from (as the probe runs).
            reset_stateful_rnns(model)
            if not in_place and (run or not optimizer.built):  # _step_optimizer loaded the first run's
                _load_state(optimizer, step_opt)
            with tf.GradientTape() as tape:
                y_pred = model(x, training=True)
                value = loss(x, y, y_pred)
            grads = tape.gradient(value, targets)
            step_opt.apply_gradients([(g, v) for g, v in zip(grads, targets) if g is not None])
            results.append([read(v) for v in model.trainable_variables])
    return [[np.asarray(t) for t in run] for run in results]
