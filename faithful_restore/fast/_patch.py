"""One switch and one mechanism for every replacement of a private third-party method.

Invariants:
- A :class:`Patch` replaces all of its methods or none. It installs lazily, the first time a
  block that needs it starts, and only when :func:`enabled` is true at that moment.
- Before installing, each target is checked once: the owner must import, the attribute must be
  callable and its parameter names must be exactly the ones the wrapper was written against.
  Anything else keeps the patch off for the process (a debug log line, never an exception).
- Wrappers take ``*args, **kwargs``, call the original with them unchanged outside our blocks and
  carry the original's name, doc and signature (``functools.wraps`` plus ``__signature__``).
- With ``FAITHFUL_RESTORE_FAST=0`` at use, every installed patch is removed again: no Keras,
  TensorFlow or h5py attribute stays replaced.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

ENV = "FAITHFUL_RESTORE_FAST"
_OFF = frozenset({"0", "false", "no", "off"})
_MISSING = object()

log = logging.getLogger("faithful_restore.fast")
_lock = threading.RLock()
_registry: list[Patch] = []


def enabled() -> bool:
    """Whether speed patches may be used now (``FAITHFUL_RESTORE_FAST``, read at every call)."""
    return os.environ.get(ENV, "1").strip().lower() not in _OFF


@dataclass(frozen=True)
class Target:
    """One method to replace: ``owner.name``, expected to take exactly ``params``.

    ``params`` are the parameter names ``inspect.signature(getattr(owner, name))`` shows (so a
    classmethod's list has no ``cls``). ``make(original)`` returns the replacement; for a
    classmethod it receives and must return the underlying function.
    """

    owner: Any
    name: str
    params: tuple[str, ...]
    make: Callable[[Any], Any]


def wrapper_of(original: Any, wrapper: Callable[..., Any]) -> Callable[..., Any]:
    """``wrapper`` dressed as ``original``: ``functools.wraps`` plus an explicit ``__signature__``.

    Keras inspects some methods (e.g. ``__init__`` through ``getfullargspec``, which ignores
    ``__wrapped__``); ``__signature__`` answers both inspection routes alike.
    """
    functools.wraps(original)(wrapper)
    try:
        wrapper.__signature__ = inspect.signature(original)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        pass
    return wrapper


def _params(function: Any) -> tuple[str, ...] | None:
    try:
        return tuple(inspect.signature(function).parameters)
    except (TypeError, ValueError):
        return None


class Patch:
    """A named group of method replacements that install together or not at all."""

    def __init__(self, name: str, targets: Callable[[], Sequence[Target]]) -> None:
        self.name = name
        self._targets = targets
        self._checked: list[Target] | None = None  # the targets, once they passed the check
        self._refused = False
        self._installed: list[tuple[Any, str, Any]] = []  # (owner, name, raw attribute or _MISSING)
        with _lock:
            _registry.append(self)

    def _check(self) -> list[Target] | None:
        if self._checked is not None or self._refused:
            return self._checked
        try:
            targets = list(self._targets())
        except Exception as e:  # noqa: BLE001 - a missing or moved module: the patch stays off
            log.debug("speed patch %s off: %s: %s", self.name, type(e).__name__, e)
            self._refused = True
            return None
        for t in targets:
            found = getattr(t.owner, t.name, None)
            params = _params(found) if callable(found) else None
            if params != t.params:
                log.debug(
                    "speed patch %s off: %s.%s has parameters %s, expected %s",
                    self.name,
                    getattr(t.owner, "__name__", t.owner),
                    t.name,
                    params,
                    t.params,
                )
                self._refused = True
                return None
        self._checked = targets
        return targets

    def available(self) -> bool:
        """Whether this Keras/TensorFlow/h5py has every method the patch expects, as expected."""
        with _lock:
            return self._check() is not None

    def active(self) -> bool:
        """Installs the patch if allowed and possible; whether it is in place now.

        With the switch off, removes every installed patch first (so a process that turns the
        switch off mid-way is left with the libraries' own methods).
        """
        if not enabled():
            uninstall_all()
            return False
        with _lock:
            if self._installed:
                return True
            targets = self._check()
            if targets is None:
                return False
            for t in targets:
                raw = t.owner.__dict__.get(t.name, _MISSING) if hasattr(t.owner, "__dict__") else _MISSING
                # The descriptor itself, own or inherited: a classmethod or staticmethod stays one.
                descriptor = inspect.getattr_static(t.owner, t.name)
                if isinstance(descriptor, classmethod):
                    replacement: Any = classmethod(t.make(descriptor.__func__))
                elif isinstance(descriptor, staticmethod):
                    replacement = staticmethod(t.make(descriptor.__func__))
                else:
                    replacement = t.make(getattr(t.owner, t.name))
                setattr(t.owner, t.name, replacement)
                self._installed.append((t.owner, t.name, raw))
            log.debug("speed patch %s installed", self.name)
            return True

    def installed(self) -> bool:
        with _lock:
            return bool(self._installed)

    def uninstall(self) -> None:
        """Puts every replaced attribute back as it was (removed again if it was inherited)."""
        with _lock:
            for owner, name, raw in reversed(self._installed):
                if raw is _MISSING:
                    if name in getattr(owner, "__dict__", {}):
                        delattr(owner, name)
                else:
                    setattr(owner, name, raw)
            self._installed.clear()


def patches() -> list[Patch]:
    with _lock:
        return list(_registry)


def uninstall_all() -> None:
    for patch in patches():
        if patch.installed():
            patch.uninstall()


# Keras' HDF5 weight stores and the parameters of their item methods: Keras 3.10+ reads and
# writes through ``H5IOStore`` itself, earlier 3.x through one ``H5Entry`` per layer.
_H5_STORES = {
    "H5IOStore": {"__getitem__": ("self", "key"), "__setitem__": ("self", "key", "value")},
    "H5Entry": {"__getitem__": ("self", "name"), "__setitem__": ("self", "key", "value")},
}


def h5_stores(method: str) -> list[tuple[type, tuple[str, ...]]]:
    """Keras' HDF5 store classes that define ``method`` themselves, with its expected parameters.

    Raises ImportError/AttributeError (the patch then stays off) when there is none.
    """
    from keras.src.saving import saving_lib

    found = []
    for name, methods in _H5_STORES.items():
        cls = getattr(saving_lib, name, None)
        if isinstance(cls, type) and method in cls.__dict__:
            found.append((cls, methods[method]))
    if not found:
        raise AttributeError(f"no Keras HDF5 store defines {method}")
    return found
