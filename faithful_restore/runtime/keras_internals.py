"""The few private Keras attributes the library's *results* depend on, each behind one accessor.

Keras 3 has no public API for these; each accessor checks the attribute and raises
:class:`BundleError` naming the Keras version instead of an ``AttributeError`` from deep inside.
tests/test_keras_internals.py pins the behaviour each relies on, so a Keras that changes one
fails there first. (Speed-only patches live in :mod:`faithful_restore.fast`.)
"""

from __future__ import annotations

from typing import Any

from faithful_restore.errors import BundleError


def _missing(what: str, obj: Any) -> BundleError:
    import keras

    return BundleError(
        f"this Keras ({keras.__version__}) has no {what} on {type(obj).__name__}, which faithful_restore "
        "needs; install a Keras in the range faithful_restore declares (see README, Requirements)."
    )


def direct_sublayers(layer: Any) -> list[Any]:
    """The layers tracked directly by ``layer`` (one level down), in tracking order."""
    flatten = getattr(layer, "_flatten_layers", None)
    if not callable(flatten):
        raise _missing("_flatten_layers()", layer)
    return list(flatten(include_self=False, recursive=False))


def own_variables(layer: Any) -> list[Any]:
    """The variables ``layer`` created itself (not its sublayers'): trainable first."""
    try:
        return list(layer._trainable_variables) + list(layer._non_trainable_variables)
    except AttributeError:
        raise _missing("_trainable_variables/_non_trainable_variables", layer) from None


def optimizer_built_on(optimizer: Any) -> list[Any] | None:
    """The variables a built optimizer was built on, in its slot order; None if not built."""
    if not getattr(optimizer, "built", False):
        return None
    built_on = getattr(optimizer, "_trainable_variables", None)
    if built_on is None:
        raise _missing("_trainable_variables", optimizer)
    return list(built_on)


def set_initial_epoch(model: Any, epoch: int | None) -> None:
    """Makes the running ``fit`` start at ``epoch`` (what Keras' own BackupAndRestore sets)."""
    if not hasattr(model, "_initial_epoch"):
        raise _missing("_initial_epoch", model)
    model._initial_epoch = epoch


def initial_epoch(model: Any) -> int | None:
    if not hasattr(model, "_initial_epoch"):
        raise _missing("_initial_epoch", model)
    return model._initial_epoch


def iter_layers(model: Any) -> list[tuple[str, Any]]:
    """All layers below ``model`` (nested models included) as (path, layer), path 'outer/inner'."""
    out: list[tuple[str, Any]] = []

    def walk(layer: Any, prefix: str) -> None:
        children = direct_sublayers(layer)
        for child in children:
            path = f"{prefix}/{child.name}" if prefix else child.name
            out.append((path, child))
            walk(child, path)

    walk(model, "")
    return out
