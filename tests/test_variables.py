"""Variable snapshots that put values back, cheap reads later updates never change, and the
bitwise comparison of arrays that must agree with NumPy on every input."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from faithful_restore.runtime import variables as _variables

_dtypes = st.sampled_from(["float32", "float16", "float64", "int8", "int64", "uint16", "bool", "complex64"])


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


@settings(max_examples=200, deadline=None)
@given(data=st.data(), dtype=_dtypes, flip=st.booleans(), transpose=st.booleans())
def test_same_bytes_agrees_with_tobytes(data, dtype, flip, transpose):
    a = data.draw(hnp.arrays(dtype, hnp.array_shapes(min_dims=0, max_dims=3, max_side=9)))
    b = a.copy()
    if flip and b.size:
        raw = b.reshape(-1).view(np.uint8)
        raw[data.draw(st.integers(0, raw.size - 1))] ^= 1 << data.draw(st.integers(0, 7))
    if transpose:  # a non-contiguous view with the same bytes in logical order
        a, b = a.T, b.T
    expected = a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()
    assert _variables.same_bytes(a, b) == expected


def test_same_bytes_compares_shape_and_dtype_and_large_arrays():
    a = np.arange(3 << 20, dtype=np.float32)  # several slices
    b = a.copy()
    assert _variables.same_bytes(a, b)
    b[-1] = -1
    assert not _variables.same_bytes(a, b)
    assert not _variables.same_bytes(a, a.reshape(3, -1))
    assert not _variables.same_bytes(a, a.astype(np.int32))
    assert not _variables.same_bytes(np.array([0.0]), np.array([-0.0]))  # equal values, other bits


def test_same_bytes_reads_variables_without_changing_them():
    import keras

    value = np.arange(12, dtype=np.float32).reshape(3, 4)
    variable = keras.Variable(value)
    assert _variables.same_bytes(variable, value)
    assert _variables.same_bytes(variable, keras.Variable(value.copy()))
    variable.assign(value + 1)  # the comparison held no view that an update could change
    assert not _variables.same_bytes(variable, value)
    assert _variables.same_bytes(variable, value + 1)
