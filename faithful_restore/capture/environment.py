"""The running environment (versions and settings that change results) and how it differs from a
recorded one.
"""

from __future__ import annotations

import os
import platform
import sys
from typing import Any

from faithful_restore.format.records import Environment

# Fields whose difference can change what a restored model computes or whether it loads.
SKEW_FIELDS = (
    "tensorflow",
    "keras",
    "python",
    "numpy",
    "keras_backend",
    "tf_use_legacy_keras",
    "mixed_precision_policy",
    "system",
    "machine",
    "device_kinds",
)


def current() -> Environment:
    """Captures the running process's environment."""
    import keras
    import numpy as np
    import tensorflow as tf

    kinds = sorted({d.device_type for d in tf.config.list_logical_devices()})
    return Environment(
        python=platform.python_version(),
        tensorflow=tf.__version__,
        keras=keras.__version__,
        numpy=np.__version__,
        platform=platform.platform(),
        system=platform.system(),
        machine=platform.machine(),
        keras_backend=keras.backend.backend(),
        tf_use_legacy_keras=os.environ.get("TF_USE_LEGACY_KERAS"),
        mixed_precision_policy=keras.mixed_precision.global_policy().name,
        device_kinds=tuple(kinds),
    )


def differences(saved: Environment, running: Environment) -> list[tuple[str, Any, Any]]:
    """Lists (field, saved value, running value) for each field of SKEW_FIELDS that differs."""
    out = []
    for name in SKEW_FIELDS:
        a, b = getattr(saved, name), getattr(running, name)
        if a != b:
            out.append((name, a, b))
    return out


def describe(diffs: list[tuple[str, Any, Any]]) -> str:
    return "; ".join(f"{name}: saved {a!r}, running {b!r}" for name, a, b in diffs)


def python_tag() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"
