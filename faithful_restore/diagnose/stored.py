"""compare(): every difference between an original and a restored model, with its likely cause.

Stored state (weights, optimizer slots, preprocessing state, random state) compares bitwise.
Computed results (outputs, the next training step) compare against a noise floor measured by
computing the original twice, plus the caller's ``atol``/``rtol``.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any

import numpy as np

from faithful_restore.capture import architecture as _architecture
from faithful_restore.capture import distribution as _distribution
from faithful_restore.capture import environment as _environment
from faithful_restore.capture import preprocessing as _preprocessing
from faithful_restore.capture import random_state as _random_state
from faithful_restore.capture import signature as _signature
from faithful_restore.diagnose.comparison import (
    _BN_KEYS,
    _MAX_VARIABLE_FINDINGS,
    Comparison,
    _array_diff,
    _brief,
    _is_preprocessing,
    _layer_weights,
    _summary,
    _trackable_values,
    skew_findings,
)
from faithful_restore.findings import Cause
from faithful_restore.runtime import keras_internals as _keras_internals
from faithful_restore.runtime import variables as _variables


class StoredChecks(Comparison):
    """Checks of what a bundle stores: compared bitwise, no model is run."""

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
        lo = _keras_internals.iter_layers(self.o.model)
        lr = _keras_internals.iter_layers(self.r.model)
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
                if _variables.same_bytes(a, b):
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
                same = _variables.same_bytes(a, b) if isinstance(a, np.ndarray) or isinstance(b, np.ndarray) else a == b
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
            if not _variables.same_bytes(a, b):
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
        for path, layer in _keras_internals.iter_layers(self.o.model):
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
            if not _variables.same_bytes(a, b):
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
            if len(va) != len(vb) or not all(_variables.same_bytes(a, b) for a, b in zip(va, vb)):
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
            for entry in _distribution.replica_divergence(side.model):
                self.findings.append(_distribution.divergence_finding(entry, "error", f"{side.label} variable"))
