"""Builds a deserialized ``keras.Sequential`` once, instead of once per layer.

Keras' ``Sequential.from_config`` calls ``add(layer)`` for each saved layer, and every ``add``
rebuilds the whole model: a new functional graph that calls every layer added so far on symbolic
inputs. Loading n layers therefore makes n*(n+1)/2 symbolic layer calls; at 72 layers that was
0.5 s of a load beyond creating the variables, and ``load_model`` pays it too. Inside
:func:`once`, a ``Sequential`` (the class itself, not a subclass, which may rely on its own
``add``) created by ``from_config`` on the current thread takes its layers without rebuilding,
and is built once when they are all in, exactly as Keras builds it after its last ``add``: the
layers still build in order, each creating its variables and drawing its initializers in the same
order as before, so the model, its weights and every random generator end up as Keras' own
loading leaves them. What differs is only the count of stale symbolic graphs left on each layer:
one instead of one per later layer, none of which the loaded model uses.
"""

from __future__ import annotations

import contextlib
import inspect
import threading
from collections.abc import Iterator
from typing import Any

from faithful_restore import _hooks

_local = threading.local()


def _deferring() -> set[int] | None:
    return getattr(_local, "models", None)


def _claiming_init(original: Any) -> Any:
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        models = _deferring()
        # The first Sequential created by the from_config running on this thread is its model;
        # claimed before Keras' __init__ runs so nothing created inside it can take the claim.
        if models is not None and getattr(_local, "claim", False) and type(self) is _sequential():
            _local.claim = False
            models.add(id(self))
        original(self, *args, **kwargs)

    return __init__


def _deferring_add(original: Any) -> Any:
    def add(self: Any, layer: Any, rebuild: bool = True) -> Any:
        models = _deferring()
        if rebuild and models is not None and id(self) in models:
            rebuild = False
        return original(self, layer, rebuild=rebuild)

    return add


def _building_once(original: Any) -> Any:
    function = original.__func__  # a classmethod: call it with the class it was called on

    def from_config(cls: Any, config: Any, custom_objects: Any = None) -> Any:
        models = _deferring()
        if models is None or cls is not _sequential():
            return function(cls, config, custom_objects)
        outer_claim = getattr(_local, "claim", False)
        _local.claim = True
        before = set(models)
        try:
            model = function(cls, config, custom_objects)
        finally:
            _local.claim = outer_claim
            claimed = models - before
            models -= claimed
        # Keras' from_config has built the model already when the config names its input shape;
        # otherwise build it as the last add() would have.
        if claimed and model._functional is None and model._layers:
            model._maybe_rebuild()
        return model

    return classmethod(from_config)


def _sequential() -> Any:
    from keras.src.models.sequential import Sequential

    return Sequential


def _install() -> bool:
    """Wraps Keras' Sequential once; False when this Keras lacks the expected methods."""
    try:
        sequential = _sequential()
    except ImportError:
        return False
    if not callable(getattr(sequential, "_maybe_rebuild", None)):
        return False
    try:
        if "rebuild" not in inspect.signature(sequential.add).parameters:
            return False
    except (TypeError, ValueError):
        return False
    return _hooks.wrap_once(
        sequential, {"__init__": _claiming_init, "add": _deferring_add, "from_config": _building_once}
    )


@contextlib.contextmanager
def once() -> Iterator[None]:
    """Within the block, Sequential models that Keras deserializes on this thread build once."""
    if _deferring() is not None or not _install():
        yield
        return
    _local.models = set()
    try:
        yield
    finally:
        _local.models = None
        _local.claim = False
