"""Wraps third-party methods once per process, for hooks that act only inside our own blocks.

:mod:`_deferred_init` (Keras' TF variable) and :mod:`_inline_hash` (h5py's ``create_dataset``)
each wrap a method whose wrapper checks thread-local state and otherwise calls the original.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

_lock = threading.Lock()
_wrapped: set[tuple[type, str]] = set()


def wrap_once(owner: type, wrappers: dict[str, Callable[[Any], Any]]) -> bool:
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
