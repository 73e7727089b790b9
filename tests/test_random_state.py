"""Snapshots that put variables back: cheap reads that later updates can never change."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from faithful_restore import _variables


def test_restoring_puts_back_values_after_in_place_optimizer_updates():
    model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(32), keras.layers.BatchNormalization()])
    optimizer = keras.optimizers.Adam(0.1)
    x = np.random.default_rng(0).normal(size=(8, 16)).astype(np.float32)
    optimizer.build(model.trainable_variables)
    variables = list(model.variables) + list(optimizer.variables)
    before = [np.array(v, copy=True) for v in variables]
    with _variables.restoring(variables):
        for _ in range(3):  # resource-variable updates write in place unless a read still holds the buffer
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(model(x, training=True) ** 2)
            optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        assert not np.array_equal(np.asarray(model.variables[0]), before[0])
    for v, value in zip(variables, before):
        np.testing.assert_array_equal(np.asarray(v), value)


def test_read_is_a_value_not_a_view():
    variable = keras.Variable(np.zeros((4, 4), np.float32))
    snapshot = _variables.read(variable)
    variable.assign_add(np.ones((4, 4), np.float32))
    variable.value.assign_add(tf.ones((4, 4)))  # the raw TensorFlow update path too
    np.testing.assert_array_equal(np.asarray(snapshot), np.zeros((4, 4), np.float32))
    np.testing.assert_array_equal(np.asarray(variable), np.full((4, 4), 2.0, np.float32))
