"""save_bundle: stage every file locally, hash it (during Keras' write where possible), write the
manifest last and commit atomically. Nothing at the target changes unless the whole save succeeds.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from faithful_restore._version import __version__
from faithful_restore.bundle.checks import check_model, check_state, check_target, json_metadata, resolve_optimizer
from faithful_restore.capture import architecture as _architecture
from faithful_restore.capture import distribution as _distribution
from faithful_restore.capture import environment as _environment
from faithful_restore.capture import optimizer as _optimizer
from faithful_restore.capture import preprocessing as _preprocessing
from faithful_restore.capture import probe as _probe
from faithful_restore.capture import random_state as _random_state
from faithful_restore.capture import safety as _safety
from faithful_restore.capture import signature as _signature
from faithful_restore.errors import (
    ArgumentError,
    ArgumentTypeError,
    BundleError,
    PreprocessingWarning,
)
from faithful_restore.fast import inline_hash as _inline_hash
from faithful_restore.fast import save_views as _save_views
from faithful_restore.format import commit as _commit
from faithful_restore.format import durable as _durable
from faithful_restore.format import hashing as _hashing
from faithful_restore.format import paths as _paths
from faithful_restore.format import progress as _progress
from faithful_restore.format.layout import MODEL_DIR, MODEL_METADATA, OPTIMIZER_FILE, STATE_PREFIX
from faithful_restore.format.manifest import (
    DIGEST,
    MANIFEST,
    FileEntry,
    Manifest,
    digest,
    version_for,
)
from faithful_restore.runtime import keras_format as _keras_format
from faithful_restore.runtime import keras_internals as _keras_internals


def _serialize(model: Any) -> dict[str, Any]:
    """The model's Keras config, exactly what Keras' own saving serializes; else a BundleError.

    Only what ``serialize_keras_object`` walks is serialized: sublayers a layer creates in its
    constructor are rebuilt by that constructor and never serialized by Keras, so their
    ``get_config`` is not called (some raise, and Keras never needs them).
    """
    import keras

    try:
        config = keras.saving.serialize_keras_object(model)
        json.dumps(config)
    except Exception as e:  # noqa: BLE001 - Keras raises many types here
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        where = _unserializable(model)
        raise BundleError(
            f"model {model.name!r} cannot be serialized to a Keras config (Keras' model.save would fail "
            f"too){where}: {type(e).__name__}: {first}. Give every custom layer a get_config() that "
            "returns its constructor arguments as JSON values, and register it with "
            "@keras.saving.register_keras_serializable()."
        ) from e
    _safety.scan(config, safe_mode=False, custom_objects=None, where=f"model {model.name!r}")
    return dict(config)


def _unserializable(model: Any) -> str:
    """`` at layer 'path' (Class)``: the deepest layer on a chain of failing serializations, for the message."""
    import keras

    def fails(layer: Any) -> bool:
        try:
            json.dumps(keras.saving.serialize_keras_object(layer))
        except Exception:  # noqa: BLE001 - only used to name the culprit
            return True
        return False

    path, layer, found = "", model, None
    while True:
        try:
            children = _keras_internals.direct_sublayers(layer)
        except BundleError:
            break
        failing = next((child for child in children if fails(child)), None)
        if failing is None:
            break
        path = f"{path}/{failing.name}" if path else failing.name
        layer, found = failing, (path, type(failing).__name__)
    return f" at layer {found[0]!r} ({found[1]})" if found else ""


def save_bundle(
    model: Any,
    path: str | os.PathLike[str],
    *,
    optimizer: Any = None,
    sample_inputs: Any = None,
    preprocessing: Mapping[str, Any] | None = None,
    state: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    verbose: bool | str = "auto",
) -> Manifest:
    """Saves a model, its optimizer and training state as one bundle directory.

    Args:
        model: a built Keras 3 model (Sequential, functional or registered subclassed).
        path: a local directory path or a ``tf.io.gfile`` URL (``gs://``, ``s3://``, ``ram://``).
        optimizer: the optimizer to save; defaults to ``model.optimizer``.
        sample_inputs: a batch the model accepts; stored with the model's inference outputs so
            that loading can prove the model still computes the same.
        preprocessing: the caller's preprocessing values (NumPy arrays, numbers, strings).
        state: names to trackables (tf.Variable, tf.random.Generator, tf.data iterator, tf.Module).
        metadata: JSON values stored in the manifest.
        overwrite: replace an existing bundle at ``path``.
        verbose: show progress while hashing large bundles: "auto" (when stderr is a terminal),
            True or False.

    Returns:
        The bundle's :class:`Manifest`.

    Raises:
        BundleError: bad arguments, an unbuilt or unserializable model, an existing ``path``
            without ``overwrite``, or a write failure (nothing at ``path`` is changed then).
    """

    target = _paths.as_path(path)
    check_model(model)
    if not isinstance(overwrite, bool):
        raise ArgumentTypeError(f"overwrite must be True or False, found {overwrite!r}.")
    _progress.wanted(verbose)  # validates it before any work
    chief = _distribution.is_chief(_distribution.strategy_of(model))
    if chief:
        check_target(target, overwrite)
    opt, source = resolve_optimizer(model, optimizer)
    trackables = check_state(state, "state")
    meta = json_metadata(metadata)
    config = _serialize(model)
    distribution = _distribution.describe(model)
    probe = _probe.record(model, sample_inputs) if sample_inputs is not None else None
    user_pre, pre_files = _preprocessing.encode_user(preprocessing)
    files: dict[str, bytes] = dict(pre_files)
    probe_section = None
    if probe is not None:
        probe_section, probe_files = _probe.encode(probe)
        files.update(probe_files)

    layer_states = _preprocessing.layer_states(model)
    for path in _preprocessing.unadapted_normalization(layer_states):
        warnings.warn(
            f"Normalization layer {path!r} was never adapted and has no explicit mean/variance: it passes "
            "inputs through unnormalized (mean 0, variance 1). Call layer.adapt(training_data) before "
            "training, or pass mean= and variance=.",
            PreprocessingWarning,
            stacklevel=2,
        )
    sections = {
        "environment": _environment.current(),
        "model": _architecture.describe(model),
        "signature": _signature.of_model(model, probe and probe.inputs, probe and probe.outputs),
        "optimizer": _optimizer.describe(opt, model, source or "model") if opt is not None else None,
        "compile": _architecture.jsonable(config.get("compile_config")),
        "preprocessing": {"layers": layer_states, "user": user_pre},
        "regularization": _architecture.regularization(model),
        "random_state": _random_state.capture(model),
        "distribution": distribution,
        "model_optimizer": (
            _optimizer.describe(model.optimizer, model, "model")
            if source == "separate" and getattr(model, "optimizer", None) is not None
            else None
        ),
    }
    contents = _Contents(model, opt, source, trackables, files, meta, probe_section, sections)
    if not chief:
        # A non-chief multi-worker process runs the same save (its collectives are needed) into a
        # private temporary directory that is removed; only the chief writes at `path`.
        scratch = tempfile.mkdtemp(prefix="faithful_restore-worker-")
        try:
            return _write(contents, os.path.join(scratch, "bundle"), overwrite=False, verbose=False)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    with _commit.writer_lock(target):
        _commit.recover_and_clean(target)
        check_target(target, overwrite)  # again: another writer may have finished meanwhile
        return _write(contents, target, overwrite=overwrite, verbose=verbose)


@dataclass(frozen=True)
class _Contents:
    """Everything one save writes, captured and checked before any I/O."""

    model: Any
    optimizer: Any
    optimizer_source: str | None  # "model", "separate" or None
    trackables: dict[str, Any]
    files: dict[str, bytes]  # small files by bundle path: preprocessing arrays, the probe
    metadata: dict[str, Any]
    probe: dict[str, Any] | None
    sections: dict[str, Any]  # the manifest's sections captured from the model


def _write(contents: _Contents, target: str, *, overwrite: bool, verbose: bool | str) -> Manifest:
    """Stages every file, hashes it, writes the manifest last and commits."""
    import tensorflow as tf

    model, opt, source = contents.model, contents.optimizer, contents.optimizer_source
    trackables, files, sections = contents.trackables, contents.files, contents.sections

    saved_at, fixed_time = _save_time()
    stage = _commit.local_stage_dir(target)
    durable = _durable.durable()
    try:
        # Large weight arrays are hashed as Keras writes them, on an otherwise idle core, and
        # handed to h5py as views of the variables rather than copies.
        with _inline_hash.recording(stage) as recorder, _save_views.writing():
            try:
                with _durable.early_writeback(stage) if durable else contextlib.nullcontext():
                    _keras_format.save_directory(model, os.path.join(stage, MODEL_DIR))
                if fixed_time:
                    _stamp_keras_metadata(os.path.join(stage, *MODEL_METADATA.split("/")), saved_at)
            except Exception as e:  # noqa: BLE001 - surface Keras' failure as ours, with the cause
                raise BundleError(f"Keras could not save model {model.name!r}: {type(e).__name__}: {e}") from e
            if source == "separate":
                _optimizer.write_h5(opt, os.path.join(stage, OPTIMIZER_FILE))
        if trackables:
            try:
                tf.train.Checkpoint(**trackables).write(os.path.join(stage, *STATE_PREFIX.split("/")))
            except Exception as e:  # noqa: BLE001
                raise BundleError(f"cannot save state {sorted(trackables)}: {type(e).__name__}: {e}") from e
        for rel, data in files.items():
            _durable.write_bytes_local(os.path.join(stage, *rel.split("/")), data)
        entries = []
        staged = [(rel, os.path.join(stage, *rel.split("/"))) for rel in _paths.list_files(stage)]
        progress = _progress.Bytes(
            f"faithful_restore: hashing {target}", sum(os.path.getsize(p) for _, p in staged), verbose
        )
        # Flushing to disk waits on the device and hashing on the CPU: do both at once.
        syncing = _durable.in_background(lambda: _durable.fsync_tree(stage), "fsync") if durable else None
        with syncing or contextlib.nullcontext():
            for rel, full in staged:
                segments = recorder.segments(full, progress.add)
                if segments:
                    entries.append(FileEntry.segmented(rel, segments))
                else:
                    size, sha = _hashing.hash_file(full, progress.add)
                    entries.append(FileEntry(rel, size, sha))
        manifest = Manifest(
            format_version=version_for(entries),
            created=saved_at.isoformat(timespec="seconds"),
            library_version=__version__,
            metadata=contents.metadata,
            state=sorted(trackables),
            probe=contents.probe,
            files=tuple(entries),
            **sections,  # type: ignore[arg-type]
        )
        raw = manifest.to_json()
        _durable.write_bytes_local(os.path.join(stage, DIGEST), (digest(raw) + "\n").encode())
        _durable.write_bytes_local(os.path.join(stage, MANIFEST), raw)
        _durable.fsync_dir(stage)
        if _paths.is_local(target):
            _commit.commit_local(stage, target, overwrite)
        else:
            listed = [e.path for e in entries]
            _commit.commit_remote(stage, target, listed + [DIGEST, MANIFEST], [DIGEST, MANIFEST], overwrite)
    except OSError as e:
        raise BundleError(
            f"writing the bundle to {target!r} failed: {e}. Any previous bundle there is intact; "
            "free space or fix permissions and retry."
        ) from e
    finally:
        if os.path.exists(stage):
            shutil.rmtree(stage, ignore_errors=True)
    return manifest


def _save_time() -> tuple[_dt.datetime, bool]:
    """The save time, from ``SOURCE_DATE_EPOCH`` when set (reproducible builds); whether it was."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if epoch:
        try:
            return _dt.datetime.fromtimestamp(int(epoch), _dt.timezone.utc), True
        except (ValueError, OverflowError, OSError) as e:
            raise ArgumentError(
                f"SOURCE_DATE_EPOCH must be a Unix time in whole seconds, found {epoch!r} ({e}); fix or unset it."
            ) from e
    return _dt.datetime.now(_dt.timezone.utc), False


def _stamp_keras_metadata(path: str, when: _dt.datetime) -> None:
    """Writes ``when`` as Keras' ``date_saved`` (Keras writes the wall clock; load ignores it)."""
    with open(path, encoding="utf-8") as f:
        metadata = json.load(f)
    if "date_saved" in metadata:
        metadata["date_saved"] = when.strftime("%Y-%m-%d@%H:%M:%S")
        with open(path, "w", encoding="utf-8") as f:
            f.write(json.dumps(metadata, indent=4))
