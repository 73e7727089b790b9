"""Custom layers in the style of Keras' own saving tests: nested, auto-named, lazily built,
stateful, counting. Each must get the right verdict, and no verifier may change the caller's model."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from conftest import assert_same_variables

import faithful_restore as fr
from faithful_restore import Cause


@keras.saving.register_keras_serializable(package="fr_custom")
class Inner(keras.layers.Layer):
    def call(self, x):
        return x * 2.0


@keras.saving.register_keras_serializable(package="fr_custom")
class Outer(keras.layers.Layer):
    """Creates a sublayer with a non-serializable argument (a DTypePolicy): Keras never serializes it."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.inner = Inner(dtype=keras.DTypePolicy("float32"))
        self.dense = keras.layers.Dense(2)

    def call(self, x):
        return self.dense(self.inner(x))


@keras.saving.register_keras_serializable(package="fr_custom")
class Block(keras.layers.Layer):
    """Auto-named sublayers: their names depend on what the process built before."""

    def __init__(self, rate: float = 0.2, **kwargs):
        super().__init__(**kwargs)
        self.rate = rate
        self.dense = keras.layers.Dense(4)
        self.dropout = keras.layers.Dropout(rate)

    def call(self, x, training=False):
        return self.dropout(self.dense(x), training=training)

    def get_config(self):
        return {**super().get_config(), "rate": self.rate}


@keras.saving.register_keras_serializable(package="fr_custom")
class LazyHelper(keras.layers.Layer):
    """Creates a weightless sublayer in build(), on its first call, as KerasHub preprocessors
    build their packers."""

    def build(self, input_shape):
        self.helper = keras.layers.Activation("relu")

    def call(self, x):
        return self.helper(x)


@keras.saving.register_keras_serializable(package="fr_custom")
class WithPreprocessor(keras.Model):
    """A model holding a preprocessing layer outside its call graph (like a KerasHub task)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.preprocessor = LazyHelper()
        self.dense = keras.layers.Dense(1)

    def call(self, x):
        return self.dense(x)


@keras.saving.register_keras_serializable(package="fr_custom")
class Counter(keras.layers.Layer):
    """Counts its calls in a non-trainable int64 weight."""

    def build(self, input_shape):
        self.n = self.add_weight(shape=(), dtype="int64", initializer="zeros", trainable=False, name="n")

    def call(self, x):
        self.n.assign_add(1)
        return x


def _xy(features=3, n=16, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)).astype("float32")
    return x, x.sum(axis=1, keepdims=True).astype("float32")


def test_a_sublayer_keras_never_serializes_does_not_block_the_save(tmp_path):
    model = keras.Sequential([keras.Input((3,)), Outer()])
    model.compile("adam", "mse")
    x, y = _xy()
    model.train_on_batch(x, y[:, :1].repeat(2, axis=1))
    path = str(tmp_path / "b")
    fr.save_bundle(model, path, sample_inputs=x)
    assert fr.verify_bundle(path).ok
    assert fr.compare(model, fr.load_bundle(path), sample_inputs=x).ok


def _blocks():
    model = keras.Sequential([keras.Input((3,)), Block(), Block(), keras.layers.Dense(1)])
    model.compile("adam", "mse")
    x, y = _xy()
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    return model, x


def test_auto_named_sublayers_verify_the_same_in_any_process_state(tmp_path):
    model, x = _blocks()
    path = str(tmp_path / "b")
    fr.save_bundle(model, path, sample_inputs=x)
    _blocks()  # more auto-named layers in this process: dropout_4, dropout_5, ...
    fr.load_bundle(path)
    report = fr.verify_bundle(path)
    assert report.ok, report.to_text()
    assert fr.compare(model, fr.load_bundle(path), sample_inputs=x).ok


def test_another_dropout_rate_inside_a_custom_layer_is_still_found(tmp_path):
    model, x = _blocks()
    path = str(tmp_path / "b")
    fr.save_bundle(model, path, sample_inputs=x)
    other = keras.Sequential([keras.Input((3,)), Block(), Block(0.5), keras.layers.Dense(1)])
    other.compile("adam", "mse")
    other.set_weights(model.get_weights())
    report = fr.compare(model, other, sample_inputs=x, check_training_step=False)
    assert report.findings[0].cause is Cause.REGULARIZATION, report.to_text()


def test_a_weightless_sublayer_built_on_first_call_is_not_missing(tmp_path):
    model = WithPreprocessor()
    model.compile("adam", "mse")
    x, y = _xy()
    model.preprocessor(x)  # builds its helper
    model.train_on_batch(x, y)
    path = str(tmp_path / "b")
    fr.save_bundle(model, path)  # no probe: the restored LazyHelper is never called
    bundle = fr.load_bundle(path)
    report = fr.compare(model, bundle, sample_inputs=x, check_training_step=False)
    assert report.ok, report.to_text()
    assert [f.severity for f in report.findings if f.cause is Cause.ARCHITECTURE] == ["info"]
    verified = fr.verify_bundle(path)
    assert verified.ok, verified.to_text()
    assert any(f.cause is Cause.ARCHITECTURE and f.severity == "info" for f in verified.findings)


def test_a_stateful_rnn_is_named_honestly_not_as_a_training_mode_layer():
    model = keras.Sequential(
        [keras.Input((5, 2), batch_size=4), keras.layers.SimpleRNN(3, stateful=True), keras.layers.Dense(1)]
    )
    model.compile("adam", "mse")
    x = np.random.default_rng(0).normal(size=(4, 5, 2)).astype("float32")
    model.fit(x, np.ones((4, 1), "float32"), epochs=1, batch_size=4, verbose=0, shuffle=False)
    state = np.asarray(model.layers[0].states[0]).copy()
    assert np.any(state)
    report = fr.assert_roundtrip(model, sample_inputs=x)  # no false "training mode" error
    assert not any(f.path == "mode" for f in report.findings)
    rnn = [f for f in report.findings if f.cause is Cause.TRAINING_STATE and f.severity == "warning"]
    assert rnn and "hidden state" in rnn[0].message and "reset_states" in rnn[0].message
    np.testing.assert_array_equal(np.asarray(model.layers[0].states[0]), state)  # put back as found


def test_no_verifier_changes_a_counting_layer(tmp_path):
    model = keras.Sequential([keras.Input((3,)), Counter(name="counter"), keras.layers.Dense(1)])
    model.compile("adam", "mse")
    x, y = _xy()
    model.train_on_batch(x, y)
    counter = model.get_layer("counter").n
    assert int(counter.numpy()) == 1
    path = str(tmp_path / "b")
    fr.save_bundle(model, path, sample_inputs=x)
    assert int(counter.numpy()) == 1
    bundle = fr.load_bundle(path)  # check_probe=True runs the probe on the restored model
    assert int(bundle.model.get_layer("counter").n.numpy()) == 1
    report = fr.compare(model, bundle, sample_inputs=x)
    assert report.ok, report.to_text()
    assert int(counter.numpy()) == 1 and int(bundle.model.get_layer("counter").n.numpy()) == 1
    fr.assert_roundtrip(model, sample_inputs=x)
    fr.verify_bundle(path)
    assert int(counter.numpy()) == 1
    # A real difference in an integer weight is a number, not inf.
    bundle.model.get_layer("counter").n.assign(4)
    found = [
        f
        for f in fr.compare(model, bundle, sample_inputs=x, check_training_step=False).findings
        if f.path.endswith("n")
    ]
    assert found and found[0].cause is Cause.WEIGHTS and "max abs diff 3" in found[0].message


def test_an_unused_seed_generator_is_not_an_error(tmp_path):
    # A GRU with dropout=0 keeps a seed generator no step draws from; .keras does not restore it.
    model = keras.Sequential([keras.Input((5, 2)), keras.layers.GRU(3), keras.layers.Dense(1)])
    model.compile("adam", "mse")
    x = np.random.default_rng(0).normal(size=(8, 5, 2)).astype("float32")
    model.fit(x, np.ones((8, 1), "float32"), epochs=1, verbose=0)
    model.save(tmp_path / "m.keras")
    copy = keras.saving.load_model(tmp_path / "m.keras")
    report = fr.compare(model, copy, sample_inputs=x)
    assert report.ok, report.to_text()


def test_a_trusted_lambda_model_can_be_checked_with_safe_mode_off(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Lambda(lambda t: t * 2), keras.layers.Dense(1)])
    model.compile("adam", "mse")
    x, y = _xy()
    model.train_on_batch(x, y)
    with pytest.raises(fr.BundleError):
        fr.assert_roundtrip(model, sample_inputs=x)  # refused by default: the bundle stores Python code
    fr.assert_roundtrip(model, sample_inputs=x, safe_mode=False)
    path = str(tmp_path / "b")
    fr.save_bundle(model, path)
    assert fr.compare(path, path, sample_inputs=x, safe_mode=False).ok


def test_assert_roundtrip_takes_preprocessing_stats(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile("adam", "mse")
    x, y = _xy()
    model.train_on_batch(x, y)
    report = fr.assert_roundtrip(model, sample_inputs=x, preprocessing=fr.PreprocessingStats.from_data(x))
    assert report.ok


@pytest.mark.parametrize("stats", [0, 1, 2, 3])
def test_bundle_check_inputs_and_check_inputs_are_one_rule(tmp_path, stats):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    x, _ = _xy()
    data = fr.PreprocessingStats.from_data(x)
    preprocessing = {0: None, 1: {"stats": data}, 2: {"a": data, "b": data}, 3: {"stats": data, "b": data}}[stats]
    path = str(tmp_path / "b")
    fr.save_bundle(model, path, preprocessing=preprocessing)
    bundle = fr.load_bundle(path)
    outcomes = []
    for check in (
        lambda: bundle.check_inputs(x),
        lambda: fr.check_inputs(bundle, x),
        lambda: fr.check_inputs(bundle.manifest, x),
    ):
        try:
            report = check()
            outcomes.append(("report", report.ok, [f.path for f in report.findings]))
        except fr.BundleError as e:
            outcomes.append(("error", str(e)))
    assert outcomes[0] == outcomes[1] == outcomes[2]
    assert outcomes[0][0] == ("error" if stats == 2 else "report")


def test_the_bundle_restores_what_keras_saves_bitwise(tmp_path):
    model, x = _blocks()
    path = str(tmp_path / "b")
    fr.save_bundle(model, path, sample_inputs=x)
    bundle = fr.load_bundle(path)
    assert_same_variables(model.variables, bundle.model.variables)
    assert_same_variables(model.optimizer.variables, bundle.optimizer.variables)


def test_another_compiled_loss_is_named_when_it_changes_the_step():
    def model_with(loss):
        keras.utils.set_random_seed(3)
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        model.compile(keras.optimizers.SGD(0.1), loss=loss)
        return model

    x = np.random.default_rng(0).normal(size=(8, 3)).astype("float32")
    y = np.array([0, 1] * 4)
    original = model_with(keras.losses.SparseCategoricalCrossentropy(from_logits=False))
    restored = model_with(keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    restored.set_weights(original.get_weights())
    report = fr.compare(original, restored, sample_inputs=x, sample_targets=y, check_training_step=True)
    found = [f for f in report.findings if f.path == "compile.loss"]
    assert found and found[0].severity == "error" and report.findings[0].path == "compile.loss", report.to_text()


@keras.saving.register_keras_serializable(package="fr_custom")
class ForgetfulBlock(keras.layers.Layer):
    """Its get_config forgets clip: a restored block silently loses its weightless ReLU."""

    def __init__(self, clip: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(4)
        self.clip = keras.layers.Activation("relu") if clip else None

    def call(self, x):
        x = self.dense(x)
        return self.clip(x) if self.clip is not None else x

    def get_config(self):
        config = super().get_config()  # Keras records constructor arguments by itself ...
        config.pop("clip", None)  # ... so forget it on purpose
        return config


def test_a_weightless_sublayer_missing_under_a_built_parent_is_an_error(tmp_path):
    model = keras.Sequential([keras.Input((3,)), ForgetfulBlock(clip=True), keras.layers.Dense(1)])
    model.compile("adam", "mse")
    x, y = _xy()
    model.train_on_batch(x, y)
    path = str(tmp_path / "b")
    fr.save_bundle(model, path, sample_inputs=x)
    report = fr.verify_bundle(path)
    assert not report.ok and report.errors[0].cause is Cause.ARCHITECTURE, report.to_text()
    compared = fr.compare(
        model, fr.load_bundle(path, check_probe=False), sample_inputs=x
    )  # check_probe=True refuses it: the probe differs
    assert not compared.ok and compared.errors[0].cause is Cause.ARCHITECTURE, compared.to_text()
