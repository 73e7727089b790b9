"""Reads each weight byte of a bundle once, into buffers that are hashed and then become variables.

A segmented weight file (bundle format 2.0) lists every large tensor's raw bytes as a segment with
its own SHA-256. While Keras rebuilds the model, :func:`read_segments` reads each segment into a
fresh 64-byte-aligned NumPy buffer on two threads, hashes that buffer, and keeps the large ones.
Once every file has passed its check (so HDF5 only ever parses verified metadata), the loader runs
inside :func:`serving`: when Keras or the optimizer restore asks h5py for a dataset whose bytes are
exactly a kept segment, they get that verified buffer instead of a second read, and assigning it
to a Keras variable hands the memory to TensorFlow through DLPack instead of copying it twice.

Why: the old path read every byte three times after hashing it (h5py's read, TensorFlow's
defensive ``ndarray.copy()``, and a copy into freshly faulted tensor memory). Each buffer is
donated at most once and becomes read-only on the NumPy side when it is, so no NumPy array and
variable, and no two variables, ever share writable memory. Anything that does not fit (chunked
or filtered datasets, bfloat16, byte-swapped dtypes, a dtype the variable does not have) takes
Keras' own path unchanged.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import mmap
import os
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from faithful_restore.fast import inline_hash as _inline_hash
from faithful_restore.fast._patch import Patch, Target, h5_stores, wrapper_of
from faithful_restore.format import durable as _durable
from faithful_restore.format import paths as _paths

# Smaller segments are metadata or small tensors (the writer never records a dataset below this):
# hashed, not kept.
MIN_KEEP = _inline_hash.MIN_SEGMENT
# TensorFlow's CPU kernels require tensor memory aligned to EIGEN_MAX_ALIGN_BYTES (64).
_ALIGN = 64
# One thread per core on the machines this targets; hashlib and file reads release the GIL.
_WORKERS = 2

_local = threading.local()


class Donatable(np.ndarray):
    """A verified buffer handed to a loader; its memory may move into one variable, once."""

    _fr_donatable: bool = False

    def __array_finalize__(self, obj: Any) -> None:
        # Views and results derived from a handed-out buffer are never donated: only the exact
        # object handed out is, so no second array can keep writable access to a variable.
        self._fr_donatable = False


_MADV_POPULATE_WRITE = 23  # Linux 5.14+
_POPULATE_STEP = 2 << 20


@functools.cache
def _madvise() -> Any:
    import ctypes

    try:
        madvise = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    madvise.restype = ctypes.c_int
    return madvise


def _populate(region: mmap.mmap, array: np.ndarray) -> bool:
    """Faults ``region`` in a few MiB at a time (each call releases the GIL and the mm lock)."""
    madvise = _madvise()
    if madvise is None:
        return False
    base, size = array.ctypes.data, len(region)
    for start in range(0, size, _POPULATE_STEP):
        if madvise(base + start, min(_POPULATE_STEP, size - start), _MADV_POPULATE_WRITE) != 0:
            return start > 0
    return True


def aligned_empty(nbytes: int) -> np.ndarray:
    """An uninitialized uint8 buffer of ``nbytes`` whose first byte is 64-byte aligned."""
    if nbytes and hasattr(mmap, "MAP_ANONYMOUS") and sys.platform.startswith("linux"):
        region = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        array = np.frombuffer(region, np.uint8)
        _populate(region, array)
        return array
    raw = np.empty(nbytes + _ALIGN, np.uint8)
    start = -raw.ctypes.data % _ALIGN
    return raw[start : start + nbytes]


class Buffers:
    """Verified segment buffers of local files, keyed by file identity and byte offset."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kept: dict[tuple[int, int, int], np.ndarray] = {}

    def add(self, path: str, kept: dict[int, np.ndarray]) -> None:
        st = os.stat(path)
        with self._lock:
            for offset, buf in kept.items():
                self._kept[(st.st_dev, st.st_ino, offset)] = buf

    def take(self, path: str, offset: int, nbytes: int) -> np.ndarray | None:
        """Removes and returns the buffer holding exactly ``nbytes`` at ``offset``, if kept."""
        try:
            st = os.stat(path)
        except OSError:
            return None
        with self._lock:
            key = (st.st_dev, st.st_ino, offset)
            buf = self._kept.get(key)
            if buf is None or buf.nbytes != nbytes:
                return None
            return self._kept.pop(key)

    def __len__(self) -> int:
        with self._lock:
            return len(self._kept)

    def clear(self) -> None:
        with self._lock:
            self._kept.clear()

    def read_segments(
        self, path: str, segments: Sequence[tuple[int, int]], progress: Callable[[int], None] | None = None
    ) -> tuple[int, list[str], dict[int, np.ndarray]]:
        """:func:`read_segments`; the caller adds what it keeps once the digests passed."""
        return read_segments(path, segments, progress)


def read_segments(
    path: str,
    segments: Sequence[tuple[int, int]],
    progress: Callable[[int], None] | None = None,
    workers: int = _WORKERS,
) -> tuple[int, list[str], dict[int, np.ndarray]]:
    """Reads the file's ``(offset, size)`` segments on ``workers`` threads, hashing each.

    Returns (bytes read, SHA-256 hex digest per segment, {offset: buffer} for segments of at least
    :data:`MIN_KEEP` bytes). A file shorter than its segments yields a short count and digests of
    what was there, so the caller's size and digest checks name the damage.
    """
    digests: list[str] = [""] * len(segments)
    counts = [0] * len(segments)
    kept: dict[int, np.ndarray] = {}
    lock = threading.Lock()
    order = iter(range(len(segments)))
    stop = threading.Event()  # one worker failed: the others stop taking segments

    def work() -> None:
        scratch = bytearray()
        try:
            with open(path, "rb", buffering=0) as f:
                while not stop.is_set():
                    with lock:
                        i = next(order, None)
                    if i is None:
                        return
                    offset, size = segments[i]
                    # Small segments (metadata, biases) go through one reused scratch buffer.
                    keep = size >= MIN_KEEP
                    buf: Any
                    if keep:
                        buf = aligned_empty(size)
                    else:
                        if len(scratch) < size:
                            scratch = bytearray(size)
                        buf = scratch
                    view = memoryview(buf)[:size]
                    got = _paths.read_at(f, offset, view)
                    digests[i] = hashlib.sha256(view[:got]).hexdigest()
                    counts[i] = got
                    view.release()
                    with lock:
                        if keep and got == size:
                            kept[offset] = buf
                        if progress is not None:
                            progress(got)
        except BaseException:
            stop.set()
            raise

    # The calling thread is one of the workers; in_background re-raises the others' failures.
    with contextlib.ExitStack() as helpers:
        for _ in range(workers - 1):
            helpers.enter_context(_durable.in_background(work, "read"))
        work()
    return sum(counts), digests, kept


@contextlib.contextmanager
def serving(buffers: Buffers | None) -> Iterator[None]:
    """Within the block, this thread's h5py reads of kept segments return the verified buffers.

    Only buffers whose file passed its check are ever in ``buffers``, so it may still be filling
    when the block starts. Buffers still unclaimed at the end are released. Without hooks (another
    Keras), Keras reads the file as usual.
    """
    if buffers is None or getattr(_local, "buffers", None) is not None or not PATCH.active():
        yield
        return
    _local.buffers = buffers
    try:
        yield
    finally:
        _local.buffers = None
        buffers.clear()


def take(dataset: Any) -> np.ndarray | None:
    """The verified buffer holding ``dataset``'s values, as its dtype and shape; else None.

    Only plain contiguous datasets of a native numeric dtype qualify; the buffer must hold exactly
    the dataset's bytes at the offset HDF5's (verified) metadata gives.
    """
    buffers: Buffers | None = getattr(_local, "buffers", None)
    if buffers is None:
        return None
    import h5py

    if not isinstance(dataset, h5py.Dataset) or "dtype" in dataset.attrs:  # Keras marks bfloat16 so
        return None
    dtype = dataset.dtype
    plain = dataset.chunks is None and not dataset.is_virtual and not dataset.external
    if not (plain and dtype.isnative and dtype.kind in "iufc"):
        return None
    offset = dataset.id.get_offset()
    if offset is None:
        return None
    buf = buffers.take(dataset.file.filename, offset, dataset.size * dtype.itemsize)
    if buf is None:
        return None
    out = buf.view(dtype).reshape(dataset.shape).view(Donatable)
    out._fr_donatable = True
    return out


def _serving_getitem(original: Any) -> Any:
    def __getitem__(self: Any, *args: Any, **kwargs: Any) -> Any:
        key = args[0] if len(args) == 1 and not kwargs else None
        if key is not None and getattr(_local, "buffers", None) is not None:
            import h5py

            group = getattr(self, "_h5_entry_group", getattr(self, "group", None))
            # Only a plain child dataset; links and paths take Keras' checked route.
            if isinstance(group, h5py.Group) and isinstance(key, str) and "/" not in key:
                if group.get(key, default=None, getclass=True, getlink=True) is h5py.HardLink:
                    found = take(group[key])
                    if found is not None:
                        return found
        return original(self, *args, **kwargs)

    return wrapper_of(original, __getitem__)


def _donating_convert(original: Any) -> Any:
    def _convert_to_tensor(self: Any, *args: Any, **kwargs: Any) -> Any:
        value = args[0] if args else kwargs.get("value")
        if type(value) is Donatable and value._fr_donatable and len(args) + len(kwargs) <= 2:
            dtype = args[1] if len(args) > 1 else kwargs.get("dtype")
            tensor = donate(value, dtype if dtype is not None else getattr(self, "_dtype", None))
            if tensor is not None:
                return tensor
        return original(self, *args, **kwargs)

    return wrapper_of(original, _convert_to_tensor)


def donate(value: Donatable, dtype: Any) -> Any:
    """Moves ``value``'s memory into a TensorFlow tensor without copying; None if it cannot.

    The array becomes read-only, so NumPy can no longer change what the variable holds.
    """
    import tensorflow as tf

    try:
        if dtype is not None and tf.as_dtype(dtype) != tf.as_dtype(value.dtype):
            return None
        value._fr_donatable = False
        tensor = tf.experimental.dlpack.from_dlpack(np.ndarray.__dlpack__(value))
    except Exception:  # noqa: BLE001 - any refusal falls back to Keras' copying conversion
        return None
    value.flags.writeable = False
    return tensor


def _targets() -> list[Target]:
    from keras.src.backend.tensorflow.core import Variable

    return [
        *[Target(store, "__getitem__", params, _serving_getitem) for store, params in h5_stores("__getitem__")],
        Target(Variable, "_convert_to_tensor", ("self", "value", "dtype"), _donating_convert),
    ]


PATCH = Patch("prefetch", _targets)
