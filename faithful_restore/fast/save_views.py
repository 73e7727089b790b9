"""While a bundle's weights are written, Keras hands h5py views of the variables, not copies.

Keras' HDF5 writer copies every value on its way to h5py, which only reads it: each optimizer
slot through ``variable.numpy()`` and again through ``np.array`` in the store's ``__setitem__``,
each layer weight through ``np.array``: two copies of every optimizer byte into freshly
allocated memory (figures: docs/performance.md). Inside
:func:`writing`, on the calling thread only, those two conversions return a read-only NumPy view
of a TensorFlow read of the variable instead. A read is an immutable snapshot: TensorFlow copies
a variable's buffer before updating it in place while a read of it lives, so the bytes written are
the variable's value at the moment Keras asked for it, as with the copies. Other values, other
threads and code outside the block keep Keras' behaviour, as does a Keras without these methods.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from faithful_restore.fast._patch import Patch, Target, h5_stores, wrapper_of

_local = threading.local()


def view(value: Any) -> np.ndarray | None:
    """A read-only, zero-copy array of a single-device TF or Keras variable or tensor of rank >= 1, else None."""
    import tensorflow as tf

    from faithful_restore.runtime.variables import components, read

    try:
        if isinstance(value, tf.Tensor):
            if not hasattr(value, "_numpy") or value.dtype in (tf.string, tf.resource, tf.variant):
                return None
            tensor = value
        else:
            inner = value if isinstance(value, tf.Variable) else getattr(value, "value", None)
            if not isinstance(inner, tf.Variable) or len(components(value)) != 1:
                return None
            if inner.dtype in (tf.string, tf.resource, tf.variant):
                return None
            tensor = read(inner)
        if tensor.shape.rank == 0:
            return None  # a few bytes; NumPy makes a scalar of some dtypes instead of an array
        array = np.asarray(tensor)
    except Exception:  # noqa: BLE001 - anything unusual takes Keras' copying path
        return None
    if not isinstance(array, np.ndarray):
        return None
    array.flags.writeable = False  # (a device tensor arrives as a host copy; harmless there)
    return array


def _flagged(name: str) -> Callable[[Any], Any]:
    """Wraps a method so that, inside :func:`writing`, ``_local.<name>`` is set while it runs."""

    def make(original: Any) -> Any:
        def method(self: Any, *args: Any, **kwargs: Any) -> Any:
            if not getattr(_local, "active", False) or getattr(_local, name, False):
                return original(self, *args, **kwargs)
            setattr(_local, name, True)
            try:
                return original(self, *args, **kwargs)
            finally:
                setattr(_local, name, False)

        return wrapper_of(original, method)

    return make


def _viewing_numpy(original: Any) -> Any:
    def numpy(self: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(_local, "in_optimizer_save", False) and not args and not kwargs:
            found = view(self)
            if found is not None:
                return found
        return original(self, *args, **kwargs)

    return wrapper_of(original, numpy)


def _viewing_convert(original: Any) -> Any:
    def convert_to_numpy(*args: Any, **kwargs: Any) -> Any:
        if getattr(_local, "in_store_setitem", False) and len(args) == 1 and not kwargs:
            x = args[0]
            if type(x) is np.ndarray:
                return x  # h5py only reads it
            found = view(x)
            if found is not None:
                return found
        return original(*args, **kwargs)

    return wrapper_of(original, convert_to_numpy)


def _targets() -> list[Target]:
    from keras.src import backend
    from keras.src.backend.tensorflow.core import Variable
    from keras.src.optimizers.base_optimizer import BaseOptimizer

    return [
        *[
            Target(store, "__setitem__", params, _flagged("in_store_setitem"))
            for store, params in h5_stores("__setitem__")
        ],
        Target(backend, "convert_to_numpy", ("x",), _viewing_convert),
        Target(BaseOptimizer, "save_own_variables", ("self", "store"), _flagged("in_optimizer_save")),
        Target(Variable, "numpy", ("self",), _viewing_numpy),
    ]


PATCH = Patch("save_views", _targets)


@contextlib.contextmanager
def writing() -> Iterator[None]:
    """Within the block, this thread's Keras HDF5 writes read the variables without copying them."""
    if getattr(_local, "active", False) or not PATCH.active():
        yield
        return
    _local.active = True
    try:
        yield
    finally:
        _local.active = False
