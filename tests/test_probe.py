"""Probe comparisons: the byte-equality fast path must agree with NumPy on every input."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from faithful_restore import _probe

_dtypes = st.sampled_from(["float32", "float16", "float64", "int8", "int64", "uint16", "bool", "complex64"])


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
    assert _probe.same_bytes(a, b) == expected


def test_same_bytes_compares_shape_and_dtype_and_large_arrays():
    a = np.arange(3 << 20, dtype=np.float32)  # several slices
    b = a.copy()
    assert _probe.same_bytes(a, b)
    b[-1] = -1
    assert not _probe.same_bytes(a, b)
    assert not _probe.same_bytes(a, a.reshape(3, -1))
    assert not _probe.same_bytes(a, a.astype(np.int32))
    assert not _probe.same_bytes(np.array([0.0]), np.array([-0.0]))  # equal values, other bits


def test_max_differences_reports_zero_for_identical_and_the_gap_otherwise():
    a = [np.array([1.0, np.nan, 3.0], np.float32)]
    assert _probe.max_differences(a, [a[0].copy()]) == [(0.0, 0.0)]
    b = [np.array([1.0, np.nan, 3.5], np.float32)]
    assert _probe.max_differences(a, b)[0][0] == 0.5
    c = [np.array([1.0, 2.0, 3.0], np.float32)]
    assert _probe.max_differences(a, c)[0][0] == float("inf")  # a NaN that appeared or vanished


def test_same_bytes_reads_variables_without_changing_them():
    import keras

    value = np.arange(12, dtype=np.float32).reshape(3, 4)
    variable = keras.Variable(value)
    assert _probe.same_bytes(variable, value)
    assert _probe.same_bytes(variable, keras.Variable(value.copy()))
    variable.assign(value + 1)  # the comparison held no view that an update could change
    assert not _probe.same_bytes(variable, value)
    assert _probe.same_bytes(variable, value + 1)
