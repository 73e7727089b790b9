"""Hashes the weights while Keras writes them, instead of reading the whole file again afterwards.

Hashing after ``model.save`` would read every weight byte again, on a core that sits idle while
Keras writes (figures: docs/performance.md). Inside :func:`recording`, every HDF5
dataset the current thread creates under a directory is noted as soon as h5py has written it:
when it is stored contiguously, unfiltered and at least :data:`MIN_SEGMENT` bytes, a background
thread reads its byte range back (from the page cache) and hashes it while Keras goes on writing.
HDF5 writes a dataset's raw data once, at creation, and never moves it; only metadata is
rewritten until the file is closed. :meth:`Recorder.segments` then hashes the rest of the closed
file (metadata and small datasets) and returns segments that tile it, each with the SHA-256 of
its bytes as they are on disk. Anything unexpected (a layout it cannot place, a read error)
yields no segments, and the file is hashed whole as before.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import threading
from collections.abc import Iterator
from typing import Any, BinaryIO

from faithful_restore.fast._patch import Patch, Target, wrapper_of
from faithful_restore.format import paths as _paths
from faithful_restore.format.manifest import Segment

# Smaller datasets are hashed with the metadata around them: one segment each would bloat the
# manifest for no gain. 1 MiB also exceeds HDF5's 64 KiB sieve buffer, so the data is on disk
# (in the page cache) when h5py returns, not buffered inside HDF5.
MIN_SEGMENT = 1 << 20
_READ = 32 << 20

_local = threading.local()


class Recorder:
    """Collects and hashes the large datasets written under ``directory`` (see module doc)."""

    def __init__(self, directory: str) -> None:
        self._directory = os.path.realpath(directory) + os.sep
        self._queue: queue.SimpleQueue[tuple[str, int, int] | None] = queue.SimpleQueue()
        self._ranges: dict[str, list[tuple[int, int, str]]] = {}
        self._failed = False
        self._thread = threading.Thread(target=self._run, name="faithful_restore-inline-hash", daemon=True)

    def offer(self, dataset: Any) -> None:
        """Queues ``dataset``'s bytes for hashing when they sit in one placed range of our file."""
        try:
            import h5py

            filename = os.path.realpath(dataset.file.filename)
            if not filename.startswith(self._directory):
                return
            plist = dataset.id.get_create_plist()
            if plist.get_layout() != h5py.h5d.CONTIGUOUS or plist.get_nfilters() or plist.get_external_count():
                return
            offset, size = dataset.id.get_offset(), dataset.id.get_storage_size()
        except Exception:  # noqa: BLE001 - no segment for it: the file is hashed around it
            return
        if offset is not None and size >= MIN_SEGMENT:
            self._queue.put((filename, int(offset), int(size)))

    def _run(self) -> None:
        view = memoryview(bytearray(_READ))
        files: dict[str, BinaryIO] = {}
        try:
            while (item := self._queue.get()) is not None:
                if self._failed:
                    continue
                filename, offset, size = item
                try:
                    if filename not in files:
                        files[filename] = open(filename, "rb", buffering=0)  # noqa: SIM115 - closed below
                    sha = _hash_range(files[filename], offset, size, view)
                except OSError:
                    sha = None
                if sha is None:
                    self._failed = True
                    continue
                self._ranges.setdefault(filename, []).append((offset, size, sha))
        finally:
            for f in files.values():
                f.close()

    def _stop(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def segments(self, path: str, progress: Any = None) -> tuple[Segment, ...]:
        """Segments that tile the closed file ``path``: the recorded ranges and the gaps between.

        Returns () when nothing of ``path`` was recorded or the ranges cannot be trusted (a read
        failed, they overlap or reach past the end); the caller then hashes the file whole.
        ``progress`` is called with byte counts as the file is accounted for.
        """
        ranges = sorted(self._ranges.get(os.path.realpath(path), []))
        if self._failed or not ranges:
            return ()
        with open(path, "rb", buffering=0) as f:
            size = os.fstat(f.fileno()).st_size
            # The layout first (recorded ranges, and gaps to hash as None), so nothing is read
            # for ranges that cannot be trusted.
            layout: list[tuple[int, int, str | None]] = []
            position = 0
            for offset, length, sha in ranges:
                if offset < position or offset + length > size:
                    return ()
                if offset > position:
                    layout.append((position, offset - position, None))
                layout.append((offset, length, sha))
                position = offset + length
            if position < size:
                layout.append((position, size - position, None))
            view = memoryview(bytearray(min(_READ, max((n for _, n, sha in layout if sha is None), default=0))))
            out: list[Segment] = []
            for offset, length, known in layout:
                digest = known or _hash_range(f, offset, length, view)
                if digest is None:
                    return ()
                out.append(Segment(offset, length, digest))
                if progress is not None:
                    progress(length)
            return tuple(out)


def _hash_range(f: BinaryIO, offset: int, size: int, view: memoryview) -> str | None:
    """SHA-256 of ``size`` bytes of ``f`` from ``offset``, read through ``view``; None if the file ends first."""
    digest = hashlib.sha256()
    for start in range(offset, offset + size, len(view)):
        chunk = view[: min(len(view), offset + size - start)]
        if _paths.read_at(f, start, chunk) < len(chunk):
            return None
        digest.update(chunk)
    return digest.hexdigest()


def _recording_create_dataset(original: Any) -> Any:
    def create_dataset(self: Any, *args: Any, **kwargs: Any) -> Any:
        dataset = original(self, *args, **kwargs)
        recorder = getattr(_local, "recorder", None)
        if recorder is not None:
            recorder.offer(dataset)
        return dataset

    return wrapper_of(original, create_dataset)


def _targets() -> list[Target]:
    import h5py

    return [
        Target(
            h5py.Group, "create_dataset", ("self", "name", "shape", "dtype", "data", "kwds"), _recording_create_dataset
        )
    ]


PATCH = Patch("inline_hash", _targets)


@contextlib.contextmanager
def recording(directory: str) -> Iterator[Recorder]:
    """Hashes large HDF5 datasets this thread writes under ``directory`` while they are written.

    Call :meth:`Recorder.segments` after the block, once the files are closed. Other threads
    are unaffected; nested blocks are not supported (the inner one records nothing).
    """
    recorder = Recorder(directory)
    if getattr(_local, "recorder", None) is not None or not PATCH.active():
        yield recorder
        return
    recorder._thread.start()
    _local.recorder = recorder
    try:
        yield recorder
    finally:
        _local.recorder = None
        recorder._stop()
