"""Hashing HDF5 datasets while they are written: the segments describe the file exactly."""

from __future__ import annotations

import hashlib
import os
import threading

import h5py
import keras
import numpy as np
import pytest
from conftest import needs_segments

import faithful_restore as fr
from faithful_restore.fast import inline_hash as _inline_hash

BIG = _inline_hash.MIN_SEGMENT // 4 + 1000  # float32 elements: just over one segment


def _file_digests(path, segments):
    with open(path, "rb") as f:
        data = f.read()
    return [hashlib.sha256(data[s.offset : s.offset + s.size]).hexdigest() for s in segments], len(data)


def _check_tiles(path, segments):
    found, size = _file_digests(path, segments)
    assert found == [s.sha256 for s in segments]
    assert segments[0].offset == 0 and sum(s.size for s in segments) == size
    assert all(a.offset + a.size == b.offset for a, b in zip(segments, segments[1:]))


def _write(path, arrays, **kwargs):
    with h5py.File(path, "w") as f:
        for name, array in arrays.items():
            f.create_dataset(name, data=array, **kwargs)
        f["via_setitem"] = np.arange(BIG, dtype="float32")  # Keras' own way of writing


def test_large_datasets_become_segments_that_match_the_file(tmp_path):
    path = str(tmp_path / "w.h5")
    arrays = {"a": np.random.default_rng(0).random(BIG, "float32"), "small": np.ones(10), "b": np.ones((BIG, 2))}
    with _inline_hash.recording(str(tmp_path)) as recorder:
        _write(path, arrays)
    segments = recorder.segments(path)
    _check_tiles(path, segments)
    large = [s for s in segments if s.size >= _inline_hash.MIN_SEGMENT]
    assert len(large) == 3  # a, b, via_setitem; "small" and the metadata fall into the gaps


@pytest.mark.parametrize("kwargs", [{"compression": "gzip"}, {"chunks": True}])
def test_filtered_or_chunked_datasets_are_hashed_with_the_gaps(tmp_path, kwargs):
    path = str(tmp_path / "w.h5")
    with _inline_hash.recording(str(tmp_path)) as recorder:
        _write(path, {"a": np.random.default_rng(1).random(BIG, "float32")}, **kwargs)
    segments = recorder.segments(path)
    _check_tiles(path, segments)
    # Only via_setitem was hashed as it was written; dataset "a" was hashed with the gaps.
    assert [size for _, size, _ in recorder._ranges[os.path.realpath(path)]] == [BIG * 4]


def test_nothing_is_recorded_outside_the_directory_the_block_or_the_thread(tmp_path):
    inside, outside = tmp_path / "in", tmp_path / "out"
    inside.mkdir()
    outside.mkdir()
    with _inline_hash.recording(str(inside)) as recorder:
        _write(str(outside / "w.h5"), {})
        other = threading.Thread(target=_write, args=(str(inside / "thread.h5"), {}))
        other.start()
        other.join()
        with _inline_hash.recording(str(inside)) as nested:
            _write(str(inside / "nested.h5"), {})
    _write(str(inside / "after.h5"), {})
    for name in ("thread.h5", "after.h5"):
        assert recorder.segments(str(inside / name)) == ()
    assert recorder.segments(str(outside / "w.h5")) == ()
    assert nested.segments(str(inside / "nested.h5")) == ()
    _check_tiles(str(inside / "nested.h5"), recorder.segments(str(inside / "nested.h5")))


def test_a_file_changed_after_recording_yields_no_segments(tmp_path):
    path = str(tmp_path / "w.h5")
    with _inline_hash.recording(str(tmp_path)) as recorder:
        _write(path, {})
    os.truncate(path, 100)  # the recorded range now reaches past the end
    assert recorder.segments(path) == ()


@needs_segments
def test_save_bundle_hashes_the_weights_in_segments_and_load_checks_them(tmp_path):
    model = keras.Sequential([keras.Input((600,)), keras.layers.Dense(600), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    model.train_on_batch(np.ones((4, 600), "float32"), np.ones((4, 1), "float32"))
    path = tmp_path / "b"
    manifest = fr.save_bundle(model, str(path), sample_inputs=np.ones((2, 600), "float32"))
    assert manifest.format_version == fr.FORMAT_VERSION
    weights = manifest.file_map["model/model.weights.h5"]
    # The kernel and its two Adam slots (1.44 MB each) are segments of their own.
    assert len([s for s in weights.segments if s.size >= 600 * 600 * 4]) == 3
    _check_tiles(str(path / "model" / "model.weights.h5"), weights.segments)
    assert all(not e.segments for e in manifest.files if e is not weights)
    restored = fr.load_bundle(str(path))
    np.testing.assert_array_equal(restored.model.layers[0].kernel.numpy(), model.layers[0].kernel.numpy())


def test_segments_are_recorded_where_os_has_no_preadv(tmp_path, monkeypatch):
    # Windows has no os.preadv; the reads go through portable file objects instead.
    monkeypatch.delattr(os, "preadv", raising=False)
    monkeypatch.delattr(os, "pread", raising=False)
    path = str(tmp_path / "w.h5")
    with _inline_hash.recording(str(tmp_path)) as recorder:
        _write(path, {"a": np.random.default_rng(2).random(BIG, "float32")})
    segments = recorder.segments(path)
    _check_tiles(path, segments)
    assert len([s for s in segments if s.size >= _inline_hash.MIN_SEGMENT]) == 2
