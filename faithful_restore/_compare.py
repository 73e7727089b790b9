"""compare(): every difference between an original and a restored model, with its likely cause.

Stored state (weights, optimizer slots, preprocessing state, random state) compares bitwise.
Computed results (outputs, the next training step) compare against a noise floor measured by
computing the original twice, plus the caller's ``atol``/``rtol``.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from faithful_restore import (
    _architecture,
    _environment,
    _keras_internals,
    _preprocessing,
    _probe,
    _random_state,
    _signature,
    _training_step,
    _variables,
)
from faithful_restore._bundle import Bundle, load_bundle
from faithful_restore._findings import Cause, Finding, Report, integrity_report
from faithful_restore._inputs import synthesize
from faithful_restore._manifest import Manifest
from faithful_restore.errors import BundleError, IntegrityError

_BN_KEYS = ("momentum", "epsilon", "synchronized")
_MAX_VARIABLE_FINDINGS = 10
# A computed difference up to this many noise floors is noise.
_NOISE_FACTOR = 4.0
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
            obj, verify=False, on_version_skew="ignore", custom_objects=custom_objects, safe_mode=safe_mode
        )
        return _side(bundle, label)
    raise BundleError(
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


class _Comparison:
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

    # ------------------------------------------------------------------ environment
    def environment(self) -> None:
        running = _environment.current()
        if self.r.manifest is not None:
            saved = self.o.manifest.environment if self.o.manifest is not None else self.r.manifest.environment
            against = self.r.manifest.environment if self.o.manifest is not None else running
            self.findings.extend(skew_findings(_environment.differences(saved, against)))
            self.checks.append("environment")

    # ------------------------------------------------------------------ signature
    def signature(self) -> None:
        so = _signature.of_model(self.o.model)
        sr = _signature.of_model(self.r.model)
        for kind in ("inputs", "outputs"):
            a, b = getattr(so, kind), getattr(sr, kind)
            if not a or not b:
                continue
            if len(a) != len(b):
                self.add(
                    Cause.INPUT_SIGNATURE,
                    "error",
                    kind,
                    [t.name for t in a],
                    [t.name for t in b],
                    f"the original model has {len(a)} {kind}, the restored one {len(b)}; rebuild the "
                    "model with the saved architecture (load the bundle's model instead of rebuilding it).",
                )
                continue
            for ta, tb in zip(a, b):
                if ta.shape != tb.shape or ta.dtype != tb.dtype:
                    self.add(
                        Cause.INPUT_SIGNATURE,
                        "error",
                        f"{kind}.{ta.name}",
                        {"shape": ta.shape, "dtype": ta.dtype},
                        {"shape": tb.shape, "dtype": tb.dtype},
                        f"{kind[:-1]} {ta.name!r} is {tb.dtype}{list(tb.shape or [])} in the restored model "
                        f"but was {ta.dtype}{list(ta.shape or [])}; rebuild it with the saved input "
                        "signature.",
                    )
        self.checks.append("input/output signature")

    # ------------------------------------------------------------------ layers
    def layers(self) -> None:
        lo = _architecture.iter_layers(self.o.model)
        lr = _architecture.iter_layers(self.r.model)
        names_o = [type(layer).__name__ for _, layer in lo]
        names_r = [type(layer).__name__ for _, layer in lr]
        matcher = difflib.SequenceMatcher(a=names_o, b=names_r, autojunk=False)
        opcodes = matcher.get_opcodes()
        for op, i1, i2, j1, _j2 in opcodes:
            if op == "equal":
                for k in range(i2 - i1):
                    po, layer_o = lo[i1 + k]
                    pr, layer_r = lr[j1 + k]
                    self.pairs.append((po, layer_o, pr, layer_r))
        # For a layer on one side, its parent's counterpart on the other side.
        matched_o = {po: layer_r for po, _, _, layer_r in self.pairs}
        matched_r = {pr: layer_o for _, layer_o, pr, _ in self.pairs}

        def lazy(path: str, layer: Any, counterparts: dict[str, Any]) -> bool:
            # Holds nothing, and the other side's parent has not been built yet: that parent builds
            # it on first call (e.g. a preprocessor's packer), from its own config, which is compared.
            # Under a built parent a missing sublayer is a real difference.
            other_parent = counterparts.get(path.rpartition("/")[0])
            return other_parent is not None and not getattr(other_parent, "built", True) and not layer.variables

        for op, i1, i2, j1, j2 in opcodes:
            if op == "equal":
                continue
            only_o = [(p, layer) for p, layer in lo[i1:i2] if not lazy(p, layer, matched_o)]
            only_r = [(p, layer) for p, layer in lr[j1:j2] if not lazy(p, layer, matched_r)]
            lazily = [(p, layer, "original") for p, layer in lo[i1:i2] if lazy(p, layer, matched_o)]
            lazily += [(p, layer, "restored") for p, layer in lr[j1:j2] if lazy(p, layer, matched_r)]
            for p, layer, built in lazily:
                self.add(
                    Cause.ARCHITECTURE,
                    "info",
                    p,
                    None,
                    f"built only in the {built} model",
                    f"{type(layer).__name__} {p!r} holds no weights and is built on first call by its "
                    f"parent; only the {built} model has called it so far, which changes nothing it computes.",
                )
            if not only_o and not only_r:
                continue
            missing = [f"{p} ({type(layer).__name__})" for p, layer in only_o]
            extra = [f"{p} ({type(layer).__name__})" for p, layer in only_r]
            self.add(
                Cause.ARCHITECTURE,
                "error",
                (only_o or only_r)[0][0],
                missing,
                extra,
                "the restored model "
                + (f"lacks {', '.join(missing)}" if missing else "")
                + (" and " if missing and extra else "")
                + (f"has extra {', '.join(extra)}" if extra else "")
                + "; load the saved architecture instead of rebuilding it by hand.",
            )
        for po, layer_o, _pr, layer_r in self.pairs:
            self._layer_config(po, layer_o, layer_r)
        self.checks.append(f"architecture ({len(lo)} layers)")

    def _layer_config(self, path: str, layer_o: Any, layer_r: Any) -> None:
        import keras

        if isinstance(layer_o, keras.Model):
            return  # a nested model's layers are compared one by one
        raw_o, raw_r = _architecture.config_or_none(layer_o), _architecture.config_or_none(layer_r)
        if raw_o is None or raw_r is None:
            # Keras never serializes such a sublayer (its parent's constructor rebuilds it); its
            # weights and the outputs are still compared.
            self.add(
                Cause.ARCHITECTURE,
                "info",
                path,
                "a config" if raw_o is not None else "no config",
                "a config" if raw_r is not None else "no config",
                f"{type(layer_o).__name__} {path!r} has no config to compare (its get_config() fails); "
                "its weights and the model's outputs are compared instead.",
            )
            return
        co, cr = (
            _architecture.jsonable(_architecture.canonical(raw_o)),
            _architecture.jsonable(_architecture.canonical(raw_r)),
        )
        keys = sorted(k for k in set(co) | set(cr) if k != "name" and co.get(k) != cr.get(k))
        if not keys:
            return
        is_bn = "Normalization" in type(layer_o).__name__ and not _is_preprocessing(layer_o)
        reg_keys = set(_architecture._REGULARIZATION_KEYS) | (set(_BN_KEYS) | {"trainable"} if is_bn else set())
        groups: dict[Cause, list[str]] = {}
        for key in keys:
            if key in reg_keys:
                cause = Cause.REGULARIZATION
            elif _is_preprocessing(layer_o):
                cause = Cause.PREPROCESSING
            else:
                cause = Cause.ARCHITECTURE
            groups.setdefault(cause, []).append(key)
        fixes = {
            Cause.REGULARIZATION: "training with the restored model regularizes differently; restore the "
            "saved config (load the bundle's model) rather than rebuilding it.",
            Cause.PREPROCESSING: "inference inputs are transformed differently; restore the saved "
            "preprocessing layer state.",
            Cause.ARCHITECTURE: "the rebuilt layer differs; load the saved architecture instead of "
            "rebuilding it by hand.",
        }
        for cause, ks in groups.items():
            self.add(
                cause,
                "error",
                path,
                {k: co.get(k) for k in ks},
                {k: cr.get(k) for k in ks},
                f"{type(layer_o).__name__} {path!r} has "
                + ", ".join(f"{k}={_brief(cr.get(k))} (saved {_brief(co.get(k))})" for k in ks)
                + f"; {fixes[cause]}",
            )

    # ------------------------------------------------------------------ weights and state
    def weights(self) -> None:
        config_diff = {f.path for f in self.findings if f.cause in (Cause.ARCHITECTURE, Cause.PREPROCESSING)}
        compared = 0
        reported = 0
        for po, layer_o, _pr, layer_r in self.pairs:
            wo, wr = _layer_weights(layer_o), _layer_weights(layer_r)
            preprocessing = _is_preprocessing(layer_o)
            if len(wo) != len(wr) or any(tuple(a.shape) != tuple(b.shape) for a, b in zip(wo, wr)):
                if po not in config_diff:
                    self.add(
                        Cause.ARCHITECTURE,
                        "error",
                        po,
                        [list(v.shape) for v in wo],
                        [list(v.shape) for v in wr],
                        f"layer {po!r} holds weights of other shapes in the restored model; its "
                        "configuration or input shape changed.",
                    )
                continue
            for a, b in zip(wo, wr):
                compared += 1
                if _probe.same_bytes(a, b):
                    continue
                absdiff, reldiff = _array_diff(np.asarray(a), np.asarray(b))
                path = f"{po}/{a.name}"
                if preprocessing:
                    self.add(
                        Cause.PREPROCESSING,
                        "error",
                        path,
                        _summary(a),
                        _summary(b),
                        f"preprocessing state {path!r} differs (max abs diff {absdiff:.3g}): the layer "
                        "was adapted on other data or not restored; restore the saved layer state or "
                        "re-adapt it on the training data.",
                    )
                elif reported < _MAX_VARIABLE_FINDINGS:
                    reported += 1
                    self.add(
                        Cause.WEIGHTS,
                        "error",
                        path,
                        _summary(a),
                        _summary(b),
                        f"weight {path!r} differs (max abs diff {absdiff:.3g}, relative {reldiff:.3g}); "
                        "restore all weights from the same checkpoint (a partial or stale load).",
                    )
                else:
                    reported += 1
        if reported > _MAX_VARIABLE_FINDINGS:
            self.add(
                Cause.WEIGHTS,
                "error",
                "weights",
                None,
                reported,
                f"{reported - _MAX_VARIABLE_FINDINGS} more weights differ (not listed).",
            )
        self.checks.append(f"{compared} weights bitwise")
        self._preprocessing_state()
        self._seed_state()

    def _preprocessing_state(self) -> None:
        already = {f.path.rsplit("/", 1)[0] for f in self.findings if f.cause is Cause.PREPROCESSING}
        already |= {f.path for f in self.findings if f.cause is Cause.PREPROCESSING}
        count = 0
        for po, layer_o, _pr, layer_r in self.pairs:
            so = _preprocessing._layer_state(layer_o)
            if so is None:
                continue
            count += 1
            sr = _preprocessing._layer_state(layer_r)
            if so != sr and po not in already:
                keys = sorted(k for k in so if so.get(k) != (sr or {}).get(k))
                self.add(
                    Cause.PREPROCESSING,
                    "error",
                    po,
                    {k: so.get(k) for k in keys},
                    {k: (sr or {}).get(k) for k in keys},
                    f"{type(layer_o).__name__} {po!r} differs in {', '.join(keys)}"
                    + (" (its vocabulary or other state Keras saves as assets)" if "assets_sha256" in keys else "")
                    + ": inference inputs are transformed differently than in training; restore the saved "
                    "layer state.",
                )
        ua, ub = self.o.preprocessing, self.r.preprocessing
        if ua and ub:
            for key in sorted(set(ua) | set(ub)):
                a, b = ua.get(key), ub.get(key)
                same = _probe.same_bytes(a, b) if isinstance(a, np.ndarray) or isinstance(b, np.ndarray) else a == b
                if not same:
                    self.add(
                        Cause.PREPROCESSING,
                        "error",
                        f"preprocessing[{key!r}]",
                        _summary(a),
                        _summary(b),
                        f"the recorded preprocessing value {key!r} differs; apply the statistics saved "
                        "with the training run.",
                    )
            count += len(ua)
        if count:
            self.checks.append(f"{count} preprocessing states")

    def _seed_state(self) -> None:
        so = _random_state.seed_variables(self.o.model)
        sr = _random_state.seed_variables(self.r.model)
        if len(so) != len(sr):
            return  # an architecture finding explains it
        for a, b in zip(so, sr):
            if not _probe.same_bytes(a, b):
                self.add(
                    Cause.TRAINING_STATE,
                    "error",
                    a.path,
                    np.asarray(a).tolist(),
                    np.asarray(b).tolist(),
                    f"the random state {a.path!r} (e.g. Dropout's masks) was not restored, so the next "
                    "training step draws different masks; .keras files and tf.train.Checkpoint drop it, "
                    "save with faithful_restore.save_bundle.",
                )
        if so:
            self.checks.append(f"{len(so)} random seed state(s)")

    def unused_seed_states(self) -> None:
        """Seed-state findings become info when the next training step was identical anyway.

        A generator no step draws from (a GRU with ``dropout=0``) cannot change training; the
        step, run from both models' own seed states, is the evidence.
        """
        if not self.step_identical:
            return
        seeds = {v.path for v in _random_state.seed_variables(self.o.model)}
        self.findings = [
            dataclasses.replace(
                f,
                severity="info",
                message=f"the random state {f.path!r} differs, but the next training step was identical: no "
                "step draws from it (e.g. a dropout rate of 0), so it cannot change training.",
            )
            if f.cause is Cause.TRAINING_STATE and f.severity == "error" and f.path in seeds
            else f
            for f in self.findings
        ]

    def stateful_rnns(self) -> None:
        """Keras saves no RNN hidden state: name it when the original carries one."""
        for path, layer in _architecture.iter_layers(self.o.model):
            states = _variables.rnn_states(layer)
            if any(np.any(np.asarray(_variables.read(s))) for s in states):
                self.add(
                    Cause.TRAINING_STATE,
                    "warning",
                    path,
                    "hidden state carried over",
                    "zero state",
                    f"stateful {type(layer).__name__} {path!r} holds a hidden state from earlier batches, which "
                    "Keras never saves: the restored model starts its next sequence from zeros. Call "
                    "reset_states() at sequence boundaries, or save the state yourself with "
                    "save_bundle(state={...: tf.Variable(...)}). Outputs are compared from the zero state.",
                )

    def compiled_loss(self) -> None:
        """The loss a next training step follows: the compiled ``loss`` and ``loss_weights``."""
        configs = []
        for model in (self.o.model, self.r.model):
            try:
                config = model.get_compile_config() if getattr(model, "compiled", False) else None
            except Exception:  # noqa: BLE001 - a compile config Keras cannot serialize is not compared
                config = None
            configs.append(config)
        co, cr = configs
        if not isinstance(co, dict) or not isinstance(cr, dict):
            return
        keys = [
            k
            for k in ("loss", "loss_weights")
            if _architecture.jsonable(co.get(k)) != _architecture.jsonable(cr.get(k))
        ]
        if keys:
            # A warning until the next training step shows whether the two losses differ in effect
            # ("mse" and {"out": "mse"} are one objective): see settle_compiled_loss.
            self.add(
                Cause.ARCHITECTURE,
                "warning",
                "compile." + keys[0],
                {k: _architecture.jsonable(co.get(k)) for k in keys},
                {k: _architecture.jsonable(cr.get(k)) for k in keys},
                f"the restored model is compiled with another {' and '.join(keys)} than the original; its "
                "next training step may follow another objective. Compile it as the original was (load the "
                "bundle with compile=True).",
            )
        self.checks.append("compiled loss")

    def settle_compiled_loss(self) -> None:
        """After the next-step check: a compile difference that changed the step is the error that
        explains it; one that did not is info (the two losses are one objective)."""
        compiled = [f for f in self.findings if f.path.startswith("compile.")]
        if not compiled or not self.step_used_compiled_loss:
            return  # no step, or both sides stepped with the caller's loss_fn: it cannot tell
        step = [f for f in self.findings if f.path == "training_step"]
        changed = any(f.severity == "error" for f in step)
        if not changed and not self.step_identical:
            return  # the step differs, explained by another error, or within tolerance only
        settled = []
        for f in self.findings:
            if f in compiled:
                f = dataclasses.replace(
                    f,
                    severity="error" if changed else "info",
                    message=f.message
                    + (
                        " The next training step differs accordingly."
                        if changed
                        else " The next training step was identical: the two losses are one objective."
                    ),
                )
            elif changed and f in step:
                f = dataclasses.replace(
                    f,
                    severity="info",
                    message=f"the next training step differs ({f.found}), as expected from the compiled loss.",
                )
            settled.append(f)
        self.findings = settled

    # ------------------------------------------------------------------ optimizer
    def optimizer(self) -> None:
        oo, orr = self.o.optimizer, self.r.optimizer
        if oo is None:
            return
        if orr is None:
            self.add(
                Cause.OPTIMIZER_STATE,
                "error",
                "optimizer",
                type(oo).__name__,
                None,
                "the restored model has no optimizer, so training resumes from scratch; restore with "
                "load_bundle (which restores the optimizer) or compile before loading.",
            )
            return
        if type(oo) is not type(orr):
            self.add(
                Cause.OPTIMIZER_STATE,
                "error",
                "optimizer.class",
                type(oo).__name__,
                type(orr).__name__,
                "the restored optimizer is of another class; compile with the saved optimizer.",
            )
            return
        co = {k: v for k, v in oo.get_config().items() if k != "name"}
        cr = {k: v for k, v in orr.get_config().items() if k != "name"}
        keys = sorted(
            k for k in set(co) | set(cr) if _architecture.jsonable(co.get(k)) != _architecture.jsonable(cr.get(k))
        )
        if keys:
            self.add(
                Cause.OPTIMIZER_STATE,
                "error",
                "optimizer.config",
                {k: co.get(k) for k in keys},
                {k: cr.get(k) for k in keys},
                "the optimizer's configuration differs in " + ", ".join(keys) + "; compile with the saved settings.",
            )
        it_o, it_r = int(np.asarray(oo.iterations)), int(np.asarray(orr.iterations))
        if it_o != it_r:
            self.add(
                Cause.OPTIMIZER_STATE,
                "error",
                "optimizer.iterations",
                it_o,
                it_r,
                f"the optimizer's step counter is {it_r}, the original's {it_o}: its state was not restored "
                "(a weights-only load); learning-rate schedules and Adam's bias correction restart. Use "
                "save_bundle/load_bundle.",
            )
        vo, vr = list(oo.variables), list(orr.variables)
        if oo.built and not orr.built or len(vo) > len(vr):
            self.add(
                Cause.OPTIMIZER_STATE,
                "error",
                "optimizer.variables",
                len(vo),
                len(vr),
                (
                    f"the restored optimizer has {len(vr)} variables, the original {len(vo)}: its slots "
                    "(e.g. Adam's moments) are missing; restore with load_bundle."
                    if len(vo) > len(vr)
                    else "the restored optimizer was never built, the original was: it has not taken the "
                    "original's state; restore with load_bundle."
                ),
            )
            return
        differing = []
        for a, b in zip(vo, vr):
            if not _probe.same_bytes(a, b):
                differing.append((a, b))
        for a, b in differing[:_MAX_VARIABLE_FINDINGS]:
            absdiff, _ = _array_diff(np.asarray(a), np.asarray(b))
            self.add(
                Cause.OPTIMIZER_STATE,
                "error",
                a.path,
                _summary(a),
                _summary(b),
                f"optimizer variable {a.path!r} differs (max abs diff {absdiff:.3g}); continued training "
                "will not follow the original run. Restore the optimizer with load_bundle.",
            )
        if len(differing) > _MAX_VARIABLE_FINDINGS:
            self.add(
                Cause.OPTIMIZER_STATE,
                "error",
                "optimizer.variables",
                None,
                len(differing),
                f"{len(differing) - _MAX_VARIABLE_FINDINGS} more optimizer variables differ (not listed).",
            )
        self.checks.append(f"optimizer ({len(vo)} variables, iterations {it_o})")

    # ------------------------------------------------------------------ training state
    def training_state(self) -> None:
        so, sr = self.o.state, self.r.state
        if not so:
            return
        for name in sorted(so):
            if name not in sr:
                self.add(
                    Cause.TRAINING_STATE,
                    "error",
                    f"state.{name}",
                    name,
                    None,
                    f"training state {name!r} was not restored; pass it to load_bundle(state=...).",
                )
                continue
            va, vb = _trackable_values(so[name]), _trackable_values(sr[name])
            if va is None or vb is None:
                self.add(
                    Cause.TRAINING_STATE,
                    "info",
                    f"state.{name}",
                    None,
                    None,
                    f"training state {name!r} ({type(so[name]).__name__}) cannot be compared by value.",
                )
                continue
            if len(va) != len(vb) or not all(_probe.same_bytes(a, b) for a, b in zip(va, vb)):
                self.add(
                    Cause.TRAINING_STATE,
                    "error",
                    f"state.{name}",
                    [_summary(a) for a in va],
                    [_summary(b) for b in vb],
                    f"training state {name!r} differs from the original's (a step counter or random "
                    "generator restarted); restore it with load_bundle(state=...).",
                )
        self.checks.append(f"{len(so)} training state objects")

    # ------------------------------------------------------------------ replicas
    def replicas(self) -> None:
        for side in (self.o, self.r):
            diverged = []
            for v in side.model.variables:
                parts = _variables.components(v)
                if len(parts) > 1:
                    first = np.asarray(parts[0])
                    worst = max(_array_diff(first, np.asarray(p))[0] for p in parts[1:])
                    if worst > 0:
                        diverged.append((v, len(parts), worst))
            for v, n, worst in diverged:
                self.add(
                    Cause.REPLICA_DIVERGENCE,
                    "error",
                    v.path,
                    "identical values on every replica",
                    f"{n} replicas differ by up to {worst:.3g}",
                    f"{side.label} variable {v.path!r} holds different values on its {n} replicas "
                    "(BatchNormalization keeps per-replica moving statistics unless synchronized=True); "
                    "a save keeps replica 0's values, so the restored model predicts differently from the "
                    "distributed original. Use BatchNormalization(synchronized=True).",
                )

    # ------------------------------------------------------------------ computed results
    def _tolerance(self, noise: float, scale: float) -> float:
        return self.atol + self.rtol * scale + _NOISE_FACTOR * noise

    def outputs(self, inputs: Any) -> None:
        model_o, model_r = self.o.model, self.r.model
        distributed = _training_step.is_distributed(model_o)
        if self.original_outputs is not None and not distributed:
            first, noise = self.original_outputs
        else:
            try:
                if distributed:
                    with _random_state.preserved(model_o):
                        first = [np.asarray(a) for a in _flatten(model_o.predict(inputs, verbose=0))]
                        second = [np.asarray(a) for a in _flatten(model_o.predict(inputs, verbose=0))]
                else:
                    first = _probe.run(model_o, inputs)
                    second = _probe.run(model_o, inputs)
            except Exception as e:  # noqa: BLE001 - a model that cannot take the probe is reported
                raise BundleError(
                    f"the original model cannot be called on the probe inputs: {type(e).__name__}: "
                    f"{str(e).splitlines()[0] if str(e) else ''}; pass sample_inputs it accepts."
                ) from e
            noise = max((d for d, _ in _probe.max_differences(first, second)), default=0.0)
        explained = self.error_causes() & _EXPLAINS_OUTPUTS
        try:
            found = _probe.run(model_r, inputs)
        except Exception as e:  # noqa: BLE001
            self.add(
                Cause.OUTPUTS if not explained else sorted(explained, key=list(Cause).index)[0],
                "error" if not explained else "info",
                "outputs",
                "callable on the probe inputs",
                f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
                "the restored model cannot be called on inputs the original accepts.",
            )
            return
        diffs = _probe.max_differences(first, found)
        worst = 0.0
        bad = []
        for i, ((absdiff, _), expected) in enumerate(zip(diffs, first)):
            scale = (
                float(np.max(np.abs(expected.astype(np.float64)), initial=0.0)) if expected.dtype.kind in "fc" else 0.0
            )
            if absdiff > self._tolerance(noise, scale):
                bad.append((i, absdiff))
            worst = max(worst, absdiff)
        self.checks.append(f"inference outputs on {len(np.asarray(_flatten(inputs)[0]))} probe inputs")
        if not bad:
            return
        text = ", ".join(f"output {i}: max abs diff {d:.3g}" for i, d in bad)
        if explained:
            self.add(
                Cause.OUTPUTS,
                "info",
                "outputs",
                "same outputs",
                text,
                f"inference outputs differ ({text}), as expected from the findings above.",
            )
        else:
            self.add(
                Cause.OUTPUTS,
                "error",
                "outputs",
                f"outputs within {self._tolerance(noise, 0.0):.3g} (noise floor {noise:.3g})",
                text,
                f"inference outputs differ ({text}) although weights, architecture and preprocessing "
                "match; check custom layers' call() for state outside their weights, and the mixed-"
                "precision policy.",
            )

    def mode(self, inputs: Any) -> None:
        """predict() must agree with __call__(training=False): a layer stuck in training mode does not."""
        if _training_step.is_distributed(self.r.model):
            return
        try:
            # The random state advances between the runs (as in real use) and is put back after.
            with _random_state.preserved(self.r.model):
                called = _probe.run(self.r.model, inputs, keep_random_state=False)
                # A probe starts stateful RNNs from the zero state; so must predict(), or the
                # hidden state the first call left would look like a training-mode layer.
                _variables.reset_stateful_rnns(self.r.model)
                predicted = [np.asarray(a) for a in _flatten(self.r.model.predict(inputs, verbose=0))]
                again = _probe.run(self.r.model, inputs, keep_random_state=False)
        except Exception:  # noqa: BLE001 - outputs() already reported an uncallable model
            return
        noise = max((d for d, _ in _probe.max_differences(called, again)), default=0.0)
        worst = max((d for d, _ in _probe.max_differences(called, predicted)), default=0.0)
        scale = max(
            (float(np.max(np.abs(c.astype(np.float64)), initial=0.0)) for c in called if c.dtype.kind in "fc"),
            default=0.0,
        )
        # Kernel rounding (graph vs eager, nondeterministic reductions) stays far below 0.1% of the
        # outputs' magnitude; a layer running in training mode (random masks) does not.
        limit = self.atol + max(self.rtol, _MODE_RTOL) * max(scale, 1e-12)
        if noise > limit or worst > limit:
            self.add(
                Cause.REGULARIZATION,
                "error",
                "mode",
                "predict() == model(x, training=False), and repeatable",
                f"max abs diff {max(noise, worst):.3g} (call vs call {noise:.3g}, call vs predict {worst:.3g})",
                "the restored model's inference is not repeatable or predict() and model(x, training=False) "
                "disagree: a layer runs in training mode at inference (e.g. Dropout called with "
                "training=True in call()). Pass training through to sublayers.",
            )
        self.checks.append("predict() vs model(x, training=False)")

    def training_step(self, inputs: Any, targets: Any, loss_fn: Callable[..., Any] | None) -> None:
        model_o, model_r = self.o.model, self.r.model
        if _training_step.is_distributed(model_o) or _training_step.is_distributed(model_r):
            self.add(
                Cause.TRAINING_STATE,
                "info",
                "training_step",
                None,
                None,
                "the next training step is not compared for models under tf.distribute; compare after "
                "loading into a single-device model.",
            )
            return
        loss = _training_step.loss_for(model_o, loss_fn)
        if loss is None or self.o.optimizer is None:
            self.add(
                Cause.TRAINING_STATE,
                "info",
                "training_step",
                None,
                None,
                "the next training step was not compared: the original has no compiled loss or no "
                "optimizer; pass loss_fn= (and a Bundle with its optimizer) to include it.",
            )
            return
        opt_r = self.r.optimizer
        if opt_r is None:  # the restored side continues with what a user would get: a fresh optimizer
            opt_r = self.o.optimizer.__class__.from_config(self.o.optimizer.get_config())
        loss_r = _training_step.loss_for(model_r, loss_fn) or loss
        try:
            if targets is None:
                with _random_state.preserved(model_o):
                    targets = _training_step.targets_like(model_o, model_o(inputs, training=False))
            (first,) = _training_step.next_steps(model_o, self.o.optimizer, inputs, targets, loss)
            (found,) = _training_step.next_steps(
                model_r, opt_r, inputs, targets, loss_r, in_place=self.restored_disposable
            )
            # The step's noise floor (a second run of the original) only matters when they differ.
            second = first
            if len(first) == len(found) and not all(map(_probe.same_bytes, first, found)):
                (second,) = _training_step.next_steps(model_o, self.o.optimizer, inputs, targets, loss)
        except Exception as e:  # noqa: BLE001 - report, do not crash the comparison
            self.add(
                Cause.TRAINING_STATE,
                "info",
                "training_step",
                None,
                f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
                "the next training step could not be run on these inputs; pass sample_targets= or loss_fn=.",
            )
            return
        self.checks.append("next training step")
        noise = max((d for d, _ in _probe.max_differences(first, second)), default=0.0)
        if len(first) != len(found):
            return  # an architecture finding explains it
        worst = max((d for d, _ in _probe.max_differences(first, found)), default=0.0)
        self.step_identical = worst <= _NOISE_FACTOR * noise
        self.step_used_compiled_loss = loss_fn is None
        if worst <= self._tolerance(noise, 0.0):
            return
        explained = self.error_causes() & _EXPLAINS_STEP
        if explained:
            self.add(
                Cause.TRAINING_STATE,
                "info",
                "training_step",
                "same updated weights",
                f"max abs diff {worst:.3g}",
                f"the next training step updates weights differently (max abs diff {worst:.3g}), as "
                "expected from the findings above.",
            )
        else:
            self.add(
                Cause.TRAINING_STATE,
                "error",
                "training_step",
                f"updated weights within {self._tolerance(noise, 0.0):.3g}",
                f"max abs diff {worst:.3g}",
                f"the next training step differs (max abs diff {worst:.3g}) although weights, optimizer and "
                "random states match: some training state outside the model was not restored (a global "
                "RNG, a data pipeline); save it with save_bundle(state=...).",
            )


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


def _inputs_for(o: _Side, r: _Side, sample_inputs: Any) -> Any:
    """The caller's batch, else a bundle's stored probe inputs, else a synthesized batch."""
    from faithful_restore import _fileio

    if sample_inputs is not None:
        structure, names, arrays = _probe.normalize_inputs(sample_inputs)
        return _probe.restructure(structure, names, arrays)
    for side in (r, o):
        manifest, root = side.manifest, side.root
        if manifest is None or manifest.probe is None or root is None:
            continue

        def read(rel: str, manifest: Manifest = manifest, root: str = root) -> bytes:
            return _fileio.read_bytes(_fileio.join(root, *rel.split("/")), manifest.file_map[rel].size)

        try:
            probe = _probe.decode(manifest.probe, read)
        except (OSError, BundleError, KeyError):
            continue  # fall back to a synthesized batch
        return _probe.restructure(probe.structure, probe.names, probe.inputs)
    return synthesize(o.model, _signature.of_model(o.model))


def compare(
    original: Any,
    restored: Any,
    sample_inputs: Any = None,
    *,
    rtol: float = 0.0,
    atol: float = 0.0,
    check_training_step: bool = True,
    sample_targets: Any = None,
    loss_fn: Callable[..., Any] | None = None,
    custom_objects: Any = None,
    safe_mode: bool = True,
) -> Report:
    """Compares an original and a restored model and names the cause of every difference.

    Args:
        original: the model as saved: a keras.Model, a Bundle (brings optimizer and state), or a
            bundle path.
        restored: the model after restoring, of the same kinds.
        sample_inputs: a batch for computed checks; defaults to the bundle's probe, else a
            seeded batch synthesized from the input signature.
        rtol: relative tolerance for computed results (outputs, next step), beyond the noise floor.
        atol: absolute tolerance for computed results, beyond the noise floor.
        check_training_step: also compare one training step on copies (the models are unchanged).
        sample_targets: targets for that step; synthesized from the outputs when None.
        loss_fn: ``loss_fn(y_true, y_pred)`` for models without a compiled loss.
        custom_objects: custom classes by name, for sides given as bundle paths.
        safe_mode: refuse bundle paths whose model stores Python code (e.g. a Lambda); pass False
            only for bundles you trust.

    Returns:
        A :class:`Report`; ``report.ok`` is False when any finding is an error.

    Raises:
        BundleError: arguments of the wrong kind, or a bundle path that cannot be read.
    """
    return compare_sides(
        original,
        restored,
        sample_inputs,
        rtol,
        atol,
        check_training_step,
        sample_targets,
        loss_fn,
        custom_objects=custom_objects,
        safe_mode=safe_mode,
    )


def compare_sides(
    original: Any,
    restored: Any,
    sample_inputs: Any,
    rtol: float,
    atol: float,
    check_training_step: bool,
    sample_targets: Any,
    loss_fn: Callable[..., Any] | None,
    restored_disposable: bool = False,
    original_outputs: tuple[list[np.ndarray], float] | None = None,
    custom_objects: Any = None,
    safe_mode: bool = True,
) -> Report:
    """:func:`compare`; with ``restored_disposable`` the restored model may be changed (its next
    training step runs in place instead of on a copy). ``original_outputs`` (the original's
    inference outputs on ``sample_inputs`` and their run-to-run noise floor, as a probe records
    them) saves computing them again."""
    for name, value in (("rtol", rtol), ("atol", atol)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= 0:
            raise BundleError(f"{name} must be a non-negative number, found {value!r}.")
    try:
        o = _side(original, "original", custom_objects, safe_mode)
    except IntegrityError as e:
        return integrity_report(str(original), e, "original bundle")
    try:
        r = _side(restored, "restored", custom_objects, safe_mode)
    except IntegrityError as e:
        return integrity_report(str(restored), e, "restored bundle")
    cmp = _Comparison(o, r, float(rtol), float(atol), restored_disposable, original_outputs)
    cmp.environment()
    cmp.signature()
    cmp.layers()
    cmp.weights()
    cmp.optimizer()
    cmp.compiled_loss()
    cmp.training_state()
    cmp.stateful_rnns()
    cmp.replicas()
    inputs = _inputs_for(o, r, sample_inputs)
    cmp.outputs(inputs)
    cmp.mode(inputs)
    if check_training_step:
        cmp.training_step(inputs, sample_targets, loss_fn)
        cmp.unused_seed_states()
        cmp.settle_compiled_loss()
    return Report.build(cmp.findings, cmp.checks, f"{o.model.name} vs restored {r.model.name}")
