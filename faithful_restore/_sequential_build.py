"""Builds a deserialized ``keras.Sequential`` once, instead of once per layer.

Keras' ``Sequential.from_config`` calls ``add(layer)`` for each saved layer, and every ``add``
rebuilds the whole model: a new functional graph that calls every layer added so far on symbolic
inputs. Loading n layers therefore makes n*(n+1)/2 symbolic layer calls; at 72 layers that was
0.5 s of a load beyond creating the variables, and ``load_model`` pays it too. Inside
:func:`once`, a ``Sequential`` (the class itself, not a subclass, which may rely on its own
``add``) created by ``from_config`` on the current thread takes its layers without rebuilding,
and is built once when they are all in, as Keras builds it after its last ``add``. This applies
only when every saved layer carries its build config (Keras saves one for every built layer):
Keras then builds each layer as it deserializes it, in order, so the variables, the initializer
draws and every random generator end up as Keras' own loading leaves them, and the single build
only makes symbolic calls. Other configs take Keras' own path. What differs is only the count of
stale symbolic graphs left on each layer: one instead of one per later layer, none of which the
loaded model uses.
"""

from __future__ import annotations

import contextlib
import inspect
import threading
from collections.abc import Iterator
from typing import Any

from faithful_restore import _hooks

_local = threading.local()


def _deferring() -> dict[int, Any] | None:
    return getattr(_local, "models", None)


def _looking_like(original: Any, wrapper: Any) -> Any:
    """``wrapper`` with ``original``'s name, doc and signature.

    Keras inspects ``__init__`` (``Operation.__new__`` records constructor arguments) with both
    ``getfullargspec`` and ``signature``; ``__signature__`` answers both alike, where
    ``functools.wraps`` (``__wrapped__``) would answer only the latter.
    """
    for attribute in ("__module__", "__name__", "__qualname__", "__doc__"):
        setattr(wrapper, attribute, getattr(original, attribute, None))
    try:
        wrapper.__signature__ = inspect.signature(original)
    except (TypeError, ValueError):
        pass
    return wrapper


def _claiming_init(original: Any) -> Any:
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        models = _deferring()
        # The first Sequential created by the from_config running on this thread is its model;
        # claimed before Keras' __init__ runs so nothing created inside it can take the claim.
        if models is not None and getattr(_local, "claim", False) and type(self) is _sequential():
            _local.claim = False
            models[id(self)] = self
        original(self, *args, **kwargs)

    return _looking_like(original, __init__)


def _deferring_add(original: Any) -> Any:
    def add(self: Any, layer: Any, rebuild: bool = True) -> Any:
        models = _deferring()
        if rebuild and models is not None and id(self) in models:
            rebuild = False
        return original(self, layer, rebuild=rebuild)

    return _looking_like(original, add)


def _all_built_on_deserialization(config: Any) -> bool:
    """Whether every saved layer is built as it is deserialized (it carries its build config).

    Keras builds such a layer right after constructing it, so building the model once afterwards
    only makes symbolic calls. A layer without one would be built by the next ``add`` instead,
    before later layers are constructed (constructors and builds may both draw random seeds), so
    such configs, and legacy ones, take Keras' own path to keep its exact order.
    """
    layers = config.get("layers") if isinstance(config, dict) else None
    if not isinstance(layers, list):
        return False
    for layer in layers:
        if not isinstance(layer, dict) or "module" not in layer:
            return False
        if layer.get("class_name") != "InputLayer" and not layer.get("build_config"):
            return False
    return True


def _building_once(original: Any) -> Any:
    function = original.__func__  # a classmethod: call it with the class it was called on

    def from_config(cls: Any, config: Any, custom_objects: Any = None) -> Any:
        models = _deferring()
        if models is None or cls is not _sequential() or not _all_built_on_deserialization(config):
            return function(cls, config, custom_objects)
        outer_claim = getattr(_local, "claim", False)
        _local.claim = True
        before = set(models)
        try:
            model = function(cls, config, custom_objects)
        finally:
            _local.claim = outer_claim
            claimed = [models.pop(key) for key in set(models) - before]
        # Keras' from_config has built the model already when the config names its input shape;
        # otherwise build it as the last add() would have. Any model claimed here is built, even
        # one a future Keras might create before the model it returns.
        for sequential in claimed:
            if sequential._functional is None and sequential._layers:
                sequential._maybe_rebuild()
        return model

    return classmethod(_looking_like(function, from_config))


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
    _local.models = {}
    try:
        yield
    finally:
        _local.models = None
        _local.claim = False
