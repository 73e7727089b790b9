"""Verdicts on models nobody here wrote (KerasHub): right every time, checked independently too.

For each model: save_bundle, load_bundle, compare ok, verify_bundle ok, assert_roundtrip passes,
and our own check with NumPy and Keras alone: weights and optimizer variables bitwise, and the
next ``train_on_batch`` bitwise. Then the negatives: a swapped vocabulary entry, one perturbed
weight and another dropout rate, each named with its cause.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_same_variables

pytest.importorskip("keras_hub", minversion="0.32", reason="the real-model suite needs keras-hub (test extra)")

import real_models  # noqa: E402

import faithful_restore as fr  # noqa: E402
from faithful_restore import Cause  # noqa: E402


def _params():
    return [pytest.param(n, marks=() if n in real_models.FAST else pytest.mark.slow) for n in real_models.MODELS]


@pytest.mark.parametrize("name", _params())
def test_real_model_round_trip_gives_the_right_verdict(tmp_path, name):
    model, x, y, train_x = real_models.MODELS[name]()
    path = str(tmp_path / "b")
    fr.save_bundle(model, path, sample_inputs=x)
    bundle = fr.load_bundle(path)

    report = fr.compare(model, bundle, sample_inputs=x, sample_targets=y)
    assert report.ok, report.to_text()
    verified = fr.verify_bundle(path)
    assert verified.ok, verified.to_text()
    fr.assert_roundtrip(model, sample_inputs=x, sample_targets=y)

    # Independently of the library: bitwise state, and the next step bitwise.
    assert_same_variables(model.variables, bundle.model.variables)
    assert_same_variables(model.optimizer.variables, bundle.optimizer.variables)
    model.train_on_batch(train_x, y)
    bundle.model.train_on_batch(train_x, y)
    assert_same_variables(model.variables, bundle.model.variables)
    assert_same_variables(model.optimizer.variables, bundle.optimizer.variables)


def test_a_verdict_does_not_depend_on_what_the_process_built_before(tmp_path):
    # Keras numbers auto-named sublayers per process (dropout vs dropout_2): a bundle loaded in
    # the process that already built models must verify as in a fresh one.
    model, x, _, _ = real_models.bert()
    path = str(tmp_path / "b")
    fr.save_bundle(model, path, sample_inputs=x)
    fr.load_bundle(path)
    real_models.bert()
    report = fr.verify_bundle(path)
    assert report.ok, report.to_text()


def test_a_lazily_built_packer_is_not_a_missing_layer(tmp_path):
    model, x, y, _ = real_models.bert_classifier()
    path = str(tmp_path / "b")
    fr.save_bundle(model, path, sample_inputs=x)
    bundle = fr.load_bundle(path)  # its preprocessor has not been called: no packer yet
    report = fr.compare(model, bundle, sample_inputs=x, sample_targets=y)
    assert report.ok, report.to_text()
    lazy = [f for f in report.findings if f.cause is Cause.ARCHITECTURE]
    assert lazy and all(f.severity == "info" for f in lazy) and "packer" in lazy[0].path
    assert fr.verify_bundle(path).ok


def test_a_swapped_vocabulary_entry_is_preprocessing(tmp_path):
    model, x, y, _ = real_models.bert_classifier()
    path = str(tmp_path / "b")
    fr.save_bundle(model, path, sample_inputs=x)
    bundle = fr.load_bundle(path)
    vocabulary = list(real_models.VOCAB)
    vocabulary[6], vocabulary[7] = vocabulary[7], vocabulary[6]  # "quick" <-> "brown"
    bundle.model.preprocessor.tokenizer.set_vocabulary(vocabulary)
    report = fr.compare(model, bundle, sample_inputs=x, sample_targets=y)
    assert not report.ok
    assert report.findings[0].cause is Cause.PREPROCESSING
    assert "tokenizer" in report.findings[0].path and "vocabulary" in report.findings[0].message


def test_one_perturbed_weight_is_weights(tmp_path):
    model, x, y, _ = real_models.llama()
    path = str(tmp_path / "b")
    fr.save_bundle(model, path)
    bundle = fr.load_bundle(path)
    kernel = next(v for v in bundle.model.trainable_variables if len(v.shape) == 3)
    value = np.asarray(kernel).copy()
    value.reshape(-1)[0] += 0.5
    kernel.assign(value)
    report = fr.compare(model, bundle, sample_inputs=x, sample_targets=y)
    assert not report.ok
    assert report.findings[0].cause is Cause.WEIGHTS
    assert len([f for f in report.findings if f.cause is Cause.WEIGHTS]) == 1


def test_another_dropout_rate_is_regularization(tmp_path):
    import keras_hub

    model, x, y, _ = real_models.bert()
    rebuilt = keras_hub.models.BertBackbone.from_config({**model.get_config(), "dropout": 0.3})
    rebuilt.set_weights(model.get_weights())
    rebuilt.compile(optimizer=model.optimizer.__class__.from_config(model.optimizer.get_config()), loss=model.loss)
    report = fr.compare(model, rebuilt, sample_inputs=x, sample_targets=y, check_training_step=False)
    assert not report.ok
    assert report.findings[0].cause is Cause.REGULARIZATION, report.to_text()
