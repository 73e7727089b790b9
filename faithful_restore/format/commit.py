"""The commit: a staged bundle replaces the target atomically (rename, or exchange where the
kernel offers it); a remote target gets its files first and the manifest last. One writer at a
time per target (a lock file), and what a crashed writer left is recovered or cleaned.

Keras writes an unzipped model with plain ``open()``, so every bundle is first staged in a local
directory.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator

from faithful_restore.errors import BundleError
from faithful_restore.format.durable import fsync_dir
from faithful_restore.format.hashing import copy_hashing
from faithful_restore.format.paths import _gfile, is_local, join, parent_and_name

TMP_TAG = ".fr-tmp-"


OLD_TAG = ".fr-old-"


READ_TAG = ".fr-read-"


_AT_FDCWD = -100


_RENAME_EXCHANGE = 2


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
