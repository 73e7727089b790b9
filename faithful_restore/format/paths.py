"""Paths: local paths and ``tf.io.gfile`` URLs behind one set of functions, and bounded reads."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import BinaryIO

from faithful_restore.errors import ArgumentTypeError, BundleError

_CHUNK = 8 * 1024 * 1024


def as_path(path: object, what: str = "path") -> str:
    """Returns ``path`` as a string, or raises BundleError for anything that is not path-like."""
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if isinstance(path, bytes):
        path = path.decode()
    if not isinstance(path, str) or not path:
        raise ArgumentTypeError(
            f"{what} must be a non-empty str or os.PathLike, found {type(path).__name__} "
            f"{path!r}; pass a local directory path or a tf.io.gfile URL such as 'ram://b'."
        )
    if path.startswith("file://"):
        path = path[len("file://") :]
    return path.rstrip("/") if len(path) > 1 else path


def is_local(path: str) -> bool:
    return "://" not in path


def _gfile():  # deferred: importing TensorFlow costs seconds and is only needed for URLs
    import tensorflow as tf

    return tf.io.gfile


def exists(path: str) -> bool:
    return os.path.lexists(path) if is_local(path) else bool(_gfile().exists(path))


def isdir(path: str) -> bool:
    return os.path.isdir(path) if is_local(path) else bool(_gfile().isdir(path))


def join(base: str, *parts: str) -> str:
    if is_local(base):
        return os.path.join(base, *parts)
    return "/".join([base.rstrip("/"), *parts])


def parent_and_name(path: str) -> tuple[str, str]:
    if is_local(path):
        absolute = os.path.abspath(path)
        return os.path.dirname(absolute), os.path.basename(absolute)
    head, _, tail = path.rstrip("/").rpartition("/")
    return head, tail


def list_files(root: str) -> list[str]:
    """Every regular file below ``root`` as a sorted '/'-separated relative path.

    Symlinks are listed too (as files), so that integrity checks can refuse them.
    """
    out: list[str] = []
    if is_local(root):
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            for name in list(dirnames):
                full = os.path.join(dirpath, name)
                if os.path.islink(full):  # a linked directory is reported, never entered
                    out.append(os.path.relpath(full, root).replace(os.sep, "/"))
                    dirnames.remove(name)
            for name in filenames:
                rel = os.path.relpath(os.path.join(dirpath, name), root)
                out.append(rel.replace(os.sep, "/"))
    else:
        gf = _gfile()
        for dirpath, _dirs, filenames in gf.walk(root):
            for name in filenames:
                full = "/".join([dirpath.rstrip("/"), name])
                out.append(full[len(root.rstrip("/")) + 1 :])
    return sorted(out)


@contextlib.contextmanager
def open_read(path: str) -> Iterator:
    if is_local(path):
        with open(path, "rb") as f:
            yield f
    else:
        with _gfile().GFile(path, "rb") as f:
            yield f


def read_bytes(path: str, limit: int) -> bytes:
    """Reads a regular file of at most ``limit`` bytes.

    Raises:
        BundleError: the file is larger, or (locally) a symlink, FIFO, directory or other
            non-regular file, which a bundle never holds.
    """
    if is_local(path):
        import stat

        try:
            # O_NOFOLLOW refuses a symlink; O_NONBLOCK keeps a FIFO from blocking the open.
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
        except OSError as e:
            raise BundleError(f"cannot read {path}: {e}; a bundle's files are plain files inside it.") from e
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise BundleError(f"{path} is not a regular file; refusing it (a bundle holds only plain files).")
        with os.fdopen(fd, "rb") as f:
            data = f.read(limit + 1)
    else:
        with open_read(path) as f:
            data = f.read(limit + 1)
    if len(data) > limit:
        raise BundleError(
            f"{path} is larger than the {limit} bytes allowed for it; this is not a file "
            "faithful_restore wrote. Check the path or re-create the bundle."
        )
    return bytes(data)


def read_at(f: BinaryIO, offset: int, view: memoryview) -> int:
    """Fills ``view`` from byte ``offset`` of the unbuffered file ``f``; returns the bytes read.

    Fewer than ``len(view)`` only where the file ends. ``f`` is positioned by a seek, so each
    thread reads through its own file object. Portable (``os.preadv`` is missing on Windows).
    """
    f.seek(offset)
    got = 0
    while got < len(view):
        n = f.readinto(view[got:])  # type: ignore[attr-defined]
        if not n:
            break
        got += n
    return got
