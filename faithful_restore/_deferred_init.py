"""Skips Keras' weight initializers for the variables a bundle load overwrites anyway.

Rebuilding a model runs every layer's initializer (a random draw over every kernel) only for the
saved values to replace them: at 100M parameters that was 0.8 s of a 2.4 s load. Inside
:func:`deferred`, large numeric variables created by the current thread start as uninitialized
memory (``tf.raw_ops.Empty``) instead. Assigning a variable replaces its buffer rather than
copying into it, so that memory is never touched and costs nothing; zeros, used before, cost a
fill of every byte (0.3 s at 100M) only to be thrown away. Every Keras ``assign`` is recorded, and
when the block ends each deferred variable that was never assigned gets its real initializer, so
the model ends up exactly as Keras' own loading leaves it. Code that reads a variable before the
load assigns it (inside the block) sees unspecified values, as it would see the initializer's
values that the load is about to overwrite. The switch is thread-local: other threads building
models meanwhile are unaffected.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Iterator
from typing import Any

from faithful_restore import _hooks

# Below this many elements running the initializer is cheap; such variables are left alone.
_MIN_ELEMENTS = 1 << 16

_local = threading.local()


def _pending() -> dict[int, tuple[Any, Any]] | None:
    return getattr(_local, "pending", None)


def _numeric(dtype: Any) -> bool:
    import tensorflow as tf

    try:
        d = tf.as_dtype(dtype)
    except TypeError:
        return False
    return bool(d.is_floating or d.is_integer) and not d.is_quantized


def _deferring_init(original: Any) -> Any:
    def _initialize_with_initializer(self: Any, initializer: Any) -> None:
        pending = _pending()
        shape = tuple(getattr(self, "_shape", ()) or ())
        size = 1
        for dim in shape:
            size *= int(dim)
        if pending is None or size < _MIN_ELEMENTS or not _numeric(self._dtype):
            original(self, initializer)
            return
        import tensorflow as tf

        dtype = tf.as_dtype(self._dtype)
        self._initialize(lambda: tf.raw_ops.Empty(shape=shape, dtype=dtype, init=False))
        pending[id(self)] = (weakref.ref(self), initializer)

    return _initialize_with_initializer


def _tracking_assign(original: Any) -> Any:
    def assign(self: Any, value: Any) -> Any:
        result = original(self, value)
        pending = _pending()
        if pending:
            pending.pop(id(self), None)
        return result

    return assign


def _install() -> bool:
    """Wraps Keras' TF variable once; False when this Keras lacks the expected hooks."""
    try:
        from keras.src.backend.tensorflow.core import Variable
    except ImportError:
        return False
    return _hooks.wrap_once(Variable, {"_initialize_with_initializer": _deferring_init, "assign": _tracking_assign})


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Defers the initializers of large variables created in this block until they prove unneeded.

    On a normal exit, deferred variables that were not assigned are initialized as Keras would
    have; on an exception nothing is initialized (the half-built model is being discarded).
    Nested uses share the outer block.
    """
    if _pending() is not None or not _install():
        yield
        return
    pending: dict[int, tuple[Any, Any]] = {}
    _local.pending = pending
    try:
        yield
    finally:
        _local.pending = None
    for ref, initializer in pending.values():
        variable = ref()
        if variable is not None:
            variable.assign(initializer(variable._shape, dtype=variable._dtype))
