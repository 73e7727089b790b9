"""SHA-256 of whole files and of byte segments, optionally while copying."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence

from faithful_restore.format.paths import _CHUNK, _gfile, is_local, open_read, parent_and_name


class _Digests:
    """SHA-256 of consecutive byte ranges of a stream: a new digest starts at every bound."""

    def __init__(self, bounds: Sequence[int] = ()) -> None:
        self._bounds = list(bounds)
        self._done: list[str] = []
        self._digest = hashlib.sha256()
        self.size = 0

    def update(self, chunk: bytes | memoryview) -> None:
        view = memoryview(chunk)
        while view:
            if len(self._done) < len(self._bounds):
                take = min(len(view), self._bounds[len(self._done)] - self.size)
            else:
                take = len(view)
            self._digest.update(view[:take])
            self.size += take
            view = view[take:]
            if len(self._done) < len(self._bounds) and self.size == self._bounds[len(self._done)]:
                self._done.append(self._digest.hexdigest())
                self._digest = hashlib.sha256()

    def hexdigests(self) -> list[str]:
        return [*self._done, self._digest.hexdigest()]


def hash_file(path: str, progress: Callable[[int], None] | None = None) -> tuple[int, str]:
    """Returns (size, SHA-256 hex digest) of a file, reading it once in chunks."""
    size, digests = hash_segments(path, (), progress)
    return size, digests[0]


def hash_segments(
    path: str, bounds: Sequence[int], progress: Callable[[int], None] | None = None
) -> tuple[int, list[str]]:
    """Returns (size, SHA-256 hex digests) of a file cut at ``bounds`` (ascending offsets).

    One digest per range: ``[0, bounds[0])``, ..., ``[bounds[-1], end)``; reads the file once.
    A file shorter than a bound yields fewer digests (its size says why).
    """
    digests = _Digests(bounds)
    with open_read(path) as f:
        while True:
            chunk = f.read(_CHUNK)
            if not chunk:
                break
            digests.update(chunk)
            if progress is not None:
                progress(len(chunk))
    return digests.size, digests.hexdigests()


def copy_hashing(
    src: str, dst: str, progress: Callable[[int], None] | None = None, bounds: Sequence[int] = ()
) -> tuple[int, list[str]]:
    """Copies ``src`` to ``dst`` (either may be a URL), hashing in the same pass (see hash_segments)."""
    digests = _Digests(bounds)
    dst_parent = parent_and_name(dst)[0]
    if is_local(dst):
        os.makedirs(dst_parent, exist_ok=True)
        out_cm = open(dst, "wb")
    else:
        _gfile().makedirs(dst_parent)
        out_cm = _gfile().GFile(dst, "wb")
    with open_read(src) as fin, out_cm as fout:
        while True:
            chunk = fin.read(_CHUNK)
            if not chunk:
                break
            digests.update(chunk)
            fout.write(chunk)
            if progress is not None:
                progress(len(chunk))
        if is_local(dst):
            fout.flush()
            os.fsync(fout.fileno())
    return digests.size, digests.hexdigests()
