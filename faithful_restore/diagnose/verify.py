"""verify_bundle() and assert_roundtrip(): the one-call checks users put in scripts and tests."""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from faithful_restore import _deprecated
from faithful_restore.bundle.load import load_bundle
from faithful_restore.bundle.restore import read_probe, restore
from faithful_restore.bundle.save import save_bundle
from faithful_restore.bundle.types import Bundle, LoadOptions
from faithful_restore.capture import architecture as _architecture
from faithful_restore.capture import distribution as _distribution
from faithful_restore.capture import environment as _environment
from faithful_restore.capture import preprocessing as _preprocessing
from faithful_restore.capture import probe as _probe
from faithful_restore.capture import random_state as _random_state
from faithful_restore.capture import signature as _signature
from faithful_restore.diagnose.compare import compare_sides
from faithful_restore.diagnose.comparison import skew_findings
from faithful_restore.errors import ArgumentError, IntegrityError, RoundtripError
from faithful_restore.findings import Cause, Finding, Report, integrity_report
from faithful_restore.format import commit as _commit
from faithful_restore.format import durable as _durable
from faithful_restore.format import paths as _paths
from faithful_restore.format.integrity import consistent_view, read_manifest, retrying, verified_copy
from faithful_restore.runtime import keras_internals as _keras_internals


def _consistency(bundle: Bundle, findings: list[Finding]) -> None:
    """Does the model Keras rebuilt match what the manifest recorded at save time?"""
    manifest = bundle.manifest
    assert manifest is not None
    model = bundle.model
    saved_layers = _architecture.Layers(manifest.model.get("layers", []))
    now_layers = _architecture.Layers(_architecture.describe(model)["layers"])
    built = {path: bool(getattr(layer, "built", True)) for path, layer in _keras_internals.iter_layers(model)}
    _layer_consistency(saved_layers, now_layers, built, findings)
    if _has_inputs(model):
        now_sig = _signature.of_model(model)
        saved_inputs = [(t.shape, t.dtype) for t in manifest.signature.inputs]
        now_inputs = [(t.shape, t.dtype) for t in now_sig.inputs]
        if saved_inputs and saved_inputs != now_inputs:
            findings.append(
                Finding(
                    Cause.INPUT_SIGNATURE,
                    "error",
                    "inputs",
                    [list(s or []) + [d] for s, d in saved_inputs],
                    [list(s or []) + [d] for s, d in now_inputs],
                    "the rebuilt model's inputs differ from the recorded signature.",
                )
            )
    record = manifest.optimizer
    if record is not None:
        found = int(np.asarray(bundle.optimizer.iterations)) if bundle.optimizer is not None else None
        if found != record["iterations"]:
            findings.append(
                Finding(
                    Cause.OPTIMIZER_STATE,
                    "error",
                    "optimizer.iterations",
                    record["iterations"],
                    found,
                    "the restored optimizer's step counter differs from the saved one.",
                )
            )
    saved_pre = saved_layers.keyed(manifest.preprocessing.get("layers", []))
    now_pre = now_layers.keyed(_preprocessing.layer_states(model))
    for key in saved_layers.keys:
        if key not in now_layers.by_key or (key not in saved_pre and key not in now_pre):
            continue
        saved_state = saved_pre.get(key, {}).get("state")
        now_state = now_pre.get(key, {}).get("state")
        if _architecture.jsonable(saved_state) != _architecture.jsonable(now_state):
            path = now_layers.by_key[key]["path"]
            findings.append(
                Finding(
                    Cause.PREPROCESSING,
                    "error",
                    path,
                    saved_state,
                    now_state,
                    f"preprocessing layer {path!r} was restored with other state than was saved.",
                )
            )
    saved_reg = saved_layers.keyed(manifest.regularization)
    now_reg = now_layers.keyed(_architecture.regularization(model))
    differing = [
        key
        for key in saved_layers.keys
        if key in now_layers.by_key
        # A config that cannot be read on one side (Keras never serializes such a sublayer) has
        # no settings to compare; the probe and the weights still cover the layer.
        and _architecture.configs_comparable(
            saved_layers.by_key[key].get("config_sha256"), now_layers.by_key[key]["config_sha256"]
        )
        and _architecture.jsonable(saved_reg.get(key, {}).get("settings"))
        != _architecture.jsonable(now_reg.get(key, {}).get("settings"))
    ]
    if differing:
        paths = [now_layers.by_key[k]["path"] for k in differing]
        findings.append(
            Finding(
                Cause.REGULARIZATION,
                "error",
                paths[0] if len(paths) == 1 else "regularization",
                {p: saved_reg.get(k, {}).get("settings") for p, k in zip(paths, differing)},
                {p: now_reg.get(k, {}).get("settings") for p, k in zip(paths, differing)},
                f"the rebuilt model's dropout/regularizer/normalization settings differ from the saved ones "
                f"in {', '.join(repr(p) for p in paths)}.",
            )
        )
    if _random_state.capture(model) and [r["value"] for r in _random_state.capture(model)] != [
        r["value"] for r in manifest.random_state
    ]:
        findings.append(
            Finding(
                Cause.TRAINING_STATE,
                "error",
                "random_state",
                [r["value"] for r in manifest.random_state],
                [r["value"] for r in _random_state.capture(model)],
                "the layers' random seed states were not restored as saved.",
            )
        )


def _layer_consistency(
    saved: _architecture.Layers, now: _architecture.Layers, built: dict[str, bool], findings: list[Finding]
) -> None:
    """Layers matched by stable key: same class and (where both are available) the same config."""
    for key in saved.keys:
        before, after = saved.by_key[key], now.by_key.get(key)
        if after is None:
            continue
        same_class = before.get("class") == after["class"]
        comparable = _architecture.configs_comparable(before.get("config_sha256"), after["config_sha256"])
        if not same_class or (comparable and before.get("config_sha256") != after["config_sha256"]):
            findings.append(
                Finding(
                    Cause.ARCHITECTURE,
                    "error",
                    after["path"],
                    {"class": before.get("class"), "config_sha256": before.get("config_sha256")},
                    {"class": after["class"], "config_sha256": after["config_sha256"]},
                    f"layer {after['path']!r} was rebuilt with a different class or config than was "
                    "saved; this Keras version reads the config differently. Load with the saved version.",
                )
            )
    lazy, missing, extra = saved.unmatched(now, built)
    for entry in lazy:
        findings.append(
            Finding(
                Cause.ARCHITECTURE,
                "info",
                entry["path"],
                "built",
                "not built",
                f"layer {entry['path']!r} ({entry['class'].rsplit('.', 1)[-1]}) holds no weights and is "
                "built on first call by its parent; it is not built yet in the restored model, which changes nothing "
                "it computes.",
            )
        )
    if missing or extra:
        findings.append(
            Finding(
                Cause.ARCHITECTURE,
                "error",
                (missing or extra)[0]["path"],
                [f"{e['path']} ({e['class'].rsplit('.', 1)[-1]})" for e in missing],
                [f"{e['path']} ({e['class'].rsplit('.', 1)[-1]})" for e in extra],
                f"Keras rebuilt {len(now.keys)} layers, the manifest records {len(saved.keys)}"
                + (f"; missing: {', '.join(e['path'] for e in missing)}" if missing else "")
                + (f"; extra: {', '.join(e['path'] for e in extra)}" if extra else "")
                + ". This Keras version deserializes the model differently; load with the saved Keras version.",
            )
        )


def _has_inputs(model: Any) -> bool:
    try:
        return bool(model.inputs)
    except (AttributeError, ValueError):
        return False


def verify_bundle(
    path: str | os.PathLike[str], *, custom_objects: Any = None, safe_mode: bool = True, verbose: bool | str = "auto"
) -> Report:
    """Checks a bundle: file integrity, environment skew, a full restore, and the stored probe.

    Findings are reported, never raised.

    Args:
        path: the bundle directory or URL.
        custom_objects: custom classes by name, as for load_bundle.
        safe_mode: refuse bundles that store Python code.
        verbose: show progress while hashing large bundles ("auto": when stderr is a terminal).

    Returns:
        A :class:`Report`.

    Raises:
        BundleError: the bundle cannot be read at all (no manifest, malformed manifest, refused
            content, a model Keras cannot rebuild).
    """
    root = _paths.as_path(path)
    options = LoadOptions(custom_objects=custom_objects, safe_mode=safe_mode, verbose=verbose)
    return retrying(root, lambda: (_verify_once(root, options), True), "verified")


def _verify_once(root: str, options: LoadOptions) -> Report:
    checks = ["file integrity"]
    # A pinned snapshot: a writer replacing the bundle meanwhile cannot produce a false finding.
    with consistent_view(root) as view:
        try:
            manifest = read_manifest(view, label=root)
        except IntegrityError as e:
            return integrity_report(root, e)
        findings: list[Finding] = []
        try:
            with verified_copy(view, manifest, label=root, verbose=options.verbose) as files_root:
                diffs = _environment.differences(manifest.environment, _environment.current())
                findings.extend(skew_findings(diffs))
                checks.append("environment")
                bundle = restore(root, files_root, manifest, options)
                checks.append("restore (model, optimizer, random state)")
                _consistency(bundle, findings)
                for entry in (manifest.distribution or {}).get("replica_divergence", []):
                    findings.append(_distribution.divergence_finding(entry, "warning", "when saved, variable"))
                checks.append("architecture, preprocessing and regularization vs manifest")
                if manifest.probe is not None:
                    probe = read_probe(files_root, manifest)
                    problems = _probe.check(bundle.model, manifest.probe, probe, same_environment=not diffs)
                    batch = probe.inputs[0].shape[0] if probe.inputs and probe.inputs[0].ndim else 0
                    checks.append(f"inference outputs on {batch} probe inputs")
                    explained = [f for f in findings if f.severity == "error"]
                    for problem in problems:
                        findings.append(
                            Finding(
                                Cause.OUTPUTS,
                                "info" if explained else "error",
                                "probe",
                                "the saved outputs",
                                problem,
                                f"the restored model's outputs moved: {problem}"
                                + ("; the environment differs (see the version skew findings)." if diffs else "."),
                            )
                        )
                else:
                    findings.append(
                        Finding(
                            Cause.OUTPUTS,
                            "info",
                            "probe",
                            None,
                            None,
                            "the bundle has no probe, so outputs were not re-checked; save with sample_inputs=.",
                        )
                    )
        except IntegrityError as e:
            return integrity_report(root, e)
        return Report.build(findings, checks, root)


def _fresh_like(obj: Any) -> Any:
    """An object of the same kind to restore saved state into, or None when that is not possible."""
    import tensorflow as tf

    if isinstance(obj, tf.random.Generator):
        return tf.random.Generator.from_seed(0, alg=obj.algorithm)
    if isinstance(obj, tf.Variable):
        return tf.Variable(tf.zeros(obj.shape, obj.dtype), dtype=obj.dtype)
    return None


@contextlib.contextmanager
def _scratch_path(path: str | os.PathLike[str] | None) -> Iterator[str]:
    if path is not None:
        target = _paths.as_path(path)
        if _paths.exists(target):
            # The bundle is removed afterwards, so only a path this call creates may be used.
            raise ArgumentError(
                f"{target!r} already exists; assert_roundtrip writes a temporary bundle there and removes it "
                "afterwards, so pass a path that does not exist yet."
            )
        try:
            yield target
        finally:
            _commit.remove_tree(target)
        return
    with tempfile.TemporaryDirectory(prefix="faithful_restore-roundtrip-") as tmp:
        yield os.path.join(tmp, f"bundle-{uuid.uuid4().hex[:8]}")


def assert_roundtrip(
    model: Any,
    *args: Any,
    sample_inputs: Any = None,
    rtol: float = 0.0,
    atol: float = 0.0,
    check_training_step: bool = True,
    path: str | os.PathLike[str] | None = None,
    sample_targets: Any = None,
    loss_fn: Callable[..., Any] | None = None,
    custom_objects: Any = None,
    safe_mode: bool = True,
    **save_kwargs: Any,
) -> Report:
    """Saves ``model`` to a temporary bundle, loads it and asserts the restored model is the same.

    Args:
        model: the model (with its optimizer) to check.
        sample_inputs: a batch for the computed checks; synthesized when None.
        rtol: relative tolerance for computed results beyond the noise floor.
        atol: absolute tolerance for computed results beyond the noise floor.
        check_training_step: also compare the next training step.
        path: where to write the temporary bundle (a temp directory by default; ``ram://``
            allowed); it is removed afterwards.
        sample_targets: targets for the training step; synthesized when None.
        loss_fn: ``loss_fn(y_true, y_pred)`` for models without a compiled loss.
        custom_objects: passed to load_bundle.
        safe_mode: passed to load_bundle; False lets a model you trust with a Lambda layer be checked.
        **save_kwargs: passed to save_bundle (optimizer, state, preprocessing, metadata).
        *args: deprecated: ``sample_inputs`` by position.

    Returns:
        The :class:`Report` when the round trip is faithful.

    Raises:
        RoundtripError: with the readable report as message and ``.report``, when any finding is
            an error.
        BundleError: the model cannot be saved (unbuilt, unserializable).
    """
    sample_inputs = _deprecated.sample_inputs("assert_roundtrip", args, sample_inputs)
    if "overwrite" in save_kwargs:
        raise ArgumentError("assert_roundtrip writes its own temporary bundle; do not pass overwrite.")
    state = save_kwargs.get("state") or {}
    fresh = {name: _fresh_like(obj) for name, obj in dict(state).items()}
    fresh = {name: obj for name, obj in fresh.items() if obj is not None}
    with _scratch_path(path) as target:
        with _durable.scratch_writes():  # a temporary bundle: no fsync (see scratch_writes)
            manifest = save_bundle(model, target, sample_inputs=sample_inputs, **save_kwargs)
        restored = load_bundle(
            target, custom_objects=custom_objects, safe_mode=safe_mode, check_probe=False, state=fresh
        )
        recorded = None
        if manifest.probe is not None and sample_inputs is not None:
            # save_bundle ran the original on these inputs twice for its probe, and load_bundle has
            # just checked the probe files' digests: compare against those outputs.
            probe = read_probe(target, manifest)
            recorded = (probe.outputs, probe.noise_floor)
        original = Bundle(
            model,
            optimizer=save_kwargs.get("optimizer") or getattr(model, "optimizer", None),
            state={name: state[name] for name in fresh},
            preprocessing=dict(
                restored.preprocessing and _preprocessing.as_mapping(save_kwargs.get("preprocessing")) or {}
            ),
        )
        # The restored bundle is ours and discarded afterwards, so its training step runs in place.
        report = compare_sides(
            original, restored, sample_inputs, rtol, atol, check_training_step, sample_targets, loss_fn, True, recorded
        )
    if not report.ok:
        raise RoundtripError(report.to_text(), report)
    return report
