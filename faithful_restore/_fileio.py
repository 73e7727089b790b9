"""Filesystem plumbing: local paths and ``tf.io.gfile`` URLs, hashing, atomic commit.

Keras writes an unzipped model with plain ``open()``, so every bundle is first staged in a local
directory. A local target is then committed by ``rename`` (atomic on POSIX); a remote target
(``gs://``, ``s3://``, ``ram://``...) has no atomic directory rename, so its files are copied
first and ``manifest.json`` last: the manifest is the commit marker readers require.
"""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import errno
import hashlib
import os
import shutil
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import BinaryIO

from faithful_restore.errors import BundleError

_CHUNK = 8 * 1024 * 1024
TMP_TAG = ".fr-tmp-"
OLD_TAG = ".fr-old-"
READ_TAG = ".fr-read-"
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def as_path(path: object, what: str = "path") -> str:
    """Returns ``path`` as a string, or raises BundleError for anything that is not path-like."""
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if isinstance(path, bytes):
        path = path.decode()
    if not isinstance(path, str) or not path:
        raise BundleError(
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


def local_stage_dir(target: str) -> str:
    """A fresh staging directory: a hidden sibling of a local target, else a temp directory."""
    if is_local(target):
        parent, name = parent_and_name(target)
        if not os.path.isdir(parent):
            try:
                os.makedirs(parent, exist_ok=True)
            except OSError as e:
                raise BundleError(
                    f"cannot create the parent directory {parent!r} of the bundle: {e}; choose a writable location."
                ) from e
        stage = os.path.join(parent, f".{name}{TMP_TAG}{uuid.uuid4().hex[:12]}")
        try:
            os.mkdir(stage)
        except OSError as e:
            raise BundleError(f"cannot write in {parent!r}: {e}; choose a writable location for the bundle.") from e
        return stage
    return tempfile.mkdtemp(prefix="faithful_restore-stage-")


def remove_tree(path: str) -> None:
    if is_local(path):
        shutil.rmtree(path, ignore_errors=True)
    elif _gfile().exists(path):
        _gfile().rmtree(path)


def _exchange(a: str, b: str) -> bool:
    """Atomically swaps two paths (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV):
        return False  # this filesystem cannot exchange; fall back to two renames
    raise OSError(code, os.strerror(code), b)


def commit_local(stage: str, target: str, overwrite: bool) -> None:
    """Moves a complete staged bundle to ``target``.

    A new path is a single rename. An existing bundle is swapped with the staged one in one
    atomic exchange where the OS allows it (Linux), so every reader sees the old or the new
    bundle; elsewhere the old bundle is renamed aside first (``.NAME.fr-old-*``) and removed only
    after the new one is in place, and the next save recovers it if a crash fell in between.
    """
    parent, name = parent_and_name(target)
    if not os.path.lexists(target):
        os.rename(stage, target)
        fsync_dir(parent)
        return
    if not overwrite:
        raise BundleError(
            f"{target!r} already exists and overwrite=False; pass overwrite=True to replace "
            "it or choose another path. Nothing was written."
        )
    if _exchange(stage, target):
        fsync_dir(parent)
        shutil.rmtree(stage, ignore_errors=True)  # now holds the old bundle
        return
    aside = os.path.join(parent, f".{name}{OLD_TAG}{uuid.uuid4().hex[:12]}")
    os.rename(target, aside)
    try:
        os.rename(stage, target)
    except OSError:
        os.rename(aside, target)
        raise
    fsync_dir(parent)
    shutil.rmtree(aside, ignore_errors=True)


@contextlib.contextmanager
def writer_lock(target: str) -> Iterator[None]:
    """Serializes bundle writers in one local directory (an flock on the parent directory).

    Locking the directory itself leaves no lock file behind. Remote URLs have no portable lock;
    concurrent writers there are not serialized.
    """
    if not is_local(target):
        yield
        return
    import fcntl

    parent, _name = parent_and_name(target)
    try:
        os.makedirs(parent, exist_ok=True)
        fd = os.open(parent, os.O_RDONLY)
    except OSError as e:
        raise BundleError(f"cannot write in {parent!r}: {e}; choose a writable location for the bundle.") from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


@contextlib.contextmanager
def local_snapshot(root: str) -> Iterator[str]:
    """A consistent view of a local bundle that concurrent writers cannot change.

    The bundle directory is pinned by a file descriptor and every entry is hard-linked into a
    private sibling (``.NAME.fr-read-PID-*``; no data is copied), so a writer swapping in a new
    bundle or removing the old one does not affect what is read. Symlinks are reproduced as
    symlinks, so integrity checks still refuse them. Where links cannot be made (read-only
    location, a filesystem without hard links) ``root`` itself is yielded.
    """
    parent, name = parent_and_name(root)
    try:
        dirfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        yield root  # the caller reports what is wrong with the path
        return
    snap = os.path.join(parent, f".{name}{READ_TAG}{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        try:
            os.mkdir(snap)
            _link_tree(dirfd, snap)
            # A writer removes a swapped-out bundle file by file, so linking it meanwhile can miss
            # files without any error. It is removed only after leaving ``root``: a directory still
            # in place after linking proves the snapshot whole.
            pinned, current = os.fstat(dirfd), os.stat(root)
            if (pinned.st_dev, pinned.st_ino) != (current.st_dev, current.st_ino):
                raise FileNotFoundError(errno.ENOENT, "the bundle was replaced while it was being linked", root)
        except FileNotFoundError:
            raise  # a writer removed the directory meanwhile: the caller starts again
        except OSError:
            shutil.rmtree(snap, ignore_errors=True)
            yield root  # read-only location or no hard links: read in place
            return
        yield snap
    finally:
        os.close(dirfd)
        shutil.rmtree(snap, ignore_errors=True)


def _link_tree(dirfd: int, snap: str) -> None:
    import stat

    for dirpath, dirnames, filenames, fd in os.fwalk(".", dir_fd=dirfd, follow_symlinks=False):
        out_dir = os.path.normpath(os.path.join(snap, dirpath))
        for name in dirnames + filenames:
            info = os.stat(name, dir_fd=fd, follow_symlinks=False)
            dst = os.path.join(out_dir, name)
            if stat.S_ISLNK(info.st_mode):
                os.symlink(os.readlink(name, dir_fd=fd), dst)
            elif stat.S_ISDIR(info.st_mode):
                os.mkdir(dst)
            else:
                os.link(name, dst, src_dir_fd=fd, follow_symlinks=False)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover_and_clean(target: str) -> list[str]:
    """Under the writer lock: puts back a bundle a crash left aside, removes stale temporaries.

    Returns the removed paths.
    """
    if not is_local(target):
        return []
    parent, name = parent_and_name(target)
    try:
        siblings = os.listdir(parent)
    except OSError:
        return []
    olds = sorted(s for s in siblings if s.startswith(f".{name}{OLD_TAG}"))
    if not os.path.lexists(target):
        for old in olds:
            if os.path.exists(os.path.join(parent, old, "manifest.json")):
                os.rename(os.path.join(parent, old), target)  # the crash fell between two renames
                olds.remove(old)
                break
    removed = []
    dead_readers = []
    for s in siblings:
        if s.startswith(f".{name}{READ_TAG}"):
            pid = s[len(f".{name}{READ_TAG}") :].split("-", 1)[0]
            if pid.isdigit() and not _pid_alive(int(pid)):
                dead_readers.append(s)
    for stale in olds + [s for s in siblings if s.startswith(f".{name}{TMP_TAG}")] + dead_readers:
        full = os.path.join(parent, stale)
        shutil.rmtree(full, ignore_errors=True)
        removed.append(full)
    return removed


def commit_remote(stage: str, target: str, files: list[str], last: list[str], overwrite: bool) -> None:
    """Copies a staged bundle to a URL, ``last`` (the manifest) after everything else."""
    gf = _gfile()
    if gf.exists(target):
        if not overwrite:
            raise BundleError(
                f"{target!r} already exists and overwrite=False; pass overwrite=True to replace "
                "it or choose another path. Nothing was written."
            )
        # Uncommit first (manifest goes before anything else) so no reader ever sees a mix.
        for name in last:
            p = join(target, name)
            if gf.exists(p):
                gf.remove(p)
        gf.rmtree(target)
    gf.makedirs(target)
    for rel in [f for f in files if f not in last] + last:
        copy_hashing(os.path.join(stage, *rel.split("/")), join(target, rel))
