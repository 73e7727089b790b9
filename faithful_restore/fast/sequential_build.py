"""Builds a deserialized ``keras.Sequential`` once, instead of once per layer.

Keras' ``Sequential.from_config`` calls ``add(layer)`` for each saved layer, and every ``add``
rebuilds the whole model: a new functional graph that calls every layer added so far on symbolic
inputs. Loading n layers therefore makes n*(n+1)/2 symbolic layer calls, quadratic in the depth,
and ``load_model`` pays it too (figures: docs/performance.md). Inside
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
import threading
from collections.abc import Iterator
from typing import Any

from faithful_restore.fast._patch import Patch, Target, wrapper_of

_local = threading.local()


def _deferring() -> dict[int, Any] | None:
    return getattr(_local, "models", None)


def _claiming_init(original: Any) -> Any:
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        models = _deferring()
        # The first Sequential created by the from_config running on this thread is its model;
        # claimed before Keras' __init__ runs so nothing created inside it can take the claim.
        if models is not None and getattr(_local, "claim", False) and type(self) is _sequential():
            _local.claim = False
            models[id(self)] = self
        original(self, *args, **kwargs)

    return wrapper_of(original, __init__)


def _deferring_add(original: Any) -> Any:
    def add(self: Any, *args: Any, **kwargs: Any) -> Any:
        models = _deferring()
        # Only the plain call from_config makes, add(layer), is changed.
        if models is not None and id(self) in models and len(args) == 1 and not kwargs:
            return original(self, args[0], rebuild=False)
        return original(self, *args, **kwargs)

    return wrapper_of(original, add)


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


def _building_once(function: Any) -> Any:
    """Wraps the function under the ``from_config`` classmethod (called with the class)."""

    def from_config(cls: Any, *args: Any, **kwargs: Any) -> Any:
        models = _deferring()
        config = args[0] if args else kwargs.get("config")
        if models is None or cls is not _sequential() or not _all_built_on_deserialization(config):
            return function(cls, *args, **kwargs)
        outer_claim = getattr(_local, "claim", False)
        _local.claim = True
        before = set(models)
        try:
            model = function(cls, *args, **kwargs)
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

    return wrapper_of(function, from_config)


def _sequential() -> Any:
    from keras.src.models.sequential import Sequential

    return Sequential


def _targets() -> list[Target]:
    import keras

    from faithful_restore.runtime.supported import parse

    # Keras 3.3's Sequential.build compares the saved (JSON list) input shape with the InputLayer's
    # tuple without standardizing it, so a model not built by add() cannot be built from its config.
    if parse(keras.__version__) < (3, 5):
        raise RuntimeError(f"verified from Keras 3.5 on, found {keras.__version__}")
    sequential = _sequential()
    if not callable(getattr(sequential, "_maybe_rebuild", None)):
        raise AttributeError("Sequential._maybe_rebuild is missing")
    return [
        Target(sequential, "__init__", ("self", "layers", "trainable", "name"), _claiming_init),
        Target(sequential, "add", ("self", "layer", "rebuild"), _deferring_add),
        Target(sequential, "from_config", ("config", "custom_objects"), _building_once),
    ]


PATCH = Patch("sequential_build", _targets)


@contextlib.contextmanager
def once() -> Iterator[None]:
    """Within the block, Sequential models that Keras deserializes on this thread build once."""
    if _deferring() is not None or not PATCH.active():
        yield
        return
    _local.models = {}
    try:
        yield
    finally:
        _local.models = None
        _local.claim = False
