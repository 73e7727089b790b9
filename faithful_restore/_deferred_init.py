"""Skips Keras' weight initializers for the variables a bundle load overwrites anyway.

Rebuilding a model runs every layer's initializer (a random draw over every kernel) only for the
saved values to replace them: at 100M parameters that was 0.8 s of a 2.4 s load. Inside
:func:`deferred`, large numeric variables created by the current thread start as zeros instead.
Zeros rather than uninitialized memory (``tf.raw_ops.Empty``): the memory has to be touched once
either way, and TensorFlow's multi-threaded fill, running while the weights are being hashed,
measured faster than faulting the pages in during the single-threaded copy of each assignment.
Every Keras ``assign`` is recorded, and when the block ends, each deferred variable that was never
assigned gets its real initializer, so the model ends up exactly as Keras' own loading leaves it.
The switch is thread-local: other threads building models meanwhile are unaffected.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Iterator
from typing import Any

# Below this many elements running the initializer is cheap; such variables are left alone.
_MIN_ELEMENTS = 1 << 16

_local = threading.local()
_install_lock = threading.Lock()
_installed = False


def _pending() -> dict[int, tuple[Any, Any]] | None:
    return getattr(_local, "pending", None)


def _numeric(dtype: Any) -> bool:
    import tensorflow as tf

    try:
        d = tf.as_dtype(dtype)
    except TypeError:
        return False
    return bool(d.is_floating or d.is_integer) and not d.is_quantized


def _install() -> bool:
    """Wraps Keras' TF variable once; False when this Keras lacks the expected hooks."""
    global _installed
    with _install_lock:
        if _installed:
            return True
        try:
            from keras.src.backend.tensorflow.core import Variable
        except ImportError:
            return False
        original_init = getattr(Variable, "_initialize_with_initializer", None)
        original_assign = getattr(Variable, "assign", None)
        if not callable(original_init) or not callable(original_assign):
            return False

        def _initialize_with_initializer(self: Any, initializer: Any) -> None:
            pending = _pending()
            shape = tuple(getattr(self, "_shape", ()) or ())
            size = 1
            for dim in shape:
                size *= int(dim)
            if pending is None or size < _MIN_ELEMENTS or not _numeric(self._dtype):
                original_init(self, initializer)
                return
            import tensorflow as tf

            dtype = tf.as_dtype(self._dtype)
            self._initialize(lambda: tf.zeros(shape, dtype=dtype))
            pending[id(self)] = (weakref.ref(self), initializer)

        def assign(self: Any, value: Any) -> Any:
            result = original_assign(self, value)
            pending = _pending()
            if pending:
                pending.pop(id(self), None)
            return result

        Variable._initialize_with_initializer = _initialize_with_initializer
        Variable.assign = assign
        _installed = True
        return True


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
