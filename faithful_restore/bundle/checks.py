"""Argument checks shared by save and load: each raises an error that is also a ValueError or
TypeError, naming what was found, what was expected and the fix.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from faithful_restore.errors import (
    ArgumentError,
    ArgumentTypeError,
    BundleError,
)
from faithful_restore.format import paths as _paths
from faithful_restore.format.manifest import (
    MANIFEST,
    MAX_MANIFEST_BYTES,
)


def check_model(model: Any) -> None:
    import keras

    if not isinstance(model, keras.Model):
        raise ArgumentTypeError(
            f"model must be a keras.Model, found {type(model).__name__}; wrap layers in "
            "keras.Sequential or a functional keras.Model."
        )
    if not model.built:
        raise ArgumentError(
            f"model {model.name!r} is not built, so it has no weights to save; call it on a batch "
            "(model(x)) or model.build(input_shape) first."
        )


def check_state(state: Any, what: str) -> dict[str, Any]:
    import tensorflow as tf

    if state is None:
        return {}
    if not isinstance(state, Mapping):
        raise ArgumentTypeError(
            f"{what} must map names to trackables (tf.Variable, tf.random.Generator, tf.data "
            f"iterator, tf.Module), found {type(state).__name__}."
        )
    out = {}
    for name, value in state.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise ArgumentError(f"{what} names must be Python identifiers, found {name!r}.")
        if not isinstance(value, tf.__internal__.tracking.Trackable):
            raise ArgumentTypeError(
                f"{what}[{name!r}] is a {type(value).__name__}, which tf.train.Checkpoint cannot "
                "save; wrap plain values in a tf.Variable (e.g. tf.Variable(step, dtype=tf.int64))."
            )
        out[name] = value
    return out


def json_metadata(metadata: Any) -> dict[str, Any]:
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise ArgumentTypeError(f"metadata must be a mapping, found {type(metadata).__name__}.")
    try:
        return dict(json.loads(json.dumps(dict(metadata), allow_nan=False, sort_keys=True)))
    except (TypeError, ValueError) as e:
        raise ArgumentError(f"metadata must hold JSON values (str, numbers, bools, lists, dicts): {e}.") from e


def resolve_optimizer(model: Any, optimizer: Any) -> tuple[Any, str | None]:
    import keras

    model_opt = getattr(model, "optimizer", None)
    if optimizer is None:
        return (model_opt, "model") if model_opt is not None else (None, None)
    if not isinstance(optimizer, keras.optimizers.Optimizer):
        raise ArgumentTypeError(f"optimizer must be a keras.optimizers.Optimizer, found {type(optimizer).__name__}.")
    return optimizer, ("model" if optimizer is model_opt else "separate")


def check_target(target: str, overwrite: bool) -> None:
    if not _paths.exists(target):
        return
    if not overwrite:
        raise BundleError(
            f"{target!r} already exists and overwrite=False; pass overwrite=True to replace it or "
            "choose another path. Nothing was written."
        )
    if not _paths.isdir(target):
        raise BundleError(
            f"{target!r} is a file, not a bundle directory; refusing to replace it. Remove it or choose another path."
        )
    if _paths.is_local(target) and os.path.islink(target):
        raise BundleError(f"{target!r} is a symlink; refusing to replace it. Choose another path.")
    contents = _paths.list_files(target)
    if contents and not is_bundle_dir(target, contents):
        raise BundleError(
            f"{target!r} is a non-empty directory that holds no bundle (no faithful_restore {MANIFEST}); "
            "refusing to replace it with overwrite=True. Choose another path."
        )


def is_bundle_dir(target: str, contents: list[str]) -> bool:
    """Whether ``target`` holds a bundle (damaged or not), judged by its manifest's format key."""
    if MANIFEST not in contents:
        return False
    try:
        data = json.loads(_paths.read_bytes(_paths.join(target, MANIFEST), MAX_MANIFEST_BYTES))
    except (BundleError, OSError, ValueError, RecursionError):
        return False
    return isinstance(data, dict) and data.get("format") == "faithful_restore.bundle"
