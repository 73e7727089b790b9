"""Skipping Keras' initializers while a bundle loads: faster, and never a different model."""

from __future__ import annotations

import threading

import keras
import numpy as np
import pytest

import faithful_restore as fr
from faithful_restore import fast
from faithful_restore.fast import deferred_init as _deferred_init

BIG = 300  # a 300 x 300 kernel (90,000 elements) is deferred; a 300-element bias is not

needs_patch = pytest.mark.skipif(
    not (fast.enabled() and _deferred_init.PATCH.available()),
    reason="FAITHFUL_RESTORE_FAST=0, or this Keras has no Variable._initialize_with_initializer",
)


@keras.saving.register_keras_serializable(package="fr_tests")
class CountingUniform(keras.initializers.Initializer):
    """A seeded uniform initializer that counts its calls per thread."""

    calls: dict[int, int] = {}

    def __init__(self, seed: int = 0):
        self.seed = seed

    def __call__(self, shape, dtype=None):
        tid = threading.get_ident()
        CountingUniform.calls[tid] = CountingUniform.calls.get(tid, 0) + 1
        rng = np.random.default_rng(self.seed)
        return rng.uniform(-0.1, 0.1, size=shape).astype(dtype or "float32")

    def get_config(self):
        return {"seed": self.seed}


@keras.saving.register_keras_serializable(package="fr_tests")
class FixedProjection(keras.layers.Layer):
    """A non-trainable random projection rebuilt from its seed, so it is deliberately not saved."""

    def __init__(self, units: int = BIG, seed: int = 7, **kwargs):
        super().__init__(**kwargs)
        self.units, self.seed = units, seed

    def build(self, input_shape):
        self.kernel = self.add_weight(
            shape=(input_shape[-1], self.units),
            initializer=keras.initializers.RandomNormal(seed=self.seed),
            trainable=False,
            name="kernel",
        )

    def call(self, x):
        return x @ self.kernel

    def save_own_variables(self, store):
        pass

    def load_own_variables(self, store):
        pass

    def get_config(self):
        return {**super().get_config(), "units": self.units, "seed": self.seed}


def _calls() -> int:
    return CountingUniform.calls.get(threading.get_ident(), 0)


def _dense(seed: int = 3) -> keras.layers.Dense:
    layer = keras.layers.Dense(BIG, kernel_initializer=CountingUniform(seed), bias_initializer=CountingUniform(seed))
    layer.build((None, BIG))
    return layer


@needs_patch
def test_assigned_variables_skip_their_initializer():
    before = _calls()
    value = np.full((BIG, BIG), 0.25, np.float32)
    with _deferred_init.deferred():
        layer = _dense()
        assert _calls() == before + 1  # only the small bias ran its initializer
        layer.kernel.assign(value)
    assert _calls() == before + 1  # the assigned kernel never needed its initializer
    np.testing.assert_array_equal(np.asarray(layer.kernel), value)


def test_unassigned_variables_get_the_value_keras_would_give():
    reference = np.asarray(_dense(seed=11).kernel)
    with _deferred_init.deferred():
        layer = _dense(seed=11)
    np.testing.assert_array_equal(np.asarray(layer.kernel), reference)


@needs_patch
def test_other_threads_build_normally_meanwhile():
    reference = np.asarray(_dense(seed=5).kernel)
    seen: dict[str, object] = {}

    def build_elsewhere():
        before = _calls()
        kernel = np.asarray(_dense(seed=5).kernel)
        seen["calls"], seen["kernel"] = _calls() - before, kernel

    with _deferred_init.deferred():
        thread = threading.Thread(target=build_elsewhere)
        thread.start()
        thread.join()
    assert seen["calls"] == 2  # kernel and bias, both initialized immediately
    np.testing.assert_array_equal(seen["kernel"], reference)


@needs_patch
def test_an_exception_leaves_nothing_deferred():
    with pytest.raises(RuntimeError):
        with _deferred_init.deferred():
            _dense()
            raise RuntimeError("boom")
    before = _calls()
    _dense()
    assert _calls() == before + 2  # deferral ended with the block


def _model() -> keras.Model:
    inputs = keras.Input((BIG,))
    hidden = keras.layers.Dense(BIG, kernel_initializer=CountingUniform(1), name="big")(inputs)
    outputs = FixedProjection(name="proj")(hidden)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss="mse")
    x = np.random.default_rng(0).normal(size=(8, BIG)).astype(np.float32)
    model.train_on_batch(x, np.zeros((8, BIG), np.float32))
    return model, x


@needs_patch
def test_load_bundle_skips_initializers_and_restores_everything(tmp_path):
    model, x = _model()
    fr.save_bundle(model, tmp_path / "b", sample_inputs=x)
    before = _calls()
    bundle = fr.load_bundle(tmp_path / "b")  # check_probe=True: the probe must match
    assert _calls() == before  # the big kernel was loaded, not initialized
    for a, b in zip(model.variables, bundle.model.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for a, b in zip(model.optimizer.variables, bundle.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_variable_the_bundle_does_not_hold_is_initialized_like_keras_does(tmp_path):
    model, x = _model()
    fr.save_bundle(model, tmp_path / "b", sample_inputs=x)
    model.save(tmp_path / "m.keras")
    ours = fr.load_bundle(tmp_path / "b").model.get_layer("proj").kernel
    theirs = keras.saving.load_model(tmp_path / "m.keras").get_layer("proj").kernel
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(model.get_layer("proj").kernel))


@needs_patch
def test_a_write_that_bypasses_keras_assign_is_kept():
    # A Keras that loads through another method than assign() must not see its values replaced.
    value = np.full((BIG, BIG), 0.5, np.float32)
    with _deferred_init.deferred():
        layer = _dense()
        layer.kernel.value.assign(value)  # the TF variable directly, not Keras' assign
    np.testing.assert_array_equal(np.asarray(layer.kernel), value)


@needs_patch
def test_an_assign_recorded_in_a_stateless_scope_does_not_count_as_a_write():
    reference = np.asarray(_dense(seed=13).kernel)
    with _deferred_init.deferred():
        layer = _dense(seed=13)
        with keras.StatelessScope():
            layer.kernel.assign(np.zeros((BIG, BIG), np.float32))  # recorded, not written
    np.testing.assert_array_equal(np.asarray(layer.kernel), reference)


def test_variables_created_in_a_stateless_scope_are_never_deferred():
    with _deferred_init.deferred(), keras.StatelessScope():
        assert not _deferred_init._may_defer(_dense().kernel)


def test_switch_off_defers_nothing(monkeypatch):
    monkeypatch.setenv("FAITHFUL_RESTORE_FAST", "0")
    before = _calls()
    with _deferred_init.deferred():
        _dense()
        assert _calls() == before + 2  # both initializers ran at once
    assert not _deferred_init.PATCH.installed()
