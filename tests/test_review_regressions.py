"""Regression tests for defects found in review: each reproduces the original failure."""

from __future__ import annotations

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import assert_same_variables, make_xy, rewrite_manifest, sequential_model

import faithful_restore as fr


def test_assert_roundtrip_never_deletes_an_existing_path(tmp_path):
    important = tmp_path / "important"
    important.mkdir()
    (important / "thesis.txt").write_text("years of work")
    with pytest.raises(fr.BundleError, match="already exists"):
        fr.assert_roundtrip(sequential_model(), path=important)
    assert (important / "thesis.txt").read_text() == "years of work"


def test_overwrite_refuses_a_directory_whose_manifest_is_not_ours(tmp_path):
    webapp = tmp_path / "webapp"
    (webapp / "src").mkdir(parents=True)
    (webapp / "manifest.json").write_text('{"name": "my pwa"}')
    (webapp / "src" / "app.js").write_text("console.log(1)")
    with pytest.raises(fr.BundleError, match="holds no bundle"):
        fr.save_bundle(sequential_model(), str(webapp), overwrite=True)
    assert (webapp / "src" / "app.js").exists()


def test_symlinked_manifest_files_are_refused(tmp_path):
    path = tmp_path / "b"
    fr.save_bundle(sequential_model(), str(path))
    for name in ("manifest.json", "manifest.sha256"):
        outside = tmp_path / f"outside-{name}"
        os.replace(path / name, outside)
        os.symlink(outside, path / name)
    with pytest.raises(fr.BundleError, match="cannot read|not a regular file"):
        fr.load_bundle(str(path))
    with pytest.raises(fr.BundleError):
        fr.verify_bundle(str(path))


def test_fifo_manifest_digest_does_not_hang(tmp_path):
    path = tmp_path / "b"
    fr.save_bundle(sequential_model(), str(path))
    os.remove(path / "manifest.sha256")
    os.mkfifo(path / "manifest.sha256")
    with pytest.raises(fr.BundleError, match="not a regular file"):
        fr.load_bundle(str(path))


def test_manifest_that_is_a_directory(tmp_path):
    path = tmp_path / "b"
    fr.save_bundle(sequential_model(), str(path))
    os.remove(path / "manifest.json")
    os.mkdir(path / "manifest.json")
    with pytest.raises(fr.BundleError) as info:
        fr.load_bundle(str(path))
    assert ".fr-read-" not in str(info.value)  # the message names the user's path, not a snapshot


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


def test_callback_survives_a_nan_loss(tmp_path):
    x, y = make_xy(32)
    y[3] = np.nan
    model = sequential_model(trained=False)
    ckpt = fr.keras.BundleCheckpoint(tmp_path / "ck", monitor="loss", save_best_only=True)
    model.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[ckpt])  # does not raise
    meta = fr.BundleManager(tmp_path / "ck").all
    assert all("loss" not in fr.load_bundle(b.path).manifest.metadata["logs"] for b in meta)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d["preprocessing"]["user"].update(bad={"kind": "value"}),
        lambda d: d["random_state"][0].update(value=[2**80, 1]),
        lambda d: d["random_state"][0].pop("path"),
    ],
)
def test_malformed_entries_raise_bundle_error(tmp_path, mutate):
    path = str(tmp_path / "b")
    fr.save_bundle(sequential_model(), path, preprocessing={"n": 1})
    rewrite_manifest(path, mutate)
    with pytest.raises(fr.BundleError):
        fr.load_bundle(path)
    with pytest.raises(fr.BundleError):
        fr.verify_bundle(path)


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
    fr.load_bundle(path)  # verify=True: the stored probe matches


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
