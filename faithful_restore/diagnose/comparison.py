"""compare(): every difference between an original and a restored model, with its likely cause.

Stored state (weights, optimizer slots, preprocessing state, random state) compares bitwise.
Computed results (outputs, the next training step) compare against a noise floor measured by
computing the original twice, plus the caller's ``atol``/``rtol``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from faithful_restore.bundle.load import load_bundle
from faithful_restore.bundle.types import Bundle
from faithful_restore.capture import architecture as _architecture
from faithful_restore.capture import preprocessing as _preprocessing
from faithful_restore.capture import probe as _probe
from faithful_restore.errors import ArgumentTypeError
from faithful_restore.findings import Cause, Finding
from faithful_restore.format.manifest import Manifest
from faithful_restore.runtime import keras_internals as _keras_internals

_BN_KEYS = ("momentum", "epsilon", "synchronized")
_MAX_VARIABLE_FINDINGS = 10
# Relative difference between inference runs beyond which a layer is in training mode.
_MODE_RTOL = 1e-3
# Causes that make different outputs / a different next step expected.
_EXPLAINS_OUTPUTS = {
    Cause.INPUT_SIGNATURE,
    Cause.ARCHITECTURE,
    Cause.PREPROCESSING,
    Cause.REGULARIZATION,
    Cause.REPLICA_DIVERGENCE,
    Cause.WEIGHTS,
}
_EXPLAINS_STEP = _EXPLAINS_OUTPUTS | {Cause.OPTIMIZER_STATE, Cause.TRAINING_STATE}


@dataclass
class _Side:
    label: str
    model: Any
    optimizer: Any = None
    manifest: Manifest | None = None
    state: dict[str, Any] = field(default_factory=dict)
    preprocessing: dict[str, Any] = field(default_factory=dict)
    root: str | None = None


def _side(obj: Any, label: str, custom_objects: Any = None, safe_mode: bool = True) -> _Side:
    import keras

    if isinstance(obj, Bundle):
        return _Side(label, obj.model, obj.optimizer, obj.manifest, dict(obj.state), dict(obj.preprocessing), obj.path)
    if isinstance(obj, keras.Model):
        return _Side(label, obj, getattr(obj, "optimizer", None))
    if isinstance(obj, (str, os.PathLike)):
        bundle = load_bundle(
            obj, check_probe=False, on_version_skew="ignore", custom_objects=custom_objects, safe_mode=safe_mode
        )
        return _side(bundle, label)
    raise ArgumentTypeError(
        f"{label} must be a keras.Model, a faithful_restore.Bundle or a bundle path, found {type(obj).__name__}."
    )


def _array_diff(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(max abs diff, relative to the largest magnitude); integer and bool values are numbers too."""
    if a.dtype.kind not in "biufc" or b.dtype.kind not in "biufc" or a.shape != b.shape:
        return (0.0, 0.0) if np.array_equal(a, b) else (float("inf"), float("inf"))
    diff = float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)), initial=0.0))
    scale = float(np.max(np.abs(a.astype(np.float64)), initial=0.0))
    return diff, (diff / scale if scale else diff)


def _layer_weights(layer: Any) -> list[Any]:
    return _keras_internals.own_variables(layer)


def _is_preprocessing(layer: Any) -> bool:
    return _preprocessing.is_preprocessing(layer)


def skew_findings(diffs: list[tuple[str, Any, Any]]) -> list[Finding]:
    """One VERSION_SKEW warning per environment field that differs."""
    return [
        Finding(
            Cause.VERSION_SKEW,
            "warning",
            f"environment.{name}",
            _architecture.jsonable(a),
            _architecture.jsonable(b),
            f"{name} was {a!r} when the bundle was saved and is {b!r} now; results may differ by rounding. "
            "Install the saved version to reproduce exactly.",
        )
        for name, a, b in diffs
    ]


class Comparison:
    """The two sides, the tolerances and the findings so far; the checks live in subclasses."""

    def __init__(
        self,
        original: _Side,
        restored: _Side,
        rtol: float,
        atol: float,
        restored_disposable: bool = False,
        original_outputs: tuple[list[np.ndarray], float] | None = None,
    ) -> None:
        self.o, self.r = original, restored
        self.rtol, self.atol = rtol, atol
        # Set by training_step: whether the next step agreed within its noise floor alone (no
        # caller tolerance), and whether both sides followed their own compiled losses.
        self.step_identical = False
        self.step_used_compiled_loss = False
        # The restored model is thrown away afterwards (assert_roundtrip): step it in place.
        self.restored_disposable = restored_disposable
        # The original's outputs on the inputs and their noise floor, when already computed.
        self.original_outputs = original_outputs
        self.findings: list[Finding] = []
        self.checks: list[str] = []
        self.pairs: list[tuple[str, Any, str, Any]] = []

    def add(self, cause: Cause, severity: str, path: str, expected: Any, found: Any, message: str) -> None:
        self.findings.append(
            Finding(cause, severity, path, _architecture.jsonable(expected), _architecture.jsonable(found), message)
        )

    def error_causes(self) -> set[Cause]:
        return {f.cause for f in self.findings if f.severity == "error"}

    # ------------------------------------------------------------------ computed results
    def _tolerance(self, noise: float, scale: float) -> float:
        return self.atol + self.rtol * scale + _probe.NOISE_FACTOR * noise


def _brief(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _flatten(value: Any) -> list[Any]:
    import tensorflow as tf

    return tf.nest.flatten(value)


def _summary(value: Any) -> Any:
    """A short JSON description of an array for a finding's expected/found."""
    if value is None:
        return None
    array = np.asarray(value)
    if array.size <= 8:
        return array.tolist()
    if array.dtype.kind in "fc":
        return {"shape": list(array.shape), "mean": float(np.mean(array)), "max_abs": float(np.max(np.abs(array)))}
    return {"shape": list(array.shape), "dtype": str(array.dtype)}


def _trackable_values(obj: Any) -> list[np.ndarray] | None:
    import tensorflow as tf

    if isinstance(obj, tf.random.Generator):
        return [np.asarray(obj.state), np.asarray(obj.algorithm)]
    if isinstance(obj, tf.Variable) or hasattr(obj, "assign") and hasattr(obj, "numpy"):
        return [np.asarray(obj)]
    variables = getattr(obj, "variables", None)
    if variables is not None and not callable(variables):
        return [np.asarray(v) for v in variables]
    return None
