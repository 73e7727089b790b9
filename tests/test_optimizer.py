"""Optimizer state: every variable restored or a clear error; never a silent skip."""

from __future__ import annotations

import h5py
import keras
import numpy as np
import pytest
from conftest import sequential_model

import faithful_restore as fr
from faithful_restore import _optimizer


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
