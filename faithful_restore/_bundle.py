"""save_bundle / load_bundle: one directory that restores the model, its optimizer and the
training state exactly, and records what is needed to prove it.

Layout (see docs/bundle-format.md)::

    bundle/
      manifest.json            what the bundle holds; written last (the commit marker)
      manifest.sha256          SHA-256 of manifest.json
      model/                   Keras' own unzipped format: keras.models.load_model("bundle/model")
        config.json  metadata.json  model.weights.h5  assets/
      optimizer.weights.h5     only for an optimizer that is not model.optimizer
      state/ckpt.*             the caller's trackables (tf.train.Checkpoint)
      preprocessing/*.npy      the caller's preprocessing arrays
      probe/*.npy              probe inputs and the outputs the saved model computed
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from faithful_restore import (
    _architecture,
    _distribution,
    _environment,
    _fileio,
    _keras_format,
    _keras_internals,
    _optimizer,
    _preprocessing,
    _probe,
    _progress,
    _random_state,
    _safety,
    _signature,
)
from faithful_restore._manifest import (
    DIGEST,
    MANIFEST,
    MAX_MANIFEST_BYTES,
    FileEntry,
    Manifest,
    digest,
    parse,
    version_for,
)
from faithful_restore.errors import (
    BundleError,
    FaithfulRestoreError,
    InputCheckError,
    IntegrityError,
    PreprocessingWarning,
    RoundtripError,
    VersionSkewError,
    VersionSkewWarning,
)
from faithful_restore.fast import deferred_init as _deferred_init
from faithful_restore.fast import inline_hash as _inline_hash
from faithful_restore.fast import prefetch as _prefetch
from faithful_restore.fast import save_views as _save_views
from faithful_restore.fast import sequential_build as _sequential_build

LIBRARY_VERSION = "0.1.0"
MODEL_DIR = "model"
MODEL_WEIGHTS = f"{MODEL_DIR}/model.weights.h5"
MODEL_CONFIG = f"{MODEL_DIR}/config.json"
OPTIMIZER_FILE = "optimizer.weights.h5"
STATE_PREFIX = "state/ckpt"
_MAX_CONFIG_BYTES = 256 * 1024 * 1024
_SKEW_MODES = ("warn", "error", "ignore")
_MAX_LOAD_ATTEMPTS = 5


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
        from faithful_restore._guard import check_inputs

        return check_inputs(self, x, thresholds=thresholds)


# --------------------------------------------------------------------------- checks


def _check_model(model: Any) -> None:
    import keras

    if not isinstance(model, keras.Model):
        raise BundleError(
            f"model must be a keras.Model, found {type(model).__name__}; wrap layers in "
            "keras.Sequential or a functional keras.Model."
        )
    if not model.built:
        raise BundleError(
            f"model {model.name!r} is not built, so it has no weights to save; call it on a batch "
            "(model(x)) or model.build(input_shape) first."
        )


def _check_state(state: Any, what: str) -> dict[str, Any]:
    import tensorflow as tf

    if state is None:
        return {}
    if not isinstance(state, Mapping):
        raise BundleError(
            f"{what} must map names to trackables (tf.Variable, tf.random.Generator, tf.data "
            f"iterator, tf.Module), found {type(state).__name__}."
        )
    out = {}
    for name, value in state.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise BundleError(f"{what} names must be Python identifiers, found {name!r}.")
        if not isinstance(value, tf.__internal__.tracking.Trackable):
            raise BundleError(
                f"{what}[{name!r}] is a {type(value).__name__}, which tf.train.Checkpoint cannot "
                "save; wrap plain values in a tf.Variable (e.g. tf.Variable(step, dtype=tf.int64))."
            )
        out[name] = value
    return out


def _json_metadata(metadata: Any) -> dict[str, Any]:
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise BundleError(f"metadata must be a mapping, found {type(metadata).__name__}.")
    try:
        return dict(json.loads(json.dumps(dict(metadata), allow_nan=False, sort_keys=True)))
    except (TypeError, ValueError) as e:
        raise BundleError(f"metadata must hold JSON values (str, numbers, bools, lists, dicts): {e}.") from e


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


def _resolve_optimizer(model: Any, optimizer: Any) -> tuple[Any, str | None]:
    import keras

    model_opt = getattr(model, "optimizer", None)
    if optimizer is None:
        return (model_opt, "model") if model_opt is not None else (None, None)
    if not isinstance(optimizer, keras.optimizers.Optimizer):
        raise BundleError(f"optimizer must be a keras.optimizers.Optimizer, found {type(optimizer).__name__}.")
    return optimizer, ("model" if optimizer is model_opt else "separate")


# --------------------------------------------------------------------------- save


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

    target = _fileio.as_path(path)
    _check_model(model)
    if not isinstance(overwrite, bool):
        raise BundleError(f"overwrite must be True or False, found {overwrite!r}.")
    _progress.wanted(verbose)  # validates it before any work
    chief = _distribution.is_chief(_distribution.strategy_of(model))
    if chief:
        _check_target(target, overwrite)
    opt, source = _resolve_optimizer(model, optimizer)
    trackables = _check_state(state, "state")
    meta = _json_metadata(metadata)
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
    if not chief:
        # A non-chief multi-worker process runs the same save (its collectives are needed) into a
        # private temporary directory that is removed; only the chief writes at `path`.
        scratch = tempfile.mkdtemp(prefix="faithful_restore-worker-")
        try:
            return _write(
                model,
                os.path.join(scratch, "bundle"),
                False,
                opt,
                source,
                trackables,
                files,
                meta,
                probe_section,
                sections,
                False,
            )
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    with _fileio.writer_lock(target):
        _fileio.recover_and_clean(target)
        _check_target(target, overwrite)  # again: another writer may have finished meanwhile
        return _write(model, target, overwrite, opt, source, trackables, files, meta, probe_section, sections, verbose)


def _write(
    model: Any,
    target: str,
    overwrite: bool,
    opt: Any,
    source: str | None,
    trackables: dict[str, Any],
    files: dict[str, bytes],
    meta: dict[str, Any],
    probe_section: dict[str, Any] | None,
    sections: dict[str, Any],
    verbose: bool | str,
) -> Manifest:
    """Stages every file, hashes it, writes the manifest last and commits."""
    import tensorflow as tf

    stage = _fileio.local_stage_dir(target)
    durable = _fileio.durable()
    try:
        # Large weight arrays are hashed as Keras writes them, on an otherwise idle core, and
        # handed to h5py as views of the variables rather than copies.
        with _inline_hash.recording(stage) as recorder, _save_views.writing():
            try:
                with _fileio.early_writeback(stage) if durable else contextlib.nullcontext():
                    _keras_format.save_directory(model, os.path.join(stage, MODEL_DIR))
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
            _fileio.write_bytes_local(os.path.join(stage, *rel.split("/")), data)
        entries = []
        staged = [(rel, os.path.join(stage, *rel.split("/"))) for rel in _fileio.list_files(stage)]
        progress = _progress.Bytes(
            f"faithful_restore: hashing {target}", sum(os.path.getsize(p) for _, p in staged), verbose
        )
        # Flushing to disk waits on the device and hashing on the CPU: do both at once.
        syncing = _fileio.in_background(lambda: _fileio.fsync_tree(stage), "fsync") if durable else None
        with syncing or contextlib.nullcontext():
            for rel, full in staged:
                segments = recorder.segments(full, progress.add)
                if segments:
                    entries.append(FileEntry.segmented(rel, segments))
                else:
                    size, sha = _fileio.hash_file(full, progress.add)
                    entries.append(FileEntry(rel, size, sha))
        manifest = Manifest(
            format_version=version_for(entries),
            created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            library_version=LIBRARY_VERSION,
            metadata=meta,
            state=sorted(trackables),
            probe=probe_section,
            files=tuple(entries),
            **sections,  # type: ignore[arg-type]
        )
        raw = manifest.to_json()
        _fileio.write_bytes_local(os.path.join(stage, DIGEST), (digest(raw) + "\n").encode())
        _fileio.write_bytes_local(os.path.join(stage, MANIFEST), raw)
        _fileio.fsync_dir(stage)
        if _fileio.is_local(target):
            _fileio.commit_local(stage, target, overwrite)
        else:
            listed = [e.path for e in entries]
            _fileio.commit_remote(stage, target, listed + [DIGEST, MANIFEST], [DIGEST, MANIFEST], overwrite)
    except OSError as e:
        raise BundleError(
            f"writing the bundle to {target!r} failed: {e}. Any previous bundle there is intact; "
            "free space or fix permissions and retry."
        ) from e
    finally:
        if os.path.exists(stage):
            shutil.rmtree(stage, ignore_errors=True)
    return manifest


def _check_target(target: str, overwrite: bool) -> None:
    if not _fileio.exists(target):
        return
    if not overwrite:
        raise BundleError(
            f"{target!r} already exists and overwrite=False; pass overwrite=True to replace it or "
            "choose another path. Nothing was written."
        )
    if not _fileio.isdir(target):
        raise BundleError(
            f"{target!r} is a file, not a bundle directory; refusing to replace it. Remove it or choose another path."
        )
    if _fileio.is_local(target) and os.path.islink(target):
        raise BundleError(f"{target!r} is a symlink; refusing to replace it. Choose another path.")
    contents = _fileio.list_files(target)
    if contents and not _is_bundle_dir(target, contents):
        raise BundleError(
            f"{target!r} is a non-empty directory that holds no bundle (no faithful_restore {MANIFEST}); "
            "refusing to replace it with overwrite=True. Choose another path."
        )


def _is_bundle_dir(target: str, contents: list[str]) -> bool:
    """Whether ``target`` holds a bundle (damaged or not), judged by its manifest's format key."""
    if MANIFEST not in contents:
        return False
    try:
        data = json.loads(_fileio.read_bytes(_fileio.join(target, MANIFEST), MAX_MANIFEST_BYTES))
    except (BundleError, OSError, ValueError, RecursionError):
        return False
    return isinstance(data, dict) and data.get("format") == "faithful_restore.bundle"


# --------------------------------------------------------------------------- load


def read_manifest(root: str, label: str | None = None) -> Manifest:
    """Reads and validates ``manifest.json`` against ``manifest.sha256``.

    ``label`` names the bundle in messages when ``root`` is a snapshot of it.

    Raises:
        BundleError: not a bundle, or a malformed or newer-format manifest.
        IntegrityError: the manifest does not match its digest.
    """
    shown = label or root
    if not _fileio.exists(root):
        raise BundleError(f"no bundle at {shown!r}: the path does not exist. Check the path.")
    if not _fileio.isdir(root):
        raise BundleError(f"{shown!r} is a file, not a bundle directory. Pass the bundle's directory.")
    manifest_path = _fileio.join(root, MANIFEST)
    if not _fileio.exists(manifest_path):
        raise BundleError(
            f"{shown!r} holds no {MANIFEST}: it is not a bundle, or a save into it never finished. "
            "Pass a directory written by save_bundle."
        )

    def read(path: str, limit: int) -> bytes:
        try:
            return _fileio.read_bytes(path, limit)
        except BundleError as e:  # name the user's bundle, not a private snapshot of it
            raise BundleError(str(e).replace(root, shown)) from e

    raw = read(manifest_path, MAX_MANIFEST_BYTES)
    digest_path = _fileio.join(root, DIGEST)
    if not _fileio.exists(digest_path):
        raise IntegrityError(f"{shown!r} lacks {DIGEST}, which protects the manifest; the bundle is damaged.")
    recorded = read(digest_path, 200).decode("ascii", "replace").strip()
    if recorded != digest(raw):
        raise IntegrityError(
            f"{MANIFEST} in {shown!r} does not match {DIGEST} (expected sha256 {recorded[:16]}..., "
            f"found {digest(raw)[:16]}...): the manifest was modified or damaged. Restore the bundle "
            "from a good copy."
        )
    return parse(raw)


def verify_files(
    root: str,
    manifest: Manifest,
    copy_to: str | None = None,
    label: str | None = None,
    verbose: bool | str = False,
    only: Collection[str] | None = None,
    listing: bool = True,
    keep: _prefetch.Buffers | None = None,
) -> None:
    """Checks that the bundle holds exactly the manifest's files with their sizes and digests.

    With ``copy_to`` (a local directory), every file is also copied there in the same pass.
    ``label`` names the bundle in messages when ``root`` is a snapshot of it. ``only`` limits the
    hashing to some files; ``listing=False`` skips the missing/extra-file check. With ``keep``, the
    large segments of local segmented files are read into buffers, checked, and kept there for
    the load (see :mod:`_prefetch`).

    Raises:
        IntegrityError: naming the first missing, extra, resized, modified or linked file.
    """
    shown = label or root
    listed = manifest.file_map
    if listing:
        _check_listing(root, listed, shown)
    if only is not None:
        listed = {rel: entry for rel, entry in listed.items() if rel in set(only)}
    progress = _progress.Bytes(f"faithful_restore: checking {shown}", sum(e.size for e in listed.values()), verbose)
    _hash_files(root, listed, shown, copy_to, progress, keep)


def _check_listing(root: str, listed: dict[str, FileEntry], shown: str) -> None:
    """The directory holds exactly the listed files (sizes and types are checked when hashing)."""
    present = set(_fileio.list_files(root)) - {MANIFEST, DIGEST}
    missing = sorted(set(listed) - present)
    if missing:
        raise IntegrityError(
            f"{missing[0]!r} is listed in the manifest but missing from {shown!r}"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
            + "; the bundle is incomplete. Restore it from a good copy."
        )
    extra = sorted(present - set(listed))
    if extra:
        raise IntegrityError(
            f"{extra[0]!r} in {shown!r} is not listed in the manifest; a bundle holds only the "
            "files it lists. Remove it or restore the bundle from a good copy."
        )


def _hash_files(
    root: str,
    listed: dict[str, FileEntry],
    shown: str,
    copy_to: str | None,
    progress: _progress.Bytes,
    keep: _prefetch.Buffers | None = None,
) -> None:
    local = _fileio.is_local(root)
    for rel, entry in sorted(listed.items()):
        full = _fileio.join(root, *rel.split("/"))
        if local:
            if os.path.islink(full) or not os.path.isfile(full):
                raise IntegrityError(f"{rel!r} in {shown!r} is a link or not a regular file; refusing it.")
            _check_size(rel, entry, os.path.getsize(full))  # before reading a file of the wrong size
        kept: dict[int, Any] = {}
        if keep is not None and copy_to is None and entry.segments and local:
            segments = [(s.offset, s.size) for s in entry.segments]
            size, digests, kept = _prefetch.read_segments(full, segments, progress.add)
        elif copy_to is not None:
            size, digests = _fileio.copy_hashing(
                full, os.path.join(copy_to, *rel.split("/")), progress.add, entry.bounds
            )
        else:
            size, digests = _fileio.hash_segments(full, entry.bounds, progress.add)
        _check_digests(rel, entry, size, digests)
        if keep is not None and kept:
            keep.add(full, kept)  # only once the file's digests passed


def _check_size(rel: str, entry: FileEntry, size: int) -> None:
    if size != entry.size:
        raise IntegrityError(
            f"{rel!r} has {size} bytes, the manifest records {entry.size}: the file was truncated or "
            "modified. Restore the bundle from a good copy."
        )


def _check_digests(rel: str, entry: FileEntry, size: int, digests: list[str]) -> None:
    """Raises IntegrityError naming the first byte range of ``rel`` that differs from the manifest."""
    _check_size(rel, entry, size)
    expected = [s.sha256 for s in entry.segments] or [entry.sha256]
    for i, (found, recorded) in enumerate(zip(digests, expected)):
        if found != recorded:
            where = (
                f"bytes {entry.segments[i].offset}..{entry.segments[i].offset + entry.segments[i].size} "
                if entry.segments
                else ""
            )
            raise IntegrityError(
                f"{rel!r} does not match the manifest ({where}sha256 {found[:16]}... vs recorded "
                f"{recorded[:16]}...): the file was modified or damaged. Restore the bundle from a good copy."
            )


def check_environment(manifest: Manifest, on_version_skew: str) -> list[tuple[str, Any, Any]]:
    diffs = _environment.differences(manifest.environment, _environment.current())
    if diffs and on_version_skew != "ignore":
        text = (
            "the bundle was written in a different environment: "
            + _environment.describe(diffs)
            + ". Results may differ by rounding or the model may not load; install the saved "
            "versions to reproduce exactly, or pass on_version_skew='ignore'."
        )
        if on_version_skew == "error":
            raise VersionSkewError(text, diffs)
        warnings.warn(text, VersionSkewWarning, stacklevel=3)
    return diffs


def _load_model(
    root: str,
    manifest: Manifest,
    custom_objects: Any,
    safe_mode: bool,
    compile: bool,
    weights_verified: Callable[[], None] | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Rebuilds the Keras model from verified files, compiled as saved when ``compile``.

    With ``weights_verified`` (a wait for the weight files' hashes, running meanwhile), the model
    is built from its verified config first and the weights are parsed only after the wait
    returns, so the hashing overlaps Keras' layer construction and nothing unverified is parsed.
    """

    raw = _fileio.read_bytes(os.path.join(root, *MODEL_CONFIG.split("/")), _MAX_CONFIG_BYTES)
    try:
        config = json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise BundleError(f"{MODEL_CONFIG} is not valid JSON ({e}); the bundle is damaged.") from e
    _safety.scan(config, safe_mode=safe_mode, custom_objects=custom_objects, where=MODEL_CONFIG)
    try:
        with warnings.catch_warnings():
            # The optimizer in the weights file is restored by faithful_restore itself.
            warnings.filterwarnings("ignore", message=".*Skipping variable loading for optimizer.*")
            if weights_verified is not None:
                from keras.src.saving import saving_lib

                model = saving_lib._model_from_config(raw.decode(), custom_objects, False, safe_mode)
                # Compiling builds the optimizer's slot variables; do it while the hashing runs.
                optimizer = _compile(model, config, compile, custom_objects)
                weights_verified()
                _scan_weight_files(root, manifest)
                # The optimizer's saved state is restored and checked by _restore_optimizer.
                skip = {"objects_to_skip": [optimizer]} if optimizer is not None else {}
                model.load_weights(os.path.join(root, *MODEL_WEIGHTS.split("/")), **skip)
            else:
                _scan_weight_files(root, manifest)
                model = _keras_format.load_directory(
                    os.path.join(root, MODEL_DIR), custom_objects=custom_objects, safe_mode=safe_mode
                )
    except FaithfulRestoreError:
        raise
    except Exception as e:  # noqa: BLE001 - Keras raises many types; name the cause
        raise BundleError(
            f"Keras could not rebuild the model from {MODEL_DIR}/: {type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}. If it uses custom classes, import the "
            "code that registers them or pass custom_objects."
        ) from e
    if weights_verified is None:
        _compile(model, config, compile, custom_objects)
    return model, config


def _compile(model: Any, config: dict[str, Any], compile: bool, custom_objects: Any) -> Any:
    """Compiles the model as saved (with ``compile``); returns its optimizer, or None."""
    import keras

    compile_config = config.get("compile_config")
    if not (compile and compile_config):
        return None
    try:
        with keras.saving.custom_object_scope(custom_objects or {}):
            model.compile_from_config(compile_config)
    except Exception as e:  # noqa: BLE001
        raise BundleError(
            f"cannot compile the restored model from its saved compile config: "
            f"{type(e).__name__}: {e}. Pass custom_objects for custom losses/metrics, or "
            "load with compile=False."
        ) from e
    return getattr(model, "optimizer", None)


def _scan_weight_files(root: str, manifest: Manifest) -> None:
    for rel in (MODEL_WEIGHTS, OPTIMIZER_FILE):
        if rel in manifest.file_map:
            _safety.scan_h5(os.path.join(root, *rel.split("/")), rel)


def _can_overlap(view: str, manifest: Manifest) -> bool:
    """Whether the weights can be hashed while Keras builds the model (see _load_model).

    Needs a local bundle, no Keras assets (the public load_weights does not read them) and
    Keras' internal config loader; otherwise everything is hashed first.
    """
    if not _fileio.is_local(view) or any(rel.startswith(f"{MODEL_DIR}/assets/") for rel in manifest.file_map):
        return False
    try:
        from keras.src.saving import saving_lib
    except ImportError:
        return False
    return callable(getattr(saving_lib, "_model_from_config", None))


def _background_hashing(
    view: str, manifest: Manifest, label: str, verbose: bool | str, keep: _prefetch.Buffers
) -> contextlib.AbstractContextManager[Callable[[], None]]:
    """Hashes every file but the config on a thread; yields the wait that raises its failure.

    Large weight segments are kept in ``keep`` once checked, for the load to use. The thread never
    outlives the block, so no reader is left behind while the snapshot is removed.
    """
    others = [rel for rel in manifest.file_map if rel != MODEL_CONFIG]
    return _fileio.in_background(
        lambda: verify_files(view, manifest, label=label, verbose=verbose, only=others, listing=False, keep=keep),
        "hash",
    )


def _restore_optimizer(
    model: Any, manifest: Manifest, config: dict[str, Any], root: str, compile: bool, custom_objects: Any
) -> Any:
    compile_config = config.get("compile_config")  # the model was compiled by _load_model
    record = manifest.optimizer
    if record is None:
        return None
    if record["source"] == "model":
        h5 = os.path.join(root, *MODEL_WEIGHTS.split("/"))
        opt = getattr(model, "optimizer", None) if compile and compile_config else None
    else:
        h5 = os.path.join(root, OPTIMIZER_FILE)
        opt = None
    if opt is None:
        opt = _optimizer.deserialize(record, custom_objects)
    restored = _optimizer.restore(opt, record, h5, model, custom_objects)
    if restored is not opt and opt is getattr(model, "optimizer", None):
        model.optimizer = restored  # compile() had built it on other variables than the saved one
    model_record = manifest.model_optimizer
    if model_record is not None and compile and compile_config and getattr(model, "optimizer", None) is not None:
        # A custom loop's optimizer was the primary one; the compiled optimizer's state is restored too.
        model.optimizer = _optimizer.restore(
            model.optimizer, model_record, os.path.join(root, *MODEL_WEIGHTS.split("/")), model, custom_objects
        )
    return restored


def _restore_state(root: str, manifest: Manifest, trackables: dict[str, Any]) -> None:
    import tensorflow as tf

    if not trackables:
        return
    unknown = sorted(set(trackables) - set(manifest.state))
    if unknown:
        raise BundleError(
            f"state {unknown} was requested but the bundle holds only {manifest.state or 'no state'}; "
            "request names that were passed to save_bundle(state=...)."
        )
    try:
        status = tf.train.Checkpoint(**trackables).read(os.path.join(root, *STATE_PREFIX.split("/")))
        status.expect_partial()
        status.assert_existing_objects_matched()
    except Exception as e:  # noqa: BLE001
        raise BundleError(
            f"cannot restore state {sorted(trackables)}: {type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}. Pass objects of the same kind, shape "
            "and dtype as the ones saved."
        ) from e


def load_bundle(
    path: str | os.PathLike[str],
    *,
    custom_objects: Mapping[str, Any] | None = None,
    compile: bool = True,
    safe_mode: bool = True,
    on_version_skew: str = "warn",
    verify: bool = True,
    state: Mapping[str, Any] | None = None,
    verbose: bool | str = "auto",
) -> Bundle:
    """Loads a bundle after checking every file against the manifest.

    Args:
        path: the bundle directory (local path or ``tf.io.gfile`` URL).
        custom_objects: custom classes/functions by name, as for ``keras.models.load_model``.
        compile: compile the model as it was saved; the optimizer is restored either way.
        safe_mode: refuse bundles that store Python code (Lambda layers).
        on_version_skew: "warn" (VersionSkewWarning), "error" (VersionSkewError) or "ignore".
        verify: re-run the stored probe and raise when outputs moved beyond the tolerance.
        state: names to trackables to restore in place (a subset of what was saved).
        verbose: show progress while checking large bundles: "auto" (when stderr is a
            terminal), True or False.

    Returns:
        A :class:`Bundle`.

    Raises:
        BundleError: not a bundle, a malformed manifest, refused content or a failed rebuild.
        IntegrityError: a file differs from the manifest (checked before anything is loaded).
        VersionSkewError: the environment differs and ``on_version_skew="error"``.
        RoundtripError: ``verify=True`` and the restored model's outputs differ.
    """
    root = _fileio.as_path(path)
    if on_version_skew not in _SKEW_MODES:
        raise BundleError(f"on_version_skew must be one of {_SKEW_MODES}, found {on_version_skew!r}.")
    for name, flag in (("compile", compile), ("safe_mode", safe_mode), ("verify", verify)):
        if not isinstance(flag, bool):
            raise BundleError(f"{name} must be True or False, found {flag!r}.")
    if custom_objects is not None and not isinstance(custom_objects, Mapping):
        raise BundleError(f"custom_objects must be a dict of names to classes, found {type(custom_objects).__name__}.")
    trackables = _check_state(state, "state")
    _progress.wanted(verbose)  # validates it before any work
    # A writer may replace the bundle while it is read (an atomic swap of directories): load
    # optimistically and start again when the manifest changed underneath.
    for _attempt in range(_MAX_LOAD_ATTEMPTS):
        before = _fingerprint(root)
        try:
            bundle, pinned = _load_once(
                root, custom_objects, compile, safe_mode, on_version_skew, verify, trackables, verbose
            )
        except (BundleError, OSError):
            if _fingerprint(root) != before:
                continue
            raise
        if pinned or _fingerprint(root) == before:
            return bundle
    raise BundleError(
        f"the bundle at {root!r} was replaced {_MAX_LOAD_ATTEMPTS} times while it was being loaded; "
        "retry when no writer is saving to it."
    )


def _fingerprint(root: str) -> bytes | None:
    """The manifest digest file's content: every committed save writes a new one."""
    try:
        return _fileio.read_bytes(_fileio.join(root, DIGEST), 200)
    except (OSError, BundleError):
        return None


def _load_once(
    root: str,
    custom_objects: Any,
    compile: bool,
    safe_mode: bool,
    on_version_skew: str,
    verify: bool,
    trackables: dict[str, Any],
    verbose: bool | str,
) -> tuple[Bundle, bool]:
    """One load attempt; also says whether it read a pinned snapshot (immune to writers)."""
    with consistent_view(root) as view:
        manifest = read_manifest(view, label=root)
        bundle = _load_verified(
            root, view, manifest, custom_objects, compile, safe_mode, on_version_skew, verify, trackables, verbose
        )
    return bundle, view != root


def _load_verified(
    root: str,
    view: str,
    manifest: Manifest,
    custom_objects: Any,
    compile: bool,
    safe_mode: bool,
    on_version_skew: str,
    verify: bool,
    trackables: dict[str, Any],
    verbose: bool | str,
) -> Bundle:
    if _can_overlap(view, manifest):
        # The listing and the config are verified first; the rest is hashed while Keras builds.
        verify_files(view, manifest, label=root, verbose=False, only=[MODEL_CONFIG])
        buffers = _prefetch.Buffers()
        with _background_hashing(view, manifest, root, verbose, buffers) as weights_verified:
            try:
                diffs = check_environment(manifest, on_version_skew)
                bundle = restore(
                    root, view, manifest, custom_objects, compile, safe_mode, trackables, weights_verified, buffers
                )
            except FaithfulRestoreError:
                weights_verified()  # a damaged file explains any failure after it: report that first
                raise
        files_root = view
    else:
        with verified_copy(view, manifest, label=root, verbose=verbose) as files_root:
            diffs = check_environment(manifest, on_version_skew)
            bundle = restore(root, files_root, manifest, custom_objects, compile, safe_mode, trackables)
            return _checked_probe(root, files_root, manifest, bundle, diffs, verify)
    return _checked_probe(root, files_root, manifest, bundle, diffs, verify)


def _checked_probe(
    root: str, files_root: str, manifest: Manifest, bundle: Bundle, diffs: list[Any], verify: bool
) -> Bundle:
    """Re-runs the stored probe (with ``verify``); raises RoundtripError when outputs moved."""
    if verify and manifest.probe is not None:
        problems = _probe.check(
            bundle.model, manifest.probe, read_probe(files_root, manifest), same_environment=not diffs
        )
        if problems:
            raise RoundtripError(
                f"the model restored from {root!r} does not compute what the saved model "
                f"computed on the stored probe: {'; '.join(problems)}. "
                + ("The environment differs (" + _environment.describe(diffs) + "); " if diffs else "")
                + "run faithful_restore.verify_bundle for a diagnosis."
            )
    return bundle


def consistent_view(root: str) -> contextlib.AbstractContextManager[str]:
    """A view of the bundle that concurrent writers cannot change (see _fileio.local_snapshot)."""
    if _fileio.is_local(root):
        return _fileio.local_snapshot(root)
    return contextlib.nullcontext(root)


@contextlib.contextmanager
def verified_copy(
    root: str, manifest: Manifest, label: str | None = None, verbose: bool | str = False
) -> Iterator[str]:
    """Checks every file against the manifest and yields a local directory holding them.

    A local bundle is checked in place; a remote one is copied to a temporary directory in the
    same pass (removed on exit), since Keras and TensorFlow then read it from local disk.
    """
    workdir = None if _fileio.is_local(root) else tempfile.mkdtemp(prefix="faithful_restore-load-")
    try:
        verify_files(root, manifest, copy_to=workdir, label=label, verbose=verbose)
        yield root if workdir is None else workdir
    finally:
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)


def _reader(files_root: str, manifest: Manifest) -> Callable[[str], bytes]:
    def read(rel: str) -> bytes:
        entry = manifest.file_map.get(rel)
        if entry is None:
            raise BundleError(f"the manifest refers to {rel!r}, which it does not list; the manifest is damaged.")
        return _fileio.read_bytes(os.path.join(files_root, *rel.split("/")), entry.size)

    return read


def read_probe(files_root: str, manifest: Manifest) -> _probe.Probe:
    if manifest.probe is None:
        raise BundleError("the bundle holds no probe; save it with sample_inputs=.")
    return _probe.decode(manifest.probe, _reader(files_root, manifest))


def restore(
    root: str,
    files_root: str,
    manifest: Manifest,
    custom_objects: Any,
    compile: bool,
    safe_mode: bool,
    trackables: dict[str, Any],
    weights_verified: Callable[[], None] | None = None,
    buffers: _prefetch.Buffers | None = None,
) -> Bundle:
    """Rebuilds the model, optimizer, random and caller state from verified local files.

    ``weights_verified``: see :func:`_load_model`. ``buffers``: verified weight bytes already read
    (see :mod:`_prefetch`), used once ``weights_verified`` has returned.
    """
    # Every variable the bundle holds is assigned below, so Keras' initializers are skipped.
    with _deferred_init.deferred(), _sequential_build.once(), _prefetch.serving(buffers):
        model, config = _load_model(files_root, manifest, custom_objects, safe_mode, compile, weights_verified)
        optimizer = _restore_optimizer(model, manifest, config, files_root, compile, custom_objects)
        _random_state.restore(model, manifest.random_state)
        _restore_state(files_root, manifest, trackables)
    preprocessing = _preprocessing.decode_user(manifest.preprocessing["user"], _reader(files_root, manifest))
    return Bundle(model, optimizer, manifest, dict(trackables), preprocessing, root)
