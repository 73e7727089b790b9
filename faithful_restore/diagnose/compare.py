"""compare(): every difference between an original and a restored model, with its likely cause.

Stored state (weights, optimizer slots, preprocessing state, random state) compares bitwise.
Computed results (outputs, the next training step) compare against a noise floor measured by
computing the original twice, plus the caller's ``atol``/``rtol``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from faithful_restore import _deprecated
from faithful_restore.capture import probe as _probe
from faithful_restore.capture import signature as _signature
from faithful_restore.diagnose.comparison import (
    _Side,
    _side,
)
from faithful_restore.diagnose.computed import ComputedChecks
from faithful_restore.diagnose.inputs import synthesize
from faithful_restore.diagnose.stored import StoredChecks
from faithful_restore.errors import ArgumentError, BundleError, IntegrityError
from faithful_restore.findings import Report, integrity_report
from faithful_restore.format.manifest import Manifest


class _Comparison(StoredChecks, ComputedChecks):
    pass


def _inputs_for(o: _Side, r: _Side, sample_inputs: Any) -> Any:
    """The caller's batch, else a bundle's stored probe inputs, else a synthesized batch."""
    from faithful_restore.format import paths as _paths

    if sample_inputs is not None:
        structure, names, arrays = _probe.normalize_inputs(sample_inputs)
        return _probe.restructure(structure, names, arrays)
    for side in (r, o):
        manifest, root = side.manifest, side.root
        if manifest is None or manifest.probe is None or root is None:
            continue

        def read(rel: str, manifest: Manifest = manifest, root: str = root) -> bytes:
            return _paths.read_bytes(_paths.join(root, *rel.split("/")), manifest.file_map[rel].size)

        try:
            probe = _probe.decode(manifest.probe, read)
        except (OSError, BundleError, KeyError):
            continue  # fall back to a synthesized batch
        return _probe.restructure(probe.structure, probe.names, probe.inputs)
    return synthesize(o.model, _signature.of_model(o.model))


def compare(
    original: Any,
    restored: Any,
    *args: Any,
    sample_inputs: Any = None,
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
        *args: deprecated: ``sample_inputs`` by position.

    Returns:
        A :class:`Report`; ``report.ok`` is False when any finding is an error.

    Raises:
        BundleError: arguments of the wrong kind, or a bundle path that cannot be read.
    """
    sample_inputs = _deprecated.sample_inputs("compare", args, sample_inputs)
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
            raise ArgumentError(f"{name} must be a non-negative number, found {value!r}.")
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
