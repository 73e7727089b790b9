"""Optimizer state: every variable restored or a clear error; never a silent skip."""

from __future__ import annotations

import json

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import assert_same_variables, make_xy, sequential_model

import faithful_restore as fr
from faithful_restore.capture import optimizer as _optimizer


def test_describe_records_every_variable():
    model = sequential_model()
    record = _optimizer.describe(model.optimizer, model, "model")
    assert record["iterations"] == 8 and record["built"]
    assert len(record["variables"]) == len(model.optimizer.variables)
    trainable = {id(v) for v in model.trainable_variables}
    assert [id(model.variables[i]) for i in record["variable_indices"]] == [
        id(v) for v in model.variables if id(v) in trainable
    ]


def test_restore_refuses_a_mismatched_file(tmp_path):
    model = sequential_model()
    record = _optimizer.describe(model.optimizer, model, "separate")
    path = str(tmp_path / "opt.h5")
    _optimizer.write_h5(model.optimizer, path)
    with h5py.File(path, "a") as f:
        del f["optimizer/vars/3"]
    target = keras.optimizers.Adam()
    with pytest.raises(fr.BundleError, match="holds 9 optimizer variables, the manifest records 10"):
        _optimizer.restore(target, record, path, model)


def test_restore_refuses_other_shapes(tmp_path):
    model = sequential_model()
    record = _optimizer.describe(model.optimizer, model, "separate")
    path = str(tmp_path / "opt.h5")
    _optimizer.write_h5(model.optimizer, path)
    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(9), keras.layers.Dense(1)])
    with pytest.raises(fr.BundleError, match="architecture changed"):
        _optimizer.restore(keras.optimizers.Adam(), record, path, other)
    same_count = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(9), keras.layers.Dropout(0.1), keras.layers.Dense(1)]
    )
    with pytest.raises(fr.BundleError, match="shape"):
        _optimizer.restore(keras.optimizers.Adam(), record, path, same_count)


def test_restored_values_are_bitwise(tmp_path):
    model = sequential_model()
    record = _optimizer.describe(model.optimizer, model, "separate")
    path = str(tmp_path / "opt.h5")
    _optimizer.write_h5(model.optimizer, path)
    target = keras.optimizers.Adam(1e-2)
    _optimizer.restore(target, record, path, model)
    for a, b in zip(model.optimizer.variables, target.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _bfloat16_model():
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, dtype="bfloat16"), keras.layers.Dense(2)])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    model.train_on_batch(np.ones((4, 6), np.float32), np.zeros((4, 2), np.float32))
    return model


@pytest.mark.parametrize("source", ["model", "separate"])
def test_bfloat16_slots_restore_bitwise(tmp_path, source):
    # HDF5 has no bfloat16: Keras stores 2-byte opaque values marked with a "dtype" attribute.
    model = _bfloat16_model()
    assert any(v.dtype == "bfloat16" for v in model.optimizer.variables)
    kwargs = (
        {"optimizer": keras.optimizers.Adam.from_config(model.optimizer.get_config())} if source == "separate" else {}
    )
    if kwargs:
        kwargs["optimizer"].build(model.trainable_variables)
        for mine, theirs in zip(kwargs["optimizer"].variables, model.optimizer.variables):
            mine.assign(theirs)
    fr.save_bundle(model, str(tmp_path / "b"), **kwargs)
    restored = fr.load_bundle(str(tmp_path / "b"))
    assert restored.manifest.optimizer["source"] == source
    saved = kwargs.get("optimizer", model.optimizer).variables
    assert [v.dtype for v in restored.optimizer.variables] == [v.dtype for v in saved]
    for a, b in zip(saved, restored.optimizer.variables):
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()


def test_a_damaged_bfloat16_marker_is_a_bundle_error(tmp_path):
    model = _bfloat16_model()
    record = _optimizer.describe(model.optimizer, model, "separate")
    path = str(tmp_path / "opt.h5")
    _optimizer.write_h5(model.optimizer, path)
    index = next(i for i, v in enumerate(model.optimizer.variables) if v.dtype == "bfloat16")
    with h5py.File(path, "a") as f:
        shape = f[f"optimizer/vars/{index}"].shape
        del f[f"optimizer/vars/{index}"]
        f.create_dataset(f"optimizer/vars/{index}", data=np.zeros(shape, np.float32)).attrs["dtype"] = "bfloat16"
    with pytest.raises(fr.BundleError, match=f"optimizer/vars/{index} is marked bfloat16 but holds 4-byte values"):
        _optimizer.restore(keras.optimizers.Adam(), record, path, model)


# Reproductions of defects found in review.


def test_compiled_optimizer_built_on_a_subset_restores_with_compile(tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(6), keras.layers.Dense(1)])
    model.compile(keras.optimizers.Adam(0.01), "mse")
    head = model.layers[-1].trainable_variables
    model.optimizer.build(head)
    model.optimizer.apply_gradients(zip([tf.ones_like(v) for v in head], head))
    path = str(tmp_path / "b")
    fr.save_bundle(model, path)
    bundle = fr.load_bundle(path)  # compile=True
    assert_same_variables(model.optimizer.variables, bundle.optimizer.variables)
    assert bundle.model.optimizer is bundle.optimizer
    assert [v.path.split("/")[-1] for v in bundle.optimizer._trainable_variables] == ["kernel", "bias"]


def test_layer_frozen_after_training_keeps_its_optimizer_state(tmp_path):
    model = sequential_model()
    model.layers[0].trainable = False
    model.compile(model.optimizer, "mse")  # fine-tuning: same optimizer, a frozen layer
    x, y = make_xy(16)
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    path = str(tmp_path / "b")
    fr.save_bundle(model, path)
    bundle = fr.load_bundle(path)
    assert_same_variables(model.optimizer.variables, bundle.optimizer.variables)
    assert int(bundle.optimizer.iterations.numpy()) == int(model.optimizer.iterations.numpy())


def test_separate_optimizer_and_compiled_optimizer_both_restored(tmp_path):
    model = sequential_model()  # compiled and trained: model.optimizer has state
    x, y = make_xy(16)
    extra = keras.optimizers.SGD(0.1, momentum=0.9)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean((model(x) - y) ** 2)
    extra.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
    path = str(tmp_path / "b")
    manifest = fr.save_bundle(model, path, optimizer=extra)
    assert manifest.model_optimizer is not None
    bundle = fr.load_bundle(path)
    assert_same_variables(extra.variables, bundle.optimizer.variables)
    assert_same_variables(model.optimizer.variables, bundle.model.optimizer.variables)
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["optimizer"]["source"] == "separate"
