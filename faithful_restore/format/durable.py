"""Durability: fsync of files and directories, write-back started early, scratch writes that skip
it, and the one background-thread helper (its failure is re-raised in the caller).
"""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import os
import sys
import threading
from collections.abc import Callable, Iterator

_durable: contextvars.ContextVar[bool] = contextvars.ContextVar("faithful_restore_durable", default=True)


def durable() -> bool:
    """Whether bundle writes in this context are flushed to disk (see :func:`scratch_writes`)."""
    return _durable.get()


@contextlib.contextmanager
def scratch_writes() -> Iterator[None]:
    """Bundles written in this block are not fsynced: for scratch bundles removed right after.

    ``assert_roundtrip`` proves a round trip through the format; flushing its temporary bundle to
    the device would only add the disk's write time. Commits stay atomic renames either way.
    """
    token = _durable.set(False)
    try:
        yield
    finally:
        _durable.reset(token)


def write_bytes_local(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
        if durable():
            f.flush()
            os.fsync(f.fileno())


_SYNC_FILE_RANGE_WRITE = 2


@contextlib.contextmanager
def early_writeback(root: str, interval: float = 0.05) -> Iterator[None]:
    """While the block writes files below ``root``, keeps starting their write-back to disk.

    Linux ``sync_file_range(SYNC_FILE_RANGE_WRITE)`` only starts writing dirty pages and returns,
    so the device writes while the block (Keras serializing weights) still uses the CPU, and the
    fsync afterwards finds little left to flush. A no-op where the call does not exist.
    """
    try:
        call = ctypes.CDLL(None, use_errno=True).sync_file_range if sys.platform.startswith("linux") else None
    except (OSError, AttributeError):
        call = None
    if call is None:
        yield
        return
    call.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    stop = threading.Event()

    def run() -> None:
        fds: dict[str, int] = {}
        try:
            while not stop.wait(interval):
                for dirpath, _dirnames, filenames in os.walk(root):
                    for name in filenames:
                        full = os.path.join(dirpath, name)
                        if full not in fds:
                            try:
                                fds[full] = os.open(full, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
                            except OSError:
                                continue
                        call(fds[full], 0, 0, _SYNC_FILE_RANGE_WRITE)
        finally:
            for fd in fds.values():
                os.close(fd)

    thread = threading.Thread(target=run, name="faithful_restore-writeback", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


@contextlib.contextmanager
def in_background(work: Callable[[], object], name: str) -> Iterator[Callable[[], None]]:
    """Runs ``work()`` on a thread during the block.

    Yields ``wait``, which joins the thread and raises its error; the block's end waits too (the
    thread never outlives the block) and raises the error when the block itself did not raise.
    """
    failure: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as e:  # noqa: BLE001 - re-raised in the calling thread
            failure.append(e)

    thread = threading.Thread(target=run, name=f"faithful_restore-{name}", daemon=True)
    thread.start()

    def wait() -> None:
        thread.join()
        if failure:
            raise failure[0]

    try:
        yield wait
    finally:
        thread.join()
    wait()


def fsync_tree(root: str) -> None:
    """fsyncs every file and directory below a local ``root`` (where the OS allows it)."""
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            with open(os.path.join(dirpath, name), "rb") as f:
                os.fsync(f.fileno())
        fsync_dir(dirpath)


def fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems do not support fsync on directories
        pass
    finally:
        os.close(fd)
