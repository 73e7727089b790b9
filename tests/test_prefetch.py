"""Reading weight bytes once: verified buffers that become variables without a copy."""

from __future__ import annotations

import hashlib

import h5py
import keras
import numpy as np
import pytest
from conftest import assert_same_variables, needs_segments
from hypothesis import given, settings
from hypothesis import strategies as st

import faithful_restore as fr
from faithful_restore.errors import IntegrityError
from faithful_restore.fast import prefetch as _prefetch

WIDE = 600  # a 600x600 float32 kernel is 1.44 MB: above _prefetch.MIN_KEEP


def _tiles(size, cuts):
    bounds = sorted({c for c in cuts if 0 < c < size})
    edges = [0, *bounds, size]
    return [(a, b - a) for a, b in zip(edges, edges[1:])]


@settings(max_examples=25, deadline=None)
@given(
    data=st.binary(min_size=1, max_size=5000),
    cuts=st.lists(st.integers(0, 5000), max_size=8),
    workers=st.sampled_from([1, 2, 3]),
)
def test_read_segments_hashes_each_range_and_keeps_large_ones(tmp_path_factory, data, cuts, workers):
    path = tmp_path_factory.mktemp("seg") / "f.bin"
    path.write_bytes(data)
    segments = _tiles(len(data), cuts)
    keep_min = 1000
    original = _prefetch.MIN_KEEP
    _prefetch.MIN_KEEP = keep_min
    try:
        size, digests, kept = _prefetch.read_segments(str(path), segments, workers=workers)
    finally:
        _prefetch.MIN_KEEP = original
    assert size == len(data)
    assert digests == [hashlib.sha256(data[o : o + n]).hexdigest() for o, n in segments]
    assert sorted(kept) == [o for o, n in segments if n >= keep_min]
    for offset, buf in kept.items():
        assert buf.ctypes.data % 64 == 0 and buf.flags.writeable
        assert buf.tobytes() == data[offset : offset + buf.nbytes]


def test_a_short_file_yields_a_short_count_and_no_buffer_for_the_missing_bytes(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * (3 << 20))
    segments = [(0, 2 << 20), (2 << 20, 2 << 20)]  # the second runs 1 MiB past the end
    size, digests, kept = _prefetch.read_segments(str(path), segments)
    assert size == 3 << 20
    assert digests[1] == hashlib.sha256(b"x" * (1 << 20)).hexdigest()
    assert list(kept) == [0]


@pytest.mark.parametrize("workers", [1, 2])
def test_a_worker_failure_is_raised_not_swallowed(tmp_path, workers):
    with pytest.raises(FileNotFoundError):
        _prefetch.read_segments(str(tmp_path / "missing.bin"), [(0, 10), (10, 10)], workers=workers)


@pytest.mark.parametrize("nbytes", [1, 4095, 4096, (2 << 20) + 3])
def test_aligned_empty_is_aligned_writable_and_sized(nbytes):
    buf = _prefetch.aligned_empty(nbytes)
    assert buf.nbytes == nbytes and buf.dtype == np.uint8
    assert buf.ctypes.data % 64 == 0
    buf[:] = 7
    assert int(buf[-1]) == 7


def _kept_file(tmp_path, array):
    path = str(tmp_path / "w.h5")
    with h5py.File(path, "w") as f:
        f["a"] = array
        f.create_dataset("chunked", data=array, chunks=True)
        offset, nbytes = f["a"].id.get_offset(), array.nbytes
    buffers = _prefetch.Buffers()
    _, _, kept = _prefetch.read_segments(path, [(offset, nbytes)], workers=1)
    buffers.add(path, kept)
    return path, buffers


def test_served_buffers_are_donated_to_one_variable_only(tmp_path):
    array = np.random.default_rng(0).random((WIDE, WIDE), "float32")
    path, buffers = _kept_file(tmp_path, array)
    v1 = keras.Variable(np.zeros((WIDE, WIDE), "float32"))
    v2 = keras.Variable(np.zeros((WIDE, WIDE), "float32"))
    with _prefetch.serving(buffers), h5py.File(path, "r") as f:
        assert _prefetch.take(f["chunked"]) is None  # not a kept segment: Keras reads it
        served = _prefetch.take(f["a"])
        assert _prefetch.take(f["a"]) is None  # handed out once
        assert served is not None and np.array_equal(served, array)
        view = served[:]  # a derived array is never donated
        v1.assign(served)
        assert not served.flags.writeable  # NumPy can no longer change the variable's memory
        v2.assign(served)  # a second variable gets a copy, not the same memory
        v2.assign(view)
    v1.assign_add(np.ones((WIDE, WIDE), "float32"))
    np.testing.assert_array_equal(v2.numpy(), array)
    np.testing.assert_array_equal(v1.numpy(), array + 1)


def test_a_variable_of_another_dtype_gets_a_converted_copy(tmp_path):
    array = np.random.default_rng(1).random((WIDE, WIDE), "float32")
    path, buffers = _kept_file(tmp_path, array)
    v = keras.Variable(np.zeros((WIDE, WIDE), "float16"), dtype="float16")
    with _prefetch.serving(buffers), h5py.File(path, "r") as f:
        served = _prefetch.take(f["a"])
        v.assign(served)
        assert served.flags.writeable  # not donated
    np.testing.assert_array_equal(v.numpy(), array.astype("float16"))


def test_nothing_is_served_outside_the_block(tmp_path):
    array = np.ones((WIDE, WIDE), "float32")
    path, buffers = _kept_file(tmp_path, array)
    with h5py.File(path, "r") as f:
        assert _prefetch.take(f["a"]) is None
    with _prefetch.serving(buffers):
        pass
    assert len(buffers) == 0  # unclaimed buffers are released with the block


def _wide_model():
    keras.utils.set_random_seed(7)
    model = keras.Sequential(
        [
            keras.Input((WIDE,)),
            keras.layers.Dense(WIDE, activation="relu"),
            keras.layers.Dense(WIDE),
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, WIDE)).astype("float32"), rng.normal(size=(16, 1)).astype("float32")
    model.train_on_batch(x, y)
    return model, x, y


@needs_segments
def test_load_bundle_donates_every_large_weight_and_trains_on_identically(tmp_path, monkeypatch):
    model, x, y = _wide_model()
    fr.save_bundle(model, str(tmp_path / "b"))
    donated = []
    real = _prefetch.donate

    def counting(value, dtype):
        tensor = real(value, dtype)
        donated.append(tensor is not None)
        return tensor

    monkeypatch.setattr(_prefetch, "donate", counting)
    restored = fr.load_bundle(str(tmp_path / "b")).model
    # Two kernels, each with Adam's two slots: every one came from the verified buffers.
    assert donated == [True] * 6
    assert_same_variables(model.weights, restored.weights)
    assert_same_variables(model.optimizer.variables, restored.optimizer.variables)
    # The optimizer updates the donated memory in place; both models must still agree bitwise.
    for _ in range(2):
        model.train_on_batch(x, y)
        restored.train_on_batch(x, y)
    assert_same_variables(model.weights, restored.weights)
    assert_same_variables(model.optimizer.variables, restored.optimizer.variables)


@needs_segments
def test_a_modified_large_tensor_is_refused_before_it_reaches_a_variable(tmp_path):
    model, _, _ = _wide_model()
    bundle = str(tmp_path / "b")
    fr.save_bundle(model, bundle)
    weights = tmp_path / "b" / "model" / "model.weights.h5"
    with h5py.File(weights, "r") as f:
        offset = f["layers/dense/vars/0"].id.get_offset()
    with open(weights, "r+b") as f:
        f.seek(offset + 1000)
        byte = f.read(1)
        f.seek(offset + 1000)
        f.write(bytes([byte[0] ^ 1]))
    with pytest.raises(IntegrityError, match=f"bytes {offset}\\.\\."):
        fr.load_bundle(bundle)
