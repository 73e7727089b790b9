"""Environment capture and skew detection."""

from __future__ import annotations

import dataclasses

import keras
import pytest
import tensorflow as tf

import faithful_restore as fr
from faithful_restore.capture import environment as _environment


def test_current_environment_is_real():
    env = _environment.current()
    assert env.tensorflow == tf.__version__ and env.keras == keras.__version__
    assert env.keras_backend == "tensorflow" and "CPU" in env.device_kinds
    assert fr.Environment.from_dict(env.to_dict()) == env


def test_differences_name_each_field():
    env = _environment.current()
    other = dataclasses.replace(env, tensorflow="2.16.1", mixed_precision_policy="mixed_float16", platform="x")
    diffs = _environment.differences(other, env)
    assert [d[0] for d in diffs] == ["tensorflow", "mixed_precision_policy"]  # platform string is informational
    assert "tensorflow: saved '2.16.1'" in _environment.describe(diffs)


def test_malformed_environment_refused():
    data = _environment.current().to_dict()
    data["device_kinds"] = "CPU"
    with pytest.raises(fr.BundleError, match="device_kinds"):
        fr.Environment.from_dict(data)
