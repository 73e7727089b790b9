"""assert_roundtrip and verify_bundle on diverse real architectures, plus verify_bundle's findings."""

from __future__ import annotations

import contextlib

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import (
    functional_multi_io,
    make_xy,
    rewrite_manifest,
    sequential_model,
    subclassed_model,
)

import faithful_restore as fr
from faithful_restore import Cause


@contextlib.contextmanager
def _policy(name):
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def _fit(model, x, y, loss, run_eagerly=False):
    model.compile(keras.optimizers.Adam(1e-3), loss, run_eagerly=run_eagerly)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    return model, x


def mobilenet():
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, weights=None, classes=5)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 32, 32, 3)).astype("float32")
    # eager: tracing MobileNet's training graph costs more than the two steps it runs
    return _fit(model, x, rng.integers(0, 5, 16), "sparse_categorical_crossentropy", run_eagerly=True)


def lstm_gru():
    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [
            keras.Input((6, 3)),
            keras.layers.LSTM(8, return_sequences=True, dropout=0.1),
            keras.layers.GRU(4, recurrent_dropout=0.0),
            keras.layers.Dense(1),
        ]
    )
    rng = np.random.default_rng(1)
    x = rng.normal(size=(16, 6, 3)).astype("float32")
    return _fit(model, x, rng.normal(size=(16, 1)).astype("float32"), "mse")


def embedding():
    keras.utils.set_random_seed(2)
    model = keras.Sequential(
        [
            keras.Input((5,), dtype="int32"),
            keras.layers.Embedding(50, 8),
            keras.layers.GlobalAveragePooling1D(),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )
    rng = np.random.default_rng(2)
    x = rng.integers(0, 50, size=(16, 5)).astype("int32")
    return _fit(model, x, rng.integers(0, 2, 16), "sparse_categorical_crossentropy")


def text_vectorization():
    keras.utils.set_random_seed(3)
    corpus = np.array(["the cat sat", "a dog ran far", "the dog sat", "cats and dogs", "a cat ran"])
    vectorize = keras.layers.TextVectorization(max_tokens=20, output_sequence_length=4)
    vectorize.adapt(corpus)
    inputs = keras.Input((), dtype="string")
    h = keras.layers.Embedding(20, 4)(vectorize(inputs))
    outputs = keras.layers.Dense(1, activation="sigmoid")(keras.layers.GlobalAveragePooling1D()(h))
    model = keras.Model(inputs, outputs)
    x = tf.constant(["the cat ran", "a dog sat", "the cats", "dogs ran far"] * 4)
    y = np.array([0, 1, 0, 1] * 4, dtype="float32")
    model.compile(keras.optimizers.Adam(1e-3), "binary_crossentropy")
    model.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(8), epochs=1, verbose=0)
    return model, x


def multi_io():
    model, data = functional_multi_io()
    return model, {k: v[:8] for k, v in data["x"].items()}


def subclassed():
    return subclassed_model(), make_xy(8)[0]


def mixed_precision():
    with _policy("mixed_float16"):
        keras.utils.set_random_seed(4)
        model = keras.Sequential(
            [
                keras.Input((4,)),
                keras.layers.Dense(16, activation="relu"),
                keras.layers.Dense(1, dtype="float32"),
            ]
        )
        x, y = make_xy(32)
        return _fit(model, x, y, "mse")


def cnn_batchnorm():
    keras.utils.set_random_seed(5)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, padding="same"),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dropout(0.25),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    rng = np.random.default_rng(5)
    x = rng.normal(size=(16, 8, 8, 1)).astype("float32")
    return _fit(model, x, rng.integers(0, 3, 16), "sparse_categorical_crossentropy")


def transformer_block():
    keras.utils.set_random_seed(6)
    inputs = keras.Input((6, 8))
    attn = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4, dropout=0.1)(inputs, inputs)
    h = keras.layers.LayerNormalization()(inputs + attn)
    outputs = keras.layers.Dense(1)(keras.layers.GlobalAveragePooling1D()(h))
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(6)
    x = rng.normal(size=(16, 6, 8)).astype("float32")
    return _fit(model, x, rng.normal(size=(16, 1)).astype("float32"), "mse")


def normalized_nested():
    keras.utils.set_random_seed(7)
    rng = np.random.default_rng(7)
    x = (rng.normal(size=(64, 3)) * 10 + 50).astype("float32")
    norm = keras.layers.Normalization()
    norm.adapt(x)
    inner = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation="tanh")], name="inner")
    inputs = keras.Input((3,))
    outputs = keras.layers.Dense(1)(inner(norm(inputs)))
    model = keras.Model(inputs, outputs)
    return _fit(model, x, rng.normal(size=(64, 1)).astype("float32"), "mse")


def sequential():
    return sequential_model(), make_xy(8)[0]


ARCHITECTURES = [
    sequential,
    multi_io,
    subclassed,
    mobilenet,
    lstm_gru,
    embedding,
    text_vectorization,
    mixed_precision,
    cnn_batchnorm,
    transformer_block,
    normalized_nested,
]


@pytest.mark.parametrize("build", ARCHITECTURES, ids=lambda f: f.__name__)
def test_clean_roundtrip_of_real_architectures(build, tmp_path):
    model, x = build()
    with _policy("mixed_float16") if build is mixed_precision else contextlib.nullcontext():
        report = fr.assert_roundtrip(model, sample_inputs=x, path=tmp_path / "b")
    assert report.ok
    assert "next training step" in report.checks, report.to_text()
    assert any(c.startswith("inference outputs") for c in report.checks)


@pytest.mark.parametrize("build", [sequential, embedding, text_vectorization, multi_io], ids=lambda f: f.__name__)
def test_roundtrip_with_synthesized_inputs(build):
    model, _ = build()
    report = fr.assert_roundtrip(model)  # no sample inputs: a batch is synthesized from the signature
    assert any(c.startswith("inference outputs") for c in report.checks)


@pytest.mark.parametrize("where", ["ram", "local"])
def test_assert_roundtrip_raises_with_readable_report(tmp_path, where):
    @keras.saving.register_keras_serializable(package="fr_tests_verify")
    class Forgetful(keras.layers.Layer):
        """Keeps state outside its weights: a restore cannot bring it back."""

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.offset = 0.0

        def call(self, x):
            return x + self.offset

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2), Forgetful()])
    model.layers[-1].offset = 3.0
    with pytest.raises(fr.RoundtripError) as info:
        # (the original's outputs come from the probe save_bundle recorded in the scratch bundle,
        # local or remote: the difference must still be found)
        path = "ram://fr-tests/forgetful" if where == "ram" else tmp_path / "forgetful"
        fr.assert_roundtrip(model, sample_inputs=np.ones((4, 4), "float32"), path=path)
    assert isinstance(info.value, AssertionError)
    assert info.value.report.findings[0].cause is Cause.OUTPUTS
    assert "outputs @ outputs" in str(info.value)


def test_assert_roundtrip_runs_the_original_only_for_the_probe(tmp_path, monkeypatch):
    """With sample inputs, the original's outputs are the probe's: two runs, not four."""
    from faithful_restore.capture import probe as _probe

    model = sequential_model()
    calls = []
    real = _probe.run
    monkeypatch.setattr(_probe, "run", lambda m, *a, **k: (calls.append(m), real(m, *a, **k))[1])
    report = fr.assert_roundtrip(model, sample_inputs=make_xy(8)[0], path=tmp_path / "b")
    assert any(c.startswith("inference outputs on 8") for c in report.checks)
    assert sum(m is model for m in calls) == 2


def test_assert_roundtrip_checks_state(tmp_path):
    model = sequential_model()
    step = tf.Variable(12, dtype=tf.int64)
    gen = tf.random.Generator.from_seed(2)
    report = fr.assert_roundtrip(model, state={"step": step, "rng": gen}, path=tmp_path / "b")
    assert "2 training state objects" in report.checks


def test_assert_roundtrip_leaves_model_untouched_and_no_files(tmp_path):
    model = sequential_model()
    before = [np.array(v) for v in model.variables + model.optimizer.variables]
    fr.assert_roundtrip(model, path=tmp_path / "b")
    after = [np.array(v) for v in model.variables + model.optimizer.variables]
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)
    assert list(tmp_path.iterdir()) == []


def test_verify_bundle_clean(tmp_path):
    path = str(tmp_path / "b")
    fr.save_bundle(sequential_model(), path, sample_inputs=make_xy(8)[0])
    report = fr.verify_bundle(path)
    assert report.ok and not report.findings
    assert "inference outputs on 8 probe inputs" in report.checks


def test_verify_bundle_reports_version_skew_without_raising(tmp_path):
    path = str(tmp_path / "b")
    fr.save_bundle(sequential_model(), path, sample_inputs=make_xy(8)[0])
    rewrite_manifest(path, lambda d: d["environment"].update(keras="3.0.0"))
    report = fr.verify_bundle(path)
    assert report.findings[0].cause is Cause.VERSION_SKEW
    assert report.ok


def test_verify_bundle_reports_moved_outputs(tmp_path):
    import hashlib

    path = tmp_path / "b"
    fr.save_bundle(sequential_model(), str(path), sample_inputs=make_xy(8)[0])
    out = path / "probe" / "output_0.npy"
    np.save(out, np.load(out) * 2)
    sha = hashlib.sha256(out.read_bytes()).hexdigest()
    rewrite_manifest(
        str(path),
        lambda d: [
            f.update(sha256=sha, size=out.stat().st_size) for f in d["files"] if f["path"] == "probe/output_0.npy"
        ],
    )
    report = fr.verify_bundle(str(path))
    assert not report.ok and report.findings[0].cause is Cause.OUTPUTS


def test_verify_bundle_raises_only_for_unreadable(tmp_path):
    with pytest.raises(fr.BundleError, match="does not exist"):
        fr.verify_bundle(str(tmp_path / "missing"))
    path = tmp_path / "b"
    fr.save_bundle(sequential_model(), str(path))
    (path / "manifest.json").write_text("{}")
    report = fr.verify_bundle(str(path))  # digest mismatch: reported as an integrity finding
    assert report.findings[0].cause is Cause.INTEGRITY


def test_pytest_fixture(faithful_roundtrip):
    report = faithful_roundtrip(sequential_model())
    assert report.ok


# Reproductions of defects found in review.


def test_assert_roundtrip_never_deletes_an_existing_path(tmp_path):
    important = tmp_path / "important"
    important.mkdir()
    (important / "thesis.txt").write_text("years of work")
    with pytest.raises(fr.BundleError, match="already exists"):
        fr.assert_roundtrip(sequential_model(), path=important)
    assert (important / "thesis.txt").read_text() == "years of work"


def test_probe_leaves_stateful_rnn_state_untouched(tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((3, 2), batch_size=4), keras.layers.SimpleRNN(3, stateful=True), keras.layers.Dense(1)]
    )
    x = np.ones((4, 3, 2), "float32")
    model(x)
    before = [np.array(s) for s in model.layers[0].states]
    path = str(tmp_path / "b")
    fr.save_bundle(model, path, sample_inputs=x)
    for a, b in zip(before, model.layers[0].states):
        np.testing.assert_array_equal(a, np.asarray(b))
    fr.load_bundle(path)  # check_probe=True: the stored probe matches
