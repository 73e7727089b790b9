"""Deserializing a Sequential builds it once: the same model Keras builds, without n rebuilds."""

from __future__ import annotations

import inspect
import random
import threading

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from keras.src.models.sequential import Sequential

import faithful_restore as fr
from faithful_restore import fast
from faithful_restore.fast import sequential_build as _sequential_build

needs_patch = pytest.mark.skipif(
    not (fast.enabled() and _sequential_build.PATCH.available()),
    reason=f"FAITHFUL_RESTORE_FAST=0, or the patch is off on Keras {keras.__version__} (needs 3.5+)",
)


@keras.saving.register_keras_serializable(package="fr_tests")
class CountingSequential(keras.Sequential):
    """A Sequential subclass: its from_config must run exactly as Keras runs it."""


def _rng_state() -> tuple:
    from keras.src.random import seed_generator

    keras_seed = seed_generator.global_seed_generator().state.numpy().tolist()
    return (
        random.getstate(),
        repr(np.random.get_state()[1][:8]),
        keras_seed,
        tf.random.get_global_generator().state.numpy().tolist(),
    )


def _count_builds(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    built: list[str] = []
    original = Sequential.build

    def build(self, input_shape=None):
        built.append(self.name)
        return original(self, input_shape)

    monkeypatch.setattr(Sequential, "build", build)
    return built


def _mlp(layers: int, with_input: bool, dropout: bool = False) -> keras.Sequential:
    stack: list = [keras.Input((5,), name="x")] if with_input else []
    for i in range(layers):
        stack.append(keras.layers.Dense(3 + i, activation="relu", name=f"d{i}"))
        if dropout and i == 0:
            stack.append(keras.layers.Dropout(0.5, name="drop"))
    stack.append(keras.layers.BatchNormalization(name="bn"))
    model = keras.Sequential(stack, name="mlp")
    if not with_input:
        model.build((None, 5))
    return model


def _deserialize(config: dict, *, once: bool, seed: int = 11) -> tuple[keras.Model, tuple]:
    keras.utils.set_random_seed(seed)
    tf.random.set_global_generator(tf.random.Generator.from_seed(seed))
    if once:
        with _sequential_build.once():
            model = keras.saving.deserialize_keras_object(config)
    else:
        model = keras.saving.deserialize_keras_object(config)
    return model, _rng_state()


def _assert_same_model(ours: keras.Model, keras_own: keras.Model, x: np.ndarray) -> None:
    assert ours.built and keras_own.built
    assert [layer.name for layer in ours.layers] == [layer.name for layer in keras_own.layers]
    assert [v.path for v in ours.weights] == [v.path for v in keras_own.weights]
    for a, b in zip(ours.weights, keras_own.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    np.testing.assert_array_equal(ours.predict(x, verbose=0), keras_own.predict(x, verbose=0))
    assert [tuple(t.shape) for t in ours.inputs] == [tuple(t.shape) for t in keras_own.inputs]
    assert [tuple(t.shape) for t in ours.outputs] == [tuple(t.shape) for t in keras_own.outputs]


@needs_patch
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layers=st.integers(1, 6), with_input=st.booleans(), dropout=st.booleans())
def test_the_model_weights_and_random_state_match_keras_own_deserialization(layers, with_input, dropout):
    config = keras.saving.serialize_keras_object(_mlp(layers, with_input, dropout))
    keras_own, keras_rng = _deserialize(config, once=False)
    ours, our_rng = _deserialize(config, once=True)
    # Same initializer draws in the same order: the weights and every global generator agree.
    assert our_rng == keras_rng
    _assert_same_model(ours, keras_own, np.random.default_rng(0).normal(size=(4, 5)).astype("float32"))


@needs_patch
@pytest.mark.parametrize("with_input", [True, False])
def test_a_deserialized_sequential_is_built_once_instead_of_after_every_layer(monkeypatch, with_input):
    config = keras.saving.serialize_keras_object(_mlp(6, with_input))
    built = _count_builds(monkeypatch)
    keras.saving.deserialize_keras_object(config)
    keras_builds = len(built)
    built.clear()
    with _sequential_build.once():
        keras.saving.deserialize_keras_object(config)
    assert keras_builds >= 6 and len(built) == 1


def test_intermediate_outputs_still_serve_feature_extraction():
    config = keras.saving.serialize_keras_object(_mlp(3, with_input=True))
    x = np.random.default_rng(1).normal(size=(4, 5)).astype("float32")
    features = []
    for once in (False, True):
        model, _ = _deserialize(config, once=once)
        extractor = keras.Model(model.inputs, model.get_layer("d1").output)
        features.append(extractor.predict(x, verbose=0))
        assert features[-1].shape == (4, 4)
    np.testing.assert_array_equal(features[0], features[1])


@needs_patch
def test_nested_sequentials_each_build_once_and_match_keras(monkeypatch):
    inner = keras.Sequential(
        [keras.Input((5,)), keras.layers.Dense(4, name="i0"), keras.layers.Dense(4, name="i1")], name="inner"
    )
    outer = keras.Sequential(
        [keras.Input((5,)), inner, keras.layers.Dense(2, name="o1"), keras.layers.Dense(1, name="o2")], name="outer"
    )
    config = keras.saving.serialize_keras_object(outer)
    keras_own, keras_rng = _deserialize(config, once=False)
    built = _count_builds(monkeypatch)
    ours, our_rng = _deserialize(config, once=True)
    assert sorted(built) == ["inner", "outer"]
    assert our_rng == keras_rng
    _assert_same_model(ours, keras_own, np.ones((2, 5), "float32"))


def test_subclasses_and_other_threads_deserialize_exactly_as_keras_does(monkeypatch):
    sub = CountingSequential([keras.Input((5,)), keras.layers.Dense(3), keras.layers.Dense(3), keras.layers.Dense(3)])
    sub_config = keras.saving.serialize_keras_object(sub)
    plain_config = keras.saving.serialize_keras_object(_mlp(4, with_input=True))
    built = _count_builds(monkeypatch)
    keras.saving.deserialize_keras_object(sub_config)
    keras.saving.deserialize_keras_object(plain_config)
    keras_builds = len(built)
    built.clear()

    other: list[int] = []
    with _sequential_build.once():
        restored = keras.saving.deserialize_keras_object(sub_config)

        def elsewhere() -> None:
            before = len(built)
            keras.saving.deserialize_keras_object(plain_config)
            other.append(len(built) - before)

        thread = threading.Thread(target=elsewhere)
        thread.start()
        thread.join()
    assert type(restored) is CountingSequential
    # The subclass and the other thread got Keras' per-layer rebuilds.
    assert len(built) == keras_builds and other[0] > 1


@needs_patch
def test_a_failing_layer_leaves_nothing_claimed_and_the_next_model_builds_once(monkeypatch):
    good = keras.saving.serialize_keras_object(_mlp(3, with_input=True))
    bad = keras.saving.serialize_keras_object(_mlp(3, with_input=True))
    bad["config"]["layers"][2]["config"]["units"] = -1
    built = _count_builds(monkeypatch)
    with _sequential_build.once():
        # Keras rejects the bad config (TypeError from 3.13 on, ValueError from the shape before).
        with pytest.raises((TypeError, ValueError)):
            keras.saving.deserialize_keras_object(bad)
        built.clear()
        keras.saving.deserialize_keras_object(good)
        assert len(built) == 1
        assert _sequential_build._deferring() == {}
    assert _sequential_build._deferring() is None
    built.clear()
    keras.saving.deserialize_keras_object(good)
    assert len(built) > 1  # outside the block: Keras' own behaviour again


def test_load_bundle_restores_a_nested_sequential_like_load_model(tmp_path):
    inner = keras.Sequential(
        [keras.Input((5,)), keras.layers.Dense(6, name="i0"), keras.layers.Dropout(0.2)], name="inner"
    )
    model = keras.Sequential(
        [keras.Input((5,)), inner, keras.layers.BatchNormalization(), keras.layers.Dense(1)], name="outer"
    )
    model.compile(optimizer="adam", loss="mse")
    x = np.random.default_rng(2).normal(size=(16, 5)).astype("float32")
    model.fit(x, x[:, :1], epochs=1, verbose=0)
    fr.save_bundle(model, str(tmp_path / "b"))
    model.save(str(tmp_path / "m.keras"))
    restored = fr.load_bundle(str(tmp_path / "b")).model
    _assert_same_model(restored, keras.models.load_model(str(tmp_path / "m.keras")), x)
    fr.assert_roundtrip(model)


@needs_patch
def test_a_config_without_its_input_shape_is_still_built_as_keras_builds_it(monkeypatch):
    # Hand-written or older configs may lack the input shape; Keras then builds from the
    # InputLayer as layers are added, and so must the single build.
    config = keras.saving.serialize_keras_object(_mlp(3, with_input=True))
    del config["config"]["build_input_shape"], config["build_config"]
    keras_own, keras_rng = _deserialize(config, once=False)
    built = _count_builds(monkeypatch)
    ours, our_rng = _deserialize(config, once=True)
    assert len(built) == 1 and our_rng == keras_rng
    _assert_same_model(ours, keras_own, np.ones((3, 5), "float32"))


@keras.saving.register_keras_serializable(package="fr_tests")
class RandomScale(keras.layers.Layer):
    """Draws an unseeded initializer in build(): Python's random module is advanced there."""

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1],), initializer="random_normal", name="w")

    def call(self, x):
        return x * self.w


def test_layers_saved_without_a_build_config_are_deserialized_in_keras_own_order(monkeypatch):
    # Keras builds such a layer at the next add(), before constructing the following layers;
    # building once at the end would hand the unseeded initializers other seeds.
    model = keras.Sequential([keras.Input((5,)), RandomScale(name="scale"), keras.layers.Dense(3, name="d")])
    config = keras.saving.serialize_keras_object(model)
    for layer in config["config"]["layers"]:
        layer.pop("build_config", None)
    keras_own, keras_rng = _deserialize(config, once=False)
    built = _count_builds(monkeypatch)
    ours, our_rng = _deserialize(config, once=True)
    assert our_rng == keras_rng
    assert ours.get_layer("d").kernel_initializer.seed == keras_own.get_layer("d").kernel_initializer.seed
    _assert_same_model(ours, keras_own, np.ones((2, 5), "float32"))
    assert len(built) > 1  # Keras' own per-layer builds


def test_the_wrapped_methods_keep_keras_signatures():
    # Keras reads constructor arguments with getfullargspec and signature alike
    # (Operation.__new__); a (*args, **kwargs) wrapper would change what both report.
    with _sequential_build.once():
        pass
    spec = inspect.getfullargspec(Sequential.__init__)
    assert spec.varargs is None and spec.varkw is None and "layers" in spec.args
    assert list(inspect.signature(Sequential.__init__).parameters) == spec.args
    assert "rebuild" in inspect.signature(Sequential.add).parameters
