"""_save_views: Keras' HDF5 writer gets zero-copy, read-only snapshots of the variables."""

from __future__ import annotations

import os
import threading

import h5py
import keras
import ml_dtypes
import numpy as np
import pytest
import tensorflow as tf
from conftest import mirrored_strategy
from hypothesis import given, settings
from hypothesis import strategies as st

import faithful_restore as fr
from faithful_restore.fast import save_views as _save_views
from faithful_restore.runtime.variables import read

saving_lib = pytest.importorskip("keras.src.saving.saving_lib")


def _address(value) -> int:
    return np.asarray(read(value)).ctypes.data


@settings(max_examples=25, deadline=None)
@given(
    dtype=st.sampled_from(["float32", "float16", "float64", "int32", "int64", "bfloat16"]),
    shape=st.lists(st.integers(1, 7), min_size=1, max_size=3).map(tuple),
    keras_variable=st.booleans(),
)
def test_view_is_a_zero_copy_read_only_snapshot(dtype, shape, keras_variable):
    start = np.arange(int(np.prod(shape)), dtype=np.float64).reshape(shape)
    if keras_variable:
        variable = keras.Variable(start.astype("float32"), dtype=dtype)
    else:
        np_dtype = ml_dtypes.bfloat16 if dtype == "bfloat16" else np.dtype(dtype)
        variable = tf.Variable(start.astype(np_dtype))
    before = np.array(variable)
    view = _save_views.view(variable)
    assert view is not None
    assert view.shape == shape and view.dtype == before.dtype
    assert view.ctypes.data == _address(variable)  # the variable's own buffer, not a copy
    assert not view.flags.writeable
    with pytest.raises(ValueError):
        view[...] = 0
    variable.assign(np.ones(shape, dtype=before.dtype))
    np.testing.assert_array_equal(view, before)  # the update copied the buffer; the view kept its value
    assert np.all(np.array(variable) == 1)


def test_view_of_a_tensor_and_what_it_declines():
    tensor = tf.constant([1.0, 2.0])
    assert _save_views.view(tensor).ctypes.data == np.asarray(tensor).ctypes.data
    assert _save_views.view(tf.constant(["a"])) is None
    assert _save_views.view(np.ones(3)) is None
    assert _save_views.view([1.0]) is None
    assert _save_views.view(keras.Variable(1.0)) is None  # a scalar: not worth a view
    with mirrored_strategy().scope():
        mirrored = keras.Variable(np.ones(3, np.float32))
    assert _save_views.view(mirrored) is None  # one buffer per replica: Keras' path decides


@pytest.fixture
def h5_writes(monkeypatch):
    """The arrays h5py is asked to store, in order."""
    seen: list[np.ndarray] = []
    original = h5py.Group.create_dataset

    def create_dataset(self, name, *args, **kwargs):
        seen.append(kwargs.get("data"))
        return original(self, name, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", create_dataset)
    return seen


def _store(path: str):
    if "__setitem__" not in vars(saving_lib.H5IOStore):  # Keras < 3.10 writes through H5Entry
        pytest.skip("this Keras writes through per-layer H5Entry objects")
    return saving_lib.H5IOStore(path, mode="w")


def _trained(units: int = 5):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(units)])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    model.train_on_batch(np.ones((2, 4), np.float32), np.zeros((2, units), np.float32))
    return model


def test_keras_store_and_optimizer_writes_get_views_only_inside_writing(tmp_path, h5_writes):
    model = _trained()
    kernel, optimizer = model.layers[0].kernel, model.optimizer
    # Every array variable (scalars such as the step counter keep Keras' copy).
    wanted = [_address(v) for v in [kernel, *optimizer.variables] if len(v.shape)]
    assert len(wanted) == 1 + 2 * len(model.trainable_variables)  # the kernel and the Adam slots

    def write(path: str) -> list[int]:
        h5_writes.clear()
        store = _store(path)
        store["kernel"] = kernel
        optimizer.save_own_variables(store)
        store.close()
        return [a.ctypes.data for a in h5_writes if isinstance(a, np.ndarray)]

    outside = write(str(tmp_path / "copied.h5"))
    with _save_views.writing():
        inside = write(str(tmp_path / "viewed.h5"))
    assert [a for a in inside if a in wanted] == wanted
    assert not set(outside) & set(wanted)  # Keras' own path copies
    viewed, copied = _datasets(tmp_path / "viewed.h5"), _datasets(tmp_path / "copied.h5")
    assert len(viewed) == 1 + len(optimizer.variables)
    assert viewed == copied  # the same file content, dataset by dataset


def _datasets(path) -> dict[str, tuple[str, bytes]]:
    out: dict[str, tuple[str, bytes]] = {}
    with h5py.File(path) as f:
        f.visititems(
            lambda name, item: (
                out.update({name: (str(item.dtype), item[()].tobytes())}) if isinstance(item, h5py.Dataset) else None
            )
        )
    return out


def test_other_threads_keep_keras_copies(tmp_path, h5_writes):
    _store(str(tmp_path / "probe.h5")).close()  # skips here, in the test's thread, on Keras < 3.10
    model = _trained()
    kernel = model.layers[0].kernel
    with _save_views.writing():

        def worker():
            store = _store(str(tmp_path / "thread.h5"))
            store["kernel"] = kernel
            store.close()

        thread = threading.Thread(target=worker)
        thread.start()
        thread.join()
    (written,) = [a for a in h5_writes if isinstance(a, np.ndarray)]
    assert written.ctypes.data != _address(kernel)


def test_bundle_written_from_views_restores_bitwise(tmp_path):
    model = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(8, dtype="bfloat16"),
            keras.layers.BatchNormalization(),
            keras.layers.Dense(3),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    x = np.random.default_rng(0).normal(size=(16, 6)).astype(np.float32)
    model.train_on_batch(x, np.zeros((16, 3), np.float32))
    fr.save_bundle(model, os.fspath(tmp_path / "b"))
    restored = fr.load_bundle(os.fspath(tmp_path / "b"))
    for saved, loaded in zip(
        model.variables + model.optimizer.variables, restored.model.variables + restored.model.optimizer.variables
    ):
        assert np.asarray(saved).dtype == np.asarray(loaded).dtype
        assert np.asarray(saved).tobytes() == np.asarray(loaded).tobytes()
    # The model can still be trained and saved after its variables were viewed.
    model.train_on_batch(x, np.ones((16, 3), np.float32))
    fr.save_bundle(model, os.fspath(tmp_path / "b"), overwrite=True)
