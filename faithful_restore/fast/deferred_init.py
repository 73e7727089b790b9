"""Skips Keras' weight initializers for the variables a bundle load overwrites anyway.

Inside :func:`deferred`, large numeric variables that Keras creates on the current thread start
as uninitialized memory (``tf.raw_ops.Empty``) instead of running their initializer, which the
load's assignment would replace anyway.

Fail-safe invariants:
- Only variables created inside the block, on this thread, outside any ``StatelessScope`` and
  distribution strategy, on a device whose buffer can be observed without a copy, are deferred.
- The block holds a reference to each deferred variable's empty buffer, so TensorFlow can never
  write into it in place: *any* write (``assign``, ``assign_add``, a Keras that loads through
  another method) gives the variable a new buffer. When the block ends, a variable whose buffer
  is still the empty one was never written and gets its real initializer, exactly as Keras would
  have; one whose buffer changed keeps what was written. No recorded call is trusted.
- Code that reads a deferred variable inside the block before writing it sees unspecified values,
  as it would see initializer values the load is about to overwrite. A *sparse* eager read (a
  gather) of a deferred variable inside the block would also move its buffer; the library's blocks
  only deserialize (symbolic builds) and assign, so none happens there.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Iterator
from typing import Any

from faithful_restore.fast._patch import Patch, Target, wrapper_of
from faithful_restore.runtime.variables import same_buffer

# Below this many elements running the initializer is cheap; such variables are left alone.
_MIN_ELEMENTS = 1 << 16

_local = threading.local()


class _Deferred:
    __slots__ = ("variable", "initializer", "empty")

    def __init__(self, variable: Any, initializer: Any, empty: Any) -> None:
        self.variable = weakref.ref(variable)
        self.initializer = initializer
        self.empty = empty  # held: forces copy-on-write, so a write always moves the buffer


def _pending() -> list[_Deferred] | None:
    return getattr(_local, "pending", None)


def _numeric(dtype: Any) -> bool:
    import tensorflow as tf

    try:
        d = tf.as_dtype(dtype)
    except TypeError:
        return False
    return bool(d.is_floating or d.is_integer) and not d.is_quantized


def _holds(variable: Any, empty: Any) -> bool | None:
    """Whether the Keras variable still holds ``empty``'s buffer; None when it cannot be observed."""
    import tensorflow as tf

    inner = getattr(variable, "_value", None)
    if not isinstance(inner, tf.Variable) or not hasattr(inner, "handle"):
        return None
    try:
        current = tf.raw_ops.ReadVariableOp(resource=inner.handle, dtype=inner.dtype)
    except Exception:  # noqa: BLE001
        return None
    return same_buffer(current, empty)


def _may_defer(variable: Any) -> bool:
    import tensorflow as tf

    if tf.distribute.has_strategy() or not tf.executing_eagerly():
        return False
    try:
        from keras.src.backend.common.stateless_scope import in_stateless_scope
    except ImportError:
        return False
    if in_stateless_scope():
        return False
    size = 1
    for dim in tuple(getattr(variable, "_shape", ()) or ()):
        size *= int(dim)
    return size >= _MIN_ELEMENTS and _numeric(getattr(variable, "_dtype", None))


def _deferring_init(original: Any) -> Any:
    def _initialize_with_initializer(self: Any, *args: Any, **kwargs: Any) -> Any:
        pending = _pending()
        if pending is None or len(args) != 1 or kwargs or not _may_defer(self):
            return original(self, *args, **kwargs)
        import tensorflow as tf

        try:
            empty = tf.raw_ops.Empty(shape=tuple(self._shape), dtype=tf.as_dtype(self._dtype), init=False)
        except Exception:  # noqa: BLE001 - anything unusual takes Keras' own path
            return original(self, *args, **kwargs)
        self._initialize(lambda: empty)
        if not _holds(self, empty):  # did not adopt the buffer, or unobservable: Keras' own path
            original(self, *args, **kwargs)
            return None
        pending.append(_Deferred(self, args[0], empty))
        return None

    return wrapper_of(original, _initialize_with_initializer)


def _targets() -> list[Target]:
    from keras.src.backend.tensorflow.core import Variable

    return [Target(Variable, "_initialize_with_initializer", ("self", "initializer"), _deferring_init)]


PATCH = Patch("deferred_init", _targets)


def finish(pending: list[_Deferred]) -> int:
    """Initializes every deferred variable whose buffer is still the empty one; returns how many."""
    count = 0
    for item in pending:
        variable = item.variable()
        if variable is None:
            continue
        if _holds(variable, item.empty) is not False:  # never written (or, unobservably, unknown)
            variable.assign(item.initializer(variable._shape, dtype=variable._dtype))
            count += 1
    return count


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Defers the initializers of large variables created in this block until they prove unneeded.

    On a normal exit, deferred variables that nothing wrote are initialized as Keras would have;
    on an exception nothing is initialized (the half-built model is being discarded). Nested uses
    share the outer block. With the speed switch off or an unexpected Keras, a plain block.
    """
    if _pending() is not None or not PATCH.active():
        yield
        return
    pending: list[_Deferred] = []
    _local.pending = pending
    try:
        yield
    finally:
        _local.pending = None
    finish(pending)
