"""BundleManager: numbering, retention, the index, restore_or_initialize."""

from __future__ import annotations

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import assert_same_variables, make_xy, sequential_model

import faithful_restore as fr


def test_numbering_latest_and_index(tmp_path):
    manager = fr.BundleManager(tmp_path / "run", max_to_keep=None)
    assert manager.newest() is None and manager.bundles() == []
    model = sequential_model()
    for step in (10, 20, 30):
        manager.save(model, step=step, metadata={"note": f"s{step}"})
    assert [b.step for b in manager.bundles()] == [10, 20, 30]
    assert manager.newest().step == 30
    index = json.loads((tmp_path / "run" / "index.json").read_text())
    assert [e["step"] for e in index["bundles"]] == [10, 20, 30]
    assert index["bundles"][0]["metadata"] == {"note": "s10", "step": 10}
    assert manager.load(step=20).manifest.metadata["step"] == 20
    with pytest.raises(fr.BundleError, match="no bundle for step 15"):
        manager.load(step=15)


def test_retention_keeps_newest_and_every_n(tmp_path):
    manager = fr.BundleManager(tmp_path / "run", max_to_keep=2, keep_every_n_steps=100)
    model = sequential_model(compiled=False)
    for step in range(50, 450, 50):
        manager.save(model, step=step)
    assert [b.step for b in manager.bundles()] == [100, 200, 300, 350, 400]
    assert sorted(os.listdir(tmp_path / "run")) == [
        "index.json",
        "step-0000000100",
        "step-0000000200",
        "step-0000000300",
        "step-0000000350",
        "step-0000000400",
    ]


def test_retention_never_deletes_the_only_good_bundle(tmp_path):
    manager = fr.BundleManager(tmp_path / "run", max_to_keep=1)
    model = sequential_model()
    manager.save(model, step=1)
    with pytest.raises(fr.BundleError):
        manager.save("not a model", step=2)  # a failed save applies no retention
    assert [b.step for b in manager.bundles()] == [1]
    fr.load_bundle(manager.newest().path)
    manager.save(model, step=0)  # the save just committed is kept even though its step is older
    assert [b.step for b in manager.bundles()] == [0, 1]


def test_restore_or_initialize(tmp_path):
    manager = fr.BundleManager(tmp_path / "run")
    fresh = sequential_model(trained=False)
    assert manager.restore_or_initialize(fresh) == 0
    trained = sequential_model()
    step = tf.Variable(77, dtype=tf.int64)
    manager.save(trained, step=77, state={"step": step})
    target = sequential_model(trained=False)
    step2 = tf.Variable(0, dtype=tf.int64)
    assert manager.restore_or_initialize(target, state={"step": step2}) == 77
    assert int(step2) == 77
    assert_same_variables(trained.variables, target.variables)
    assert_same_variables(trained.optimizer.variables, target.optimizer.variables)
    x, y = make_xy(16, seed=3)
    trained.train_on_batch(x, y)
    target.train_on_batch(x, y)
    assert_same_variables(trained.variables, target.variables)


def test_restore_into_a_different_model_is_a_clear_error(tmp_path):
    manager = fr.BundleManager(tmp_path / "run")
    manager.save(sequential_model(), step=1)
    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(1)])
    with pytest.raises(fr.BundleError, match="build the model exactly as the saved one"):
        manager.restore_or_initialize(other)


def test_bad_arguments(tmp_path):
    with pytest.raises(fr.BundleError, match="max_to_keep"):
        fr.BundleManager(tmp_path, max_to_keep=0)
    manager = fr.BundleManager(tmp_path / "run")
    with pytest.raises(fr.BundleError, match="non-negative integer"):
        manager.save(sequential_model(), step=-1)
    with pytest.raises(fr.BundleError, match="no bundle in"):
        manager.load()


def test_global_random_generators_are_saved_and_restored(tmp_path):
    manager = fr.BundleManager(tmp_path / "run")
    model = sequential_model()
    tf.random.get_global_generator().normal([2])
    keras.random.normal((2,))  # creates Keras' global seed generator, as unseeded random ops do
    manifest = manager.save(model, step=5)
    assert {"fr_global_tf_generator", "fr_global_keras_seed"} <= set(manifest.state)
    expected_tf = tf.random.get_global_generator().normal([3]).numpy()
    expected_keras = keras.random.normal((3,)).numpy()
    assert manager.restore_or_initialize(sequential_model(trained=False)) == 5
    np.testing.assert_array_equal(tf.random.get_global_generator().normal([3]).numpy(), expected_tf)
    np.testing.assert_array_equal(keras.random.normal((3,)).numpy(), expected_keras)
    with pytest.raises(fr.BundleError, match="reserved"):
        manager.save(model, step=6, state={"fr_global_tf_generator": tf.Variable(1)})
    manager.save(model, step=7, include_global_rng=False)
    assert not set(manager.manifest(7).state) & {"fr_global_tf_generator", "fr_global_keras_seed"}
