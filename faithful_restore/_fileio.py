"""Filesystem plumbing: local paths and ``tf.io.gfile`` URLs, hashing, atomic commit.

Keras writes an unzipped model with plain ``open()``, so every bundle is first staged in a local
directory. A local target is then committed by ``rename`` (atomic on POSIX); a remote target
(``gs://``, ``s3://``, ``ram://``...) has no atomic directory rename, so its files are copied
first and ``manifest.json`` last: the manifest is the commit marker readers require.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator

from faithful_restore.errors import BundleError

_CHUNK = 8 * 1024 * 1024
TMP_TAG = ".fr-tmp-"
OLD_TAG = ".fr-old-"


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
    """Reads at most ``limit`` bytes; raises BundleError when the file is larger."""
    with open_read(path) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise BundleError(
            f"{path} is larger than the {limit} bytes allowed for it; this is not a file "
            "faithful_restore wrote. Check the path or re-create the bundle."
        )
    return bytes(data)


def hash_file(path: str) -> tuple[int, str]:
    """Returns (size, SHA-256 hex digest) of a file, reading it once in chunks."""
    digest = hashlib.sha256()
    size = 0
    with open_read(path) as f:
        while True:
            chunk = f.read(_CHUNK)
            if not chunk:
                break
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def copy_hashing(src: str, dst: str) -> tuple[int, str]:
    """Copies ``src`` to ``dst`` (either may be a URL), hashing in the same pass."""
    digest = hashlib.sha256()
    size = 0
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
            digest.update(chunk)
            size += len(chunk)
            fout.write(chunk)
        if is_local(dst):
            fout.flush()
            os.fsync(fout.fileno())
    return size, digest.hexdigest()


def write_bytes_local(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


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


def commit_local(stage: str, target: str, overwrite: bool) -> None:
    """Moves a complete staged bundle to ``target`` by rename.

    With ``overwrite`` the old bundle is first renamed aside and removed only after the new one
    is in place, so a crash leaves either the old or the new bundle on disk (the old one then
    under a recognizable ``.NAME.fr-old-*`` name).
    """
    parent, name = parent_and_name(target)
    aside = None
    if os.path.lexists(target):
        if not overwrite:
            raise BundleError(
                f"{target!r} already exists and overwrite=False; pass overwrite=True to replace "
                "it or choose another path. Nothing was written."
            )
        aside = os.path.join(parent, f".{name}{OLD_TAG}{uuid.uuid4().hex[:12]}")
        os.rename(target, aside)
    try:
        os.rename(stage, target)
    except OSError:
        if aside is not None:
            os.rename(aside, target)
        raise
    fsync_dir(parent)
    if aside is not None:
        if os.path.isdir(aside) and not os.path.islink(aside):
            shutil.rmtree(aside, ignore_errors=True)
        else:
            os.remove(aside)


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
