"""Fault injection: each way a restore goes wrong is built on purpose and must be named first."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import make_xy, mirrored_strategy, needs_mirrored_fit, rewrite_manifest, sequential_model

import faithful_restore as fr
from faithful_restore import Cause


def _first(report: fr.Report) -> fr.Finding:
    assert report.findings, "expected at least one finding"
    return report.findings[0]


def _mlp(units=8, rate=0.3, l2=1e-3, input_dim=4, extra=False, seed=1):
    keras.utils.set_random_seed(seed)
    layers = [
        keras.Input((input_dim,)),
        keras.layers.Dense(units, activation="relu", kernel_regularizer=keras.regularizers.L2(l2)),
        keras.layers.Dropout(rate),
    ]
    if extra:
        layers.append(keras.layers.Dense(units))
    layers.append(keras.layers.Dense(1))
    model = keras.Sequential(layers)
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    return model


def _copy_weights(src, dst):
    for a, b in zip(src.variables, dst.variables):
        if tuple(a.shape) == tuple(b.shape):
            b.assign(np.asarray(a))


def test_clean_bundle_roundtrip_has_no_error(tmp_path):
    model = sequential_model()
    path = str(tmp_path / "b")
    fr.save_bundle(model, path, sample_inputs=make_xy(8)[0])
    report = fr.compare(model, fr.load_bundle(path))
    assert report.ok, report.to_text()
    assert "next training step" in report.checks
    assert not [f for f in report.findings if f.severity != "info"]


def test_weights_only_restore_is_optimizer_state(tmp_path):
    model = sequential_model()
    model.save_weights(str(tmp_path / "w.weights.h5"))
    fresh = sequential_model(trained=False)
    fresh.load_weights(str(tmp_path / "w.weights.h5"))  # Keras skips the optimizer here
    report = fr.compare(model, fresh)
    assert _first(report).cause is Cause.OPTIMIZER_STATE
    assert not report.ok
    # honest story: inference identical, continued training not
    assert not any(f.cause is Cause.OUTPUTS and f.severity == "error" for f in report.findings)
    assert "Inference is unaffected" in report.summary()
    step = [f for f in report.findings if f.path == "training_step"]
    assert step and "differently" in step[0].message


def test_normalization_adapted_on_other_data_is_preprocessing():
    rng = np.random.default_rng(0)

    def build(data):
        keras.utils.set_random_seed(3)
        norm = keras.layers.Normalization()
        norm.adapt(data)
        model = keras.Sequential([keras.Input((3,)), norm, keras.layers.Dense(2)])
        model.compile("adam", "mse")
        return model

    original = build(rng.normal(5.0, 2.0, size=(200, 3)).astype("float32"))
    restored = build(rng.normal(0.0, 1.0, size=(200, 3)).astype("float32"))
    _copy_weights_dense(original, restored)
    report = fr.compare(original, restored)
    first = _first(report)
    assert first.cause is Cause.PREPROCESSING
    assert first.path.startswith("normalization")
    assert not any(f.cause is Cause.WEIGHTS for f in report.findings)


def _copy_weights_dense(src, dst):
    for ls, ld in zip(src.layers, dst.layers):
        if isinstance(ls, keras.layers.Dense):
            ld.set_weights(ls.get_weights())


@pytest.mark.parametrize("change", [{"rate": 0.5}, {"l2": 1e-2}])
def test_changed_dropout_or_l2_is_regularization(change):
    original = _mlp()
    restored = _mlp(**change)
    _copy_weights(original, restored)
    report = fr.compare(original, restored, check_training_step=False)
    first = _first(report)
    assert first.cause is Cause.REGULARIZATION
    key = "rate" if "rate" in change else "kernel_regularizer"
    assert key in first.expected


@pytest.mark.parametrize("change", [{"extra": True}, {"units": 16}])
def test_extra_layer_or_changed_units_is_architecture(change):
    original = _mlp()
    restored = _mlp(**change)
    report = fr.compare(original, restored)
    assert _first(report).cause is Cause.ARCHITECTURE
    if "units" in change:
        assert _first(report).expected == {"units": 8}


def test_changed_input_shape_is_input_signature():
    original = _mlp(input_dim=4)
    restored = _mlp(input_dim=5)
    report = fr.compare(original, restored, sample_inputs=np.ones((4, 4), "float32"))
    first = _first(report)
    assert first.cause is Cause.INPUT_SIGNATURE
    assert first.expected["shape"] == [None, 4] and first.found["shape"] == [None, 5]


def test_perturbed_weights_are_weights():
    original = _mlp()
    restored = _mlp()
    _copy_weights(original, restored)
    restored.layers[0].kernel.assign(restored.layers[0].kernel + 1e-3)
    report = fr.compare(original, restored, check_training_step=False)
    first = _first(report)
    assert first.cause is Cause.WEIGHTS
    assert first.path.endswith("kernel")
    assert "max abs diff 0.001" in first.message


def test_manifest_from_another_tf_version_is_version_skew(tmp_path):
    model = sequential_model()
    path = str(tmp_path / "b")
    fr.save_bundle(model, path)
    rewrite_manifest(path, lambda d: d["environment"].update(tensorflow="2.12.0"))
    with pytest.warns(fr.VersionSkewWarning):
        bundle = fr.load_bundle(path)
    report = fr.compare(model, bundle)
    first = _first(report)
    assert first.cause is Cause.VERSION_SKEW and first.expected == "2.12.0"
    assert report.ok  # skew alone is a warning: the restored values are identical


@needs_mirrored_fit
def test_batchnorm_under_mirrored_strategy_is_replica_divergence(tmp_path):
    strategy = mirrored_strategy()
    with strategy.scope():
        keras.utils.set_random_seed(5)
        model = keras.Sequential(
            [keras.Input((4,)), keras.layers.Dense(4), keras.layers.BatchNormalization(), keras.layers.Dense(1)]
        )
        model.compile("adam", "mse")
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(64, 4)) * np.arange(1, 65)[:, None]).astype("float32")  # replicas see other data
    y = rng.normal(size=(64, 1)).astype("float32")
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False)
    path = str(tmp_path / "b")
    fr.save_bundle(model, path)
    restored = fr.load_bundle(path)
    report = fr.compare(model, restored, sample_inputs=x[:16])
    first = _first(report)
    assert first.cause is Cause.REPLICA_DIVERGENCE
    assert "moving" in first.path
    assert "synchronized=True" in first.message


def test_flipped_byte_is_integrity(tmp_path):
    model = sequential_model()
    path = tmp_path / "b"
    fr.save_bundle(model, str(path))
    target = path / "model" / "model.weights.h5"
    data = bytearray(target.read_bytes())
    data[-10] ^= 0xFF
    target.write_bytes(bytes(data))
    report = fr.compare(model, str(path))
    assert _first(report).cause is Cause.INTEGRITY
    assert "model.weights.h5" in _first(report).message
    assert _first(fr.verify_bundle(str(path))).cause is Cause.INTEGRITY


@pytest.mark.parametrize("which", ["step", "rng"])
def test_restored_step_or_rng_that_differs_is_training_state(tmp_path, which):
    model = sequential_model()
    step = tf.Variable(100, dtype=tf.int64)
    gen = tf.random.Generator.from_seed(7)
    path = str(tmp_path / "b")
    fr.save_bundle(model, path, state={"step": step, "rng": gen})
    step2 = tf.Variable(0, dtype=tf.int64)
    gen2 = tf.random.Generator.from_seed(0)
    restored = fr.load_bundle(path, state={"step": step2, "rng": gen2})
    if which == "step":
        step2.assign(0)  # e.g. the script re-initialized its counter after loading
    else:
        gen2.normal([3])  # e.g. the script drew numbers before resuming
    original = fr.Bundle(model, optimizer=model.optimizer, state={"step": step, "rng": gen})
    report = fr.compare(original, restored)
    first = _first(report)
    assert first.cause is Cause.TRAINING_STATE
    assert first.path == f"state.{which}"


def test_lost_dropout_random_state_is_training_state(tmp_path):
    model = sequential_model()
    model.save(str(tmp_path / "m.keras"))
    plain = keras.models.load_model(str(tmp_path / "m.keras"))
    report = fr.compare(model, plain)
    first = _first(report)
    assert first.cause is Cause.TRAINING_STATE
    assert "seed_generator" in first.path


def test_layer_stuck_in_training_mode_is_regularization():
    @keras.saving.register_keras_serializable(package="fr_tests_mode")
    class AlwaysDrop(keras.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.drop = keras.layers.Dropout(0.5)

        def call(self, x, training=None):
            return self.drop(x, training=True)  # the bug: ignores the mode

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8), AlwaysDrop(), keras.layers.Dense(1)])
    report = fr.compare(model, model, check_training_step=False)
    assert any(f.cause is Cause.REGULARIZATION and f.path == "mode" for f in report.findings)


def test_compare_does_not_mutate_models():
    original = sequential_model()
    fresh = sequential_model(trained=False)
    before_o = [np.array(v) for v in original.variables + original.optimizer.variables]
    before_f = [np.array(v) for v in fresh.variables + fresh.optimizer.variables]
    fr.compare(original, fresh)
    after_o = [np.array(v) for v in original.variables + original.optimizer.variables]
    after_f = [np.array(v) for v in fresh.variables + fresh.optimizer.variables]
    for a, b in zip(before_o + before_f, after_o + after_f):
        np.testing.assert_array_equal(a, b)
    assert not fresh.optimizer.built  # compare did not build the caller's optimizer


def test_custom_loop_bundle_with_loss_fn(tmp_path):
    keras.utils.set_random_seed(8)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(1)])
    opt = keras.optimizers.Adam(0.01)
    x, y = make_xy(16)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean((model(x) - y) ** 2)
    opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
    path = str(tmp_path / "b")
    fr.save_bundle(model, path, optimizer=opt)
    restored = fr.load_bundle(path)
    mse = keras.losses.MeanSquaredError()
    report = fr.compare(fr.Bundle(model, optimizer=opt), restored, sample_inputs=x, loss_fn=mse, sample_targets=y)
    assert report.ok and "next training step" in report.checks
    fresh_opt = keras.optimizers.Adam(0.01)
    broken = fr.Bundle(restored.model, optimizer=fresh_opt)
    report = fr.compare(fr.Bundle(model, optimizer=opt), broken, loss_fn=mse)
    assert _first(report).cause is Cause.OPTIMIZER_STATE


def test_report_renders_text_and_json_roundtrip():
    original = sequential_model()
    fresh = sequential_model(trained=False)
    _copy_weights(original, fresh)
    report = fr.compare(original, fresh)
    text = report.to_text()
    assert "optimizer_state @ optimizer.iterations" in text
    data = report.to_dict()
    assert data["ok"] is False and data["findings"][0]["cause"] == "optimizer_state"
    again = fr.Report.from_dict(data)
    assert again.findings == report.findings
    import json

    json.loads(report.to_json())


def test_bad_arguments():
    model = sequential_model()
    with pytest.raises(fr.BundleError, match="keras.Model, a faithful_restore.Bundle"):
        fr.compare(model, 42)
    with pytest.raises(fr.BundleError, match="rtol must be"):
        fr.compare(model, model, rtol=-1)
