"""Rebuilding a model, its optimizer and the caller's state from verified local files.

Nothing here reads a byte the integrity check has not passed: with overlap, Keras builds the model
from the verified config while the weights are still being hashed, and the weights are parsed
only after the hash succeeded.
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from collections.abc import Callable
from typing import Any

from faithful_restore.bundle.types import Bundle, LoadOptions
from faithful_restore.capture import optimizer as _optimizer
from faithful_restore.capture import preprocessing as _preprocessing
from faithful_restore.capture import probe as _probe
from faithful_restore.capture import random_state as _random_state
from faithful_restore.capture import safety as _safety
from faithful_restore.errors import (
    BundleError,
    FaithfulRestoreError,
)
from faithful_restore.fast import deferred_init as _deferred_init
from faithful_restore.fast import prefetch as _prefetch
from faithful_restore.fast import sequential_build as _sequential_build
from faithful_restore.format import durable as _durable
from faithful_restore.format import paths as _paths
from faithful_restore.format.integrity import _reader, verify_files
from faithful_restore.format.layout import MODEL_CONFIG, MODEL_DIR, MODEL_WEIGHTS, OPTIMIZER_FILE, STATE_PREFIX
from faithful_restore.format.manifest import (
    Manifest,
)
from faithful_restore.runtime import keras_format as _keras_format

_MAX_CONFIG_BYTES = 256 * 1024 * 1024


def _load_model(
    root: str, manifest: Manifest, options: LoadOptions, weights_verified: Callable[[], None] | None = None
) -> tuple[Any, dict[str, Any]]:
    """Rebuilds the Keras model from verified files, compiled as saved with ``options.compile``.

    With ``weights_verified`` (a wait for the weight files' hashes, running meanwhile), the model
    is built from its verified config first and the weights are parsed only after the wait
    returns, so the hashing overlaps Keras' layer construction and nothing unverified is parsed.
    """
    custom_objects, safe_mode, compile = options.custom_objects, options.safe_mode, options.compile

    raw = _paths.read_bytes(os.path.join(root, *MODEL_CONFIG.split("/")), _MAX_CONFIG_BYTES)
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
    if not _paths.is_local(view) or any(rel.startswith(f"{MODEL_DIR}/assets/") for rel in manifest.file_map):
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
    return _durable.in_background(
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


def read_probe(files_root: str, manifest: Manifest) -> _probe.Probe:
    if manifest.probe is None:
        raise BundleError("the bundle holds no probe; save it with sample_inputs=.")
    return _probe.decode(manifest.probe, _reader(files_root, manifest))


def restore(
    root: str,
    files_root: str,
    manifest: Manifest,
    options: LoadOptions,
    weights_verified: Callable[[], None] | None = None,
    buffers: _prefetch.Buffers | None = None,
) -> Bundle:
    """Rebuilds the model, optimizer, random and caller state from verified local files.

    ``weights_verified``: see :func:`_load_model`. ``buffers``: verified weight bytes already read
    (see :mod:`_prefetch`), used once ``weights_verified`` has returned.
    """
    # Every variable the bundle holds is assigned below, so Keras' initializers are skipped.
    with _deferred_init.deferred(), _sequential_build.once(), _prefetch.serving(buffers):
        custom_objects = options.custom_objects
        model, config = _load_model(files_root, manifest, options, weights_verified)
        optimizer = _restore_optimizer(model, manifest, config, files_root, options.compile, custom_objects)
        _random_state.restore(model, manifest.random_state)
        _restore_state(files_root, manifest, dict(options.state))
    preprocessing = _preprocessing.decode_user(manifest.preprocessing["user"], _reader(files_root, manifest))
    return Bundle(model, optimizer, manifest, dict(options.state), preprocessing, root)
