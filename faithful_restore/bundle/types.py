"""The Bundle value: a model with its optimizer, manifest, state and preprocessing."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from faithful_restore.bundle import checks as _checks
from faithful_restore.capture import preprocessing as _preprocessing
from faithful_restore.drift import guard as _guard
from faithful_restore.drift.stats import PreprocessingStats
from faithful_restore.errors import (
    ArgumentError,
    ArgumentTypeError,
    InputCheckError,
    PreprocessingWarning,
)
from faithful_restore.format import progress as _progress
from faithful_restore.format.manifest import (
    Manifest,
)


@dataclass(frozen=True)
class Bundle:
    """A model with its optimizer and training state, as loaded by :func:`load_bundle`.

    Build one yourself to describe a live training run for :func:`compare`, e.g.
    ``Bundle(model, optimizer=opt, state={"step": step})``.

    Attributes:
        model: the Keras model (restored models are compiled when loaded with ``compile=True``).
        optimizer: the optimizer, built on ``model``'s variables, or None.
        manifest: the bundle's :class:`Manifest` (None for a live run).
        state: the caller's trackables; after ``load_bundle(state=...)`` restored in place.
        preprocessing: the caller's preprocessing mapping as saved.
        path: where the bundle was loaded from (None for a live run).
    """

    model: Any
    optimizer: Any = None
    manifest: Manifest | None = None
    state: dict[str, Any] = field(default_factory=dict)
    preprocessing: dict[str, Any] = field(default_factory=dict)
    path: str | None = None

    def predict(self, x: Any, *, check_inputs: bool = True, thresholds: Any = None, **predict_kwargs: Any) -> Any:
        """Checks ``x`` against what training saw, then runs ``model.predict``.

        Args:
            x: the inputs.
            check_inputs: run :func:`check_inputs` first (needs stats saved with the bundle, or a
                recorded signature; without stats only shapes and dtypes are checked).
            thresholds: passed to :func:`check_inputs`.
            **predict_kwargs: passed to ``model.predict`` (``verbose`` defaults to 0).

        Raises:
            InputCheckError: the check found errors; ``.report`` holds the findings.
        """
        if check_inputs:
            report = self.check_inputs(x, thresholds=thresholds)
            if not report.ok:
                raise InputCheckError(report.to_text(), report)
            problems = [f for f in report.findings if f.severity == "warning"]
            if problems:
                warnings.warn(report.summary(), PreprocessingWarning, stacklevel=2)
        predict_kwargs.setdefault("verbose", 0)
        return self.model.predict(x, **predict_kwargs)

    def check_inputs(self, x: Any, *, thresholds: Any = None) -> Any:
        """Compares a batch with the bundle's training statistics and signature (a Report).

        The same rule as ``faithful_restore.check_inputs(bundle, x)``.
        """
        signature = self.manifest.signature if self.manifest is not None else None
        return _guard.check_batch(self.input_stats(), x, signature=signature, thresholds=thresholds)

    def input_stats(self) -> PreprocessingStats | None:
        """The training statistics inputs are checked against, or None when none were saved.

        Raises:
            BundleError: several statistics were saved and none is named ``"stats"``.
        """
        found = {k: v for k, v in self.preprocessing.items() if isinstance(v, PreprocessingStats)}
        if found or self.manifest is None:
            return _preprocessing.pick_stats(found)
        return _preprocessing.stats_in_manifest(self.manifest)


SKEW_MODES = ("warn", "error", "ignore")


@dataclass(frozen=True)
class LoadOptions:
    """What a load does beyond the integrity check, which always runs (every byte is hashed).

    Attributes:
        custom_objects: custom classes/functions by name, as for ``keras.models.load_model``.
        compile: compile the model as it was saved; the optimizer is restored either way.
        safe_mode: refuse bundles that store Python code (Lambda layers).
        on_version_skew: "warn" (VersionSkewWarning), "error" (VersionSkewError) or "ignore".
        check_probe: re-run the stored probe and raise RoundtripError when outputs moved.
        state: names to trackables restored in place (a subset of what was saved).
        verbose: progress while hashing large bundles: "auto" (stderr is a terminal), True, False.

    Raises:
        ArgumentError, ArgumentTypeError: on construction, for a value the load cannot take.
    """

    custom_objects: Mapping[str, Any] | None = None
    compile: bool = True
    safe_mode: bool = True
    on_version_skew: str = "warn"
    check_probe: bool = True
    state: Mapping[str, Any] = field(default_factory=dict)
    verbose: bool | str = "auto"

    def __post_init__(self) -> None:
        if self.on_version_skew not in SKEW_MODES:
            raise ArgumentError(f"on_version_skew must be one of {SKEW_MODES}, found {self.on_version_skew!r}.")
        for name in ("compile", "safe_mode", "check_probe"):
            if not isinstance(getattr(self, name), bool):
                raise ArgumentTypeError(f"{name} must be True or False, found {getattr(self, name)!r}.")
        if self.custom_objects is not None and not isinstance(self.custom_objects, Mapping):
            raise ArgumentTypeError(
                f"custom_objects must be a dict of names to classes, found {type(self.custom_objects).__name__}."
            )
        object.__setattr__(self, "state", _checks.check_state(self.state, "state"))
        _progress.wanted(self.verbose)
