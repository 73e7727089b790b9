"""Wraps third-party methods once per process, for hooks that act only inside our own blocks.

:mod:`_deferred_init`, :mod:`_inline_hash`, :mod:`_prefetch`, :mod:`_save_views` and
:mod:`_sequential_build` each wrap methods (of Keras, h5py or a Keras module) whose wrapper checks
thread-local state and otherwise calls the original.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

_lock = threading.Lock()
_wrapped: set[tuple[Any, str]] = set()


def wrap_once(owner: Any, wrappers: dict[str, Callable[[Any], Any]]) -> bool:
    """Replaces each named method of ``owner`` with ``wrappers[name](original)``, once per process.

    Returns False, wrapping nothing, when ``owner`` lacks one of the methods (another version of
    the library); the caller then runs without its hook.
    """
    with _lock:
        todo = {name: make for name, make in wrappers.items() if (owner, name) not in _wrapped}
        originals = {name: getattr(owner, name, None) for name in todo}
        if not all(callable(original) for original in originals.values()):
            return False
        for name, make in todo.items():
            setattr(owner, name, make(originals[name]))
            _wrapped.add((owner, name))
        return True


def keras_h5_stores() -> list[type]:
    """Keras' HDF5 weight-store classes: ``H5IOStore`` (3.10+ reads and writes through it) and,
    in earlier 3.x, the per-layer ``H5Entry``; empty when Keras' saving module is missing."""
    try:
        from keras.src.saving import saving_lib
    except ImportError:
        return []
    return [c for c in (getattr(saving_lib, n, None) for n in ("H5IOStore", "H5Entry")) if isinstance(c, type)]
