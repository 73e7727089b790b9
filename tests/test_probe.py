"""Probe comparisons: per-output differences between saved and recomputed outputs."""

from __future__ import annotations

import numpy as np

from faithful_restore.capture import probe as _probe


def test_max_differences_reports_zero_for_identical_and_the_gap_otherwise():
    a = [np.array([1.0, np.nan, 3.0], np.float32)]
    assert _probe.max_differences(a, [a[0].copy()]) == [(0.0, 0.0)]
    b = [np.array([1.0, np.nan, 3.5], np.float32)]
    assert _probe.max_differences(a, b)[0][0] == 0.5
    c = [np.array([1.0, 2.0, 3.0], np.float32)]
    assert _probe.max_differences(a, c)[0][0] == float("inf")  # a NaN that appeared or vanished
