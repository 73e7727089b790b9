"""Integrity: the manifest against its digest, every file against the manifest, and views of a
bundle that concurrent writers cannot change. Runs before any byte is parsed.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import Any, Protocol, TypeVar

from faithful_restore.errors import (
    BundleError,
    IntegrityError,
)
from faithful_restore.format import commit as _commit
from faithful_restore.format import hashing as _hashing
from faithful_restore.format import paths as _paths
from faithful_restore.format import progress as _progress
from faithful_restore.format.manifest import (
    DIGEST,
    MANIFEST,
    MAX_MANIFEST_BYTES,
    FileEntry,
    Manifest,
    digest,
    parse,
)

T = TypeVar("T")
_DIGEST_LINE = re.compile(rb"[0-9a-f]{64}\n")


class Keeper(Protocol):
    """Where verified weight bytes are kept for the load (``fast.prefetch.Buffers``)."""

    def read_segments(
        self, path: str, segments: Sequence[tuple[int, int]], progress: Callable[[int], None]
    ) -> tuple[int, list[str], dict[int, Any]]: ...

    def add(self, path: str, kept: dict[int, Any]) -> None: ...


def read_manifest(path: str | os.PathLike[str], *, label: str | None = None) -> Manifest:
    """Reads a bundle's ``manifest.json`` after checking it against ``manifest.sha256``.

    Reads only those two files (the other files are checked by load_bundle / verify_bundle).
    ``label`` names the bundle in messages when ``path`` is a snapshot of it.

    Raises:
        BundleError: not a bundle, or a malformed or newer-format manifest.
        IntegrityError: the manifest does not match its digest, or the digest file is malformed.
    """
    root = _paths.as_path(path)
    shown = label or root
    if not _paths.exists(root):
        raise BundleError(f"no bundle at {shown!r}: the path does not exist. Check the path.")
    if not _paths.isdir(root):
        raise BundleError(f"{shown!r} is a file, not a bundle directory. Pass the bundle's directory.")
    manifest_path = _paths.join(root, MANIFEST)
    if not _paths.exists(manifest_path):
        raise BundleError(
            f"{shown!r} holds no {MANIFEST}: it is not a bundle, or a save into it never finished. "
            "Pass a directory written by save_bundle."
        )

    def read(path: str, limit: int) -> bytes:
        try:
            return _paths.read_bytes(path, limit)
        except BundleError as e:  # name the user's bundle, not a private snapshot of it
            raise BundleError(str(e).replace(root, shown)) from e

    raw = read(manifest_path, MAX_MANIFEST_BYTES)
    digest_path = _paths.join(root, DIGEST)
    if not _paths.exists(digest_path):
        raise IntegrityError(f"{shown!r} lacks {DIGEST}, which protects the manifest; the bundle is damaged.")
    stored = read(digest_path, 200)
    if _DIGEST_LINE.fullmatch(stored) is None:
        raise IntegrityError(
            f"{DIGEST} in {shown!r} must hold exactly 64 lowercase hex digits and a newline, found "
            f"{len(stored)} bytes {stored[:80]!r}: it was modified or damaged. Restore the bundle from a good copy."
        )
    recorded = stored[:64].decode("ascii")
    if recorded != digest(raw):
        raise IntegrityError(
            f"{MANIFEST} in {shown!r} does not match {DIGEST} (expected sha256 {recorded[:16]}..., "
            f"found {digest(raw)[:16]}...): the manifest was modified or damaged. Restore the bundle "
            "from a good copy."
        )
    return parse(raw)


def verify_files(
    root: str,
    manifest: Manifest,
    copy_to: str | None = None,
    label: str | None = None,
    verbose: bool | str = False,
    only: Collection[str] | None = None,
    listing: bool = True,
    keep: Keeper | None = None,
) -> None:
    """Checks that the bundle holds exactly the manifest's files with their sizes and digests.

    With ``copy_to`` (a local directory), every file is also copied there in the same pass.
    ``label`` names the bundle in messages when ``root`` is a snapshot of it. ``only`` limits the
    hashing to some files; ``listing=False`` skips the missing/extra-file check. With ``keep``, the
    large segments of local segmented files are read into buffers, checked, and kept there for
    the load (see :mod:`faithful_restore.fast.prefetch`).

    Raises:
        IntegrityError: naming the first missing, extra, resized, modified or linked file.
    """
    shown = label or root
    listed = manifest.file_map
    if listing:
        _check_listing(root, listed, shown)
    if only is not None:
        listed = {rel: entry for rel, entry in listed.items() if rel in set(only)}
    progress = _progress.Bytes(f"faithful_restore: checking {shown}", sum(e.size for e in listed.values()), verbose)
    _hash_files(root, listed, shown, copy_to, progress, keep)


def _check_listing(root: str, listed: dict[str, FileEntry], shown: str) -> None:
    """The directory holds exactly the listed files (sizes and types are checked when hashing)."""
    present = set(_paths.list_files(root)) - {MANIFEST, DIGEST}
    missing = sorted(set(listed) - present)
    if missing:
        raise IntegrityError(
            f"{missing[0]!r} is listed in the manifest but missing from {shown!r}"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
            + "; the bundle is incomplete. Restore it from a good copy."
        )
    extra = sorted(present - set(listed))
    if extra:
        raise IntegrityError(
            f"{extra[0]!r} in {shown!r} is not listed in the manifest; a bundle holds only the "
            "files it lists. Remove it or restore the bundle from a good copy."
        )


def _hash_files(
    root: str,
    listed: dict[str, FileEntry],
    shown: str,
    copy_to: str | None,
    progress: _progress.Bytes,
    keep: Keeper | None = None,
) -> None:
    local = _paths.is_local(root)
    for rel, entry in sorted(listed.items()):
        full = _paths.join(root, *rel.split("/"))
        if local:
            if os.path.islink(full) or not os.path.isfile(full):
                raise IntegrityError(f"{rel!r} in {shown!r} is a link or not a regular file; refusing it.")
            _check_size(rel, entry, os.path.getsize(full))  # before reading a file of the wrong size
        kept: dict[int, Any] = {}
        if keep is not None and copy_to is None and entry.segments and local:
            segments = [(s.offset, s.size) for s in entry.segments]
            size, digests, kept = keep.read_segments(full, segments, progress.add)
        elif copy_to is not None:
            size, digests = _hashing.copy_hashing(
                full, os.path.join(copy_to, *rel.split("/")), progress.add, entry.bounds
            )
        else:
            size, digests = _hashing.hash_segments(full, entry.bounds, progress.add)
        _check_digests(rel, entry, size, digests)
        if keep is not None and kept:
            keep.add(full, kept)  # only once the file's digests passed


def _check_size(rel: str, entry: FileEntry, size: int) -> None:
    if size != entry.size:
        raise IntegrityError(
            f"{rel!r} has {size} bytes, the manifest records {entry.size}: the file was truncated or "
            "modified. Restore the bundle from a good copy."
        )


def _check_digests(rel: str, entry: FileEntry, size: int, digests: list[str]) -> None:
    """Raises IntegrityError naming the first byte range of ``rel`` that differs from the manifest."""
    _check_size(rel, entry, size)
    expected = [s.sha256 for s in entry.segments] or [entry.sha256]
    for i, (found, recorded) in enumerate(zip(digests, expected)):
        if found != recorded:
            where = (
                f"bytes {entry.segments[i].offset}..{entry.segments[i].offset + entry.segments[i].size} "
                if entry.segments
                else ""
            )
            raise IntegrityError(
                f"{rel!r} does not match the manifest ({where}sha256 {found[:16]}... vs recorded "
                f"{recorded[:16]}...): the file was modified or damaged. Restore the bundle from a good copy."
            )


def _fingerprint(root: str) -> bytes | None:
    """The manifest digest file's content: every committed save writes a new one."""
    try:
        return _paths.read_bytes(_paths.join(root, DIGEST), 200)
    except (OSError, BundleError):
        return None


def consistent_view(root: str) -> contextlib.AbstractContextManager[str]:
    """A view of the bundle that concurrent writers cannot change (see _commit.local_snapshot)."""
    if _paths.is_local(root):
        return _commit.local_snapshot(root)
    return contextlib.nullcontext(root)


@contextlib.contextmanager
def verified_copy(
    root: str, manifest: Manifest, label: str | None = None, verbose: bool | str = False
) -> Iterator[str]:
    """Checks every file against the manifest and yields a local directory holding them.

    A local bundle is checked in place; a remote one is copied to a temporary directory in the
    same pass (removed on exit), since Keras and TensorFlow then read it from local disk.
    """
    workdir = None if _paths.is_local(root) else tempfile.mkdtemp(prefix="faithful_restore-load-")
    try:
        verify_files(root, manifest, copy_to=workdir, label=label, verbose=verbose)
        yield root if workdir is None else workdir
    finally:
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)


def _reader(files_root: str, manifest: Manifest) -> Callable[[str], bytes]:
    def read(rel: str) -> bytes:
        entry = manifest.file_map.get(rel)
        if entry is None:
            raise BundleError(f"the manifest refers to {rel!r}, which it does not list; the manifest is damaged.")
        return _paths.read_bytes(os.path.join(files_root, *rel.split("/")), entry.size)

    return read


MAX_ATTEMPTS = 5


def retrying(root: str, attempt: Callable[[], tuple[T, bool]], doing: str) -> T:
    """Runs ``attempt`` until it has read one committed version of the bundle at ``root``.

    A writer may replace the bundle while it is read (an atomic swap of directories). ``attempt``
    returns (result, pinned): pinned means it read a snapshot no writer can change. Otherwise the
    result counts only if the manifest digest did not change meanwhile; a failure while it changed
    (or a file vanishing under a snapshot being linked) starts again.

    Raises:
        BundleError: the bundle was replaced on every one of :data:`MAX_ATTEMPTS` attempts.
    """
    for _attempt in range(MAX_ATTEMPTS):
        before = _fingerprint(root)
        try:
            result, pinned = attempt()
        except FileNotFoundError:
            continue
        except (BundleError, OSError):
            if _fingerprint(root) != before:
                continue
            raise
        if pinned or _fingerprint(root) == before:
            return result
    raise BundleError(
        f"the bundle at {root!r} was replaced {MAX_ATTEMPTS} times while it was being {doing}; "
        "retry when no writer is saving to it."
    )
