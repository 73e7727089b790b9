"""The software environment a bundle was written in, and how it differs from the running one."""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import asdict, dataclass, fields
from typing import Any

from faithful_restore.errors import BundleError


@dataclass(frozen=True)
class Environment:
    """Versions and settings that change what a model computes or how it loads."""

    python: str
    tensorflow: str
    keras: str
    numpy: str
    platform: str
    system: str
    machine: str
    keras_backend: str
    tf_use_legacy_keras: str | None
    mixed_precision_policy: str
    device_kinds: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["device_kinds"] = list(self.device_kinds)
        return d

    @classmethod
    def from_dict(cls, data: Any) -> Environment:
        if not isinstance(data, dict):
            raise BundleError(f"manifest 'environment' must be an object, found {type(data).__name__}.")
        names = {f.name for f in fields(cls)}
        missing = names - set(data)
        if missing:
            raise BundleError(f"manifest 'environment' lacks {sorted(missing)}; the manifest is damaged.")
        kinds = data["device_kinds"]
        if not isinstance(kinds, list) or not all(isinstance(k, str) for k in kinds):
            raise BundleError("manifest 'environment.device_kinds' must be a list of strings.")
        for name in names - {"device_kinds", "tf_use_legacy_keras"}:
            if not isinstance(data[name], str):
                raise BundleError(f"manifest 'environment.{name}' must be a string, found {data[name]!r}.")
        legacy = data["tf_use_legacy_keras"]
        if legacy is not None and not isinstance(legacy, str):
            raise BundleError("manifest 'environment.tf_use_legacy_keras' must be a string or null.")
        return cls(**{**{n: data[n] for n in names}, "device_kinds": tuple(kinds)})


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
