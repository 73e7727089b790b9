"""Wrapping third-party methods: once per process, and all or nothing."""

from __future__ import annotations

from faithful_restore import _hooks


def _counting(original):
    def wrapper(self):
        return original(self) + 1

    return wrapper


def test_methods_are_wrapped_once_and_only_when_all_exist():
    class Target:
        def value(self):
            return 1

    assert not _hooks.wrap_once(Target, {"value": _counting, "missing": _counting})
    assert Target().value() == 1  # nothing was wrapped
    assert _hooks.wrap_once(Target, {"value": _counting})
    assert _hooks.wrap_once(Target, {"value": _counting})  # already wrapped: not wrapped again
    assert Target().value() == 2
