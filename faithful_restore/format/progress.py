"""Progress for long byte-bound work (hashing and copying multi-GB bundles).

Shown with Keras' own ``Progbar`` when attached to a terminal and quiet otherwise; the API's
``verbose=`` overrides that (True always, False never, "auto" by terminal).
"""

from __future__ import annotations

import sys
from typing import Any

from faithful_restore.errors import ArgumentError

_MIN_BYTES = 64 * 1024 * 1024  # below this the work takes a blink; a bar would only flicker


def wanted(verbose: Any) -> bool:
    if verbose == "auto" or verbose is None:
        stream = sys.stderr
        return bool(getattr(stream, "isatty", lambda: False)())
    if isinstance(verbose, bool):
        return verbose
    raise ArgumentError(f"verbose must be True, False or 'auto', found {verbose!r}.")


class Bytes:
    """Counts bytes of one phase; a no-op unless progress is wanted and the work is large."""

    def __init__(self, label: str, total: int, verbose: Any) -> None:
        self._bar = None
        if wanted(verbose) and (total >= _MIN_BYTES or verbose is True):
            import keras

            print(label, file=sys.stderr, flush=True)
            self._bar = keras.utils.Progbar(max(total, 1), unit_name="byte")
        self._done = 0

    def add(self, n: int) -> None:
        if self._bar is not None:
            self._done += n
            self._bar.update(self._done)
