"""compare(): every difference between an original and a restored model, with its likely cause.

Stored state (weights, optimizer slots, preprocessing state, random state) compares bitwise.
Computed results (outputs, the next training step) compare against a noise floor measured by
computing the original twice, plus the caller's ``atol``/``rtol``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from faithful_restore.capture import architecture as _architecture
from faithful_restore.capture import probe as _probe
from faithful_restore.capture import random_state as _random_state
from faithful_restore.diagnose import training_step as _training_step
from faithful_restore.diagnose.comparison import (
    _EXPLAINS_OUTPUTS,
    _EXPLAINS_STEP,
    _MODE_RTOL,
    Comparison,
    _flatten,
)
from faithful_restore.errors import ArgumentError
from faithful_restore.findings import Cause
from faithful_restore.runtime import variables as _variables


class ComputedChecks(Comparison):
    """Checks of what the models compute: outputs, inference mode, the next training step."""

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
                raise ArgumentError(
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
            if len(first) == len(found) and not all(map(_variables.same_bytes, first, found)):
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
        self.step_identical = worst <= _probe.NOISE_FACTOR * noise
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
