"""Hashes the weights while Keras writes them, instead of reading the whole file again afterwards.

Hashing 1.2 GB of weights after ``model.save`` took 0.76 s of a 2.6 to 3.9 s save at 100M
parameters, on a core that sat idle while Keras wrote. Inside :func:`recording`, every HDF5
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
from typing import Any

from faithful_restore._manifest import Segment

# Smaller datasets are hashed with the metadata around them: one segment each would bloat the
# manifest for no gain. 1 MiB also exceeds HDF5's 64 KiB sieve buffer, so the data is on disk
# (in the page cache) when h5py returns, not buffered inside HDF5.
MIN_SEGMENT = 1 << 20
_READ = 32 << 20

_local = threading.local()
_install_lock = threading.Lock()
_installed = False


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
        buffer = bytearray(_READ)
        view = memoryview(buffer)
        fds: dict[str, int] = {}
        try:
            while (item := self._queue.get()) is not None:
                if self._failed:
                    continue
                filename, offset, size = item
                try:
                    if filename not in fds:
                        fds[filename] = os.open(filename, os.O_RDONLY)
                    digest = hashlib.sha256()
                    done = 0
                    while done < size:
                        n = os.preadv(fds[filename], [view[: min(_READ, size - done)]], offset + done)
                        if n <= 0:
                            raise OSError(f"{filename} ended at byte {offset + done}")
                        digest.update(view[:n])
                        done += n
                except OSError:
                    self._failed = True
                    continue
                self._ranges.setdefault(filename, []).append((offset, size, digest.hexdigest()))
        finally:
            for fd in fds.values():
                os.close(fd)

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
        out: list[Segment] = []
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            position = 0
            for offset, length, sha in [*ranges, (size, 0, "")]:
                if offset < position or offset + length > size:
                    return ()
                if offset > position:
                    f.seek(position)
                    gap = hashlib.sha256()
                    remaining = offset - position
                    while remaining:
                        chunk = f.read(min(_READ, remaining))
                        if not chunk:
                            return ()
                        gap.update(chunk)
                        remaining -= len(chunk)
                    out.append(Segment(position, offset - position, gap.hexdigest()))
                if length:
                    out.append(Segment(offset, length, sha))
                if progress is not None:
                    progress(offset + length - position)
                position = offset + length
        return tuple(out)


def _install() -> bool:
    """Wraps ``h5py.Group.create_dataset`` once; it acts only inside :func:`recording`."""
    global _installed
    with _install_lock:
        if _installed:
            return True
        try:
            import h5py
        except ImportError:
            return False
        original = getattr(h5py.Group, "create_dataset", None)
        if not callable(original):
            return False

        def create_dataset(self: Any, *args: Any, **kwargs: Any) -> Any:
            dataset = original(self, *args, **kwargs)
            recorder = getattr(_local, "recorder", None)
            if recorder is not None:
                recorder.offer(dataset)
            return dataset

        h5py.Group.create_dataset = create_dataset
        _installed = True
        return True


@contextlib.contextmanager
def recording(directory: str) -> Iterator[Recorder]:
    """Hashes large HDF5 datasets this thread writes under ``directory`` while they are written.

    Call :meth:`Recorder.segments` after the block, once the files are closed. Other threads
    are unaffected; nested blocks are not supported (the inner one records nothing).
    """
    recorder = Recorder(directory)
    if getattr(_local, "recorder", None) is not None or not _install():
        yield recorder
        return
    recorder._thread.start()
    _local.recorder = recorder
    try:
        yield recorder
    finally:
        _local.recorder = None
        recorder._stop()
