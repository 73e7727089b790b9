"""Pins the private Keras behaviour the library's results depend on (fails first when Keras changes it)."""

from __future__ import annotations

import h5py
import keras
import numpy as np
import pytest

from faithful_restore.capture import global_rng as _global_rng
from faithful_restore.errors import BundleError
from faithful_restore.runtime import keras_internals as _keras_internals


def _nested():
    inner = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="d1")], name="inner")
    outer = keras.Sequential([keras.Input((3,)), inner, keras.layers.Dense(1, name="d2")], name="outer")
    outer.compile("adam", "mse")
    outer.train_on_batch(np.ones((2, 3), "float32"), np.ones((2, 1), "float32"))
    return outer, inner


def test_direct_sublayers_are_one_level_down_in_order():
    outer, inner = _nested()
    assert [layer.name for layer in _keras_internals.direct_sublayers(outer)][-2:] == ["inner", "d2"]
    assert [layer.name for layer in _keras_internals.direct_sublayers(inner)][-1:] == ["d1"]


def test_own_variables_exclude_sublayers_and_put_trainable_first():
    outer, inner = _nested()
    dense = inner.get_layer("d1")
    assert [v.name for v in _keras_internals.own_variables(dense)] == ["kernel", "bias"]
    assert _keras_internals.own_variables(outer) == []
    bn = keras.layers.BatchNormalization()
    bn.build((None, 3))
    assert [v.name for v in _keras_internals.own_variables(bn)] == ["gamma", "beta", "moving_mean", "moving_variance"]


def test_optimizer_built_on_is_the_slot_order():
    outer, _ = _nested()
    built_on = _keras_internals.optimizer_built_on(outer.optimizer)
    assert [id(v) for v in built_on] == [id(v) for v in outer.trainable_variables]
    assert _keras_internals.optimizer_built_on(keras.optimizers.Adam()) is None
    # Adam's variables: iterations, learning rate, then (m, v) per built-on variable in that order.
    names = [v.name for v in outer.optimizer.variables]
    assert names[:2] == ["iteration", "learning_rate"] and len(names) == 2 + 2 * len(built_on)


def test_initial_epoch_drives_fit():
    outer, _ = _nested()
    seen = []
    callback = keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs: seen.append(epoch))

    class Resume(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            _keras_internals.set_initial_epoch(self.model, 2)

    outer.fit(
        np.ones((2, 3), "float32"), np.ones((2, 1), "float32"), epochs=3, verbose=0, callbacks=[Resume(), callback]
    )
    assert seen == [2]
    assert _keras_internals.initial_epoch(outer) == 2


def test_keras_writes_the_optimizer_in_the_layout_the_reader_expects(tmp_path):
    outer, _ = _nested()
    outer.save_weights(tmp_path / "w.weights.h5")
    with h5py.File(tmp_path / "w.weights.h5") as f:
        names = sorted(f["optimizer/vars"].keys(), key=int)
    assert names == [str(i) for i in range(len(outer.optimizer.variables))]


def test_keras_global_seed_generator_is_found():
    keras.random.normal((1,))  # creates Keras' global seed generator
    assert _global_rng._keras_global_seed(create=False) is not None


def test_a_missing_attribute_is_our_error_naming_keras():
    with pytest.raises(BundleError, match="this Keras .* has no _flatten_layers"):
        _keras_internals.direct_sublayers(object())
    with pytest.raises(BundleError, match="_initial_epoch"):
        _keras_internals.set_initial_epoch(object(), 1)
