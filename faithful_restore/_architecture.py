"""What a model is made of: layers, their configs, parameter counts, regularization settings."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np

from faithful_restore import _keras_internals

# Config keys that set how strongly a layer regularizes training.
_REGULARIZATION_KEYS = (
    "rate",
    "dropout",
    "recurrent_dropout",
    "stddev",
    "kernel_regularizer",
    "bias_regularizer",
    "activity_regularizer",
    "recurrent_regularizer",
    "embeddings_regularizer",
    "depthwise_regularizer",
    "pointwise_regularizer",
    "beta_regularizer",
    "gamma_regularizer",
)
_NORMALIZATION_KEYS = ("momentum", "epsilon", "synchronized")


def jsonable(value: Any) -> Any:
    """Converts configs (tuples, NumPy scalars and arrays) to plain JSON values."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return repr(value)  # JSON has no Infinity/NaN; keep the information as text
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if hasattr(value, "numpy"):
        return jsonable(np.asarray(value.numpy()))
    return repr(value)


def config_hash(config: Any) -> str:
    """SHA-256 of a layer config without its name (names change, behaviour does not)."""
    if isinstance(config, dict):
        config = {k: v for k, v in config.items() if k != "name"}
    blob = json.dumps(jsonable(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def class_name(obj: Any) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def iter_layers(model: Any) -> list[tuple[str, Any]]:
    """All layers below ``model`` (nested models included) as (path, layer), path 'outer/inner'."""
    out: list[tuple[str, Any]] = []

    def walk(layer: Any, prefix: str) -> None:
        children = _keras_internals.direct_sublayers(layer)
        for child in children:
            path = f"{prefix}/{child.name}" if prefix else child.name
            out.append((path, child))
            walk(child, path)

    walk(model, "")
    return out


def safe_config(layer: Any) -> dict[str, Any]:
    try:
        return dict(layer.get_config())
    except Exception:  # noqa: BLE001 - a layer without a config is reported, not fatal here
        return {}


def _count(variables: Any) -> int:
    return int(sum(int(np.prod(v.shape)) for v in variables))


def describe(model: Any) -> dict[str, Any]:
    """The manifest's ``model`` section."""
    layers = []
    for path, layer in iter_layers(model):
        layers.append(
            {
                "path": path,
                "class": class_name(layer),
                "config_sha256": config_hash(safe_config(layer)),
                "trainable": bool(layer.trainable),
                "weights": [
                    {"name": w.name, "shape": [int(d) for d in w.shape], "dtype": str(w.dtype)}
                    for w in _keras_internals.own_variables(layer)
                ],
            }
        )
    return {
        "class": class_name(model),
        "name": model.name,
        "params": {
            "trainable": _count(model.trainable_weights),
            "non_trainable": _count(model.non_trainable_weights),
        },
        "layers": layers,
    }


def regularization(model: Any) -> list[dict[str, Any]]:
    """Per layer: dropout rates, regularizers and their factors, normalization settings."""
    out = []
    for path, layer in iter_layers(model):
        config = safe_config(layer)
        entry: dict[str, Any] = {}
        for key in _REGULARIZATION_KEYS:
            if config.get(key) not in (None, 0, 0.0):
                entry[key] = jsonable(config[key])
        if "BatchNormalization" in type(layer).__name__ or "LayerNormalization" in type(layer).__name__:
            for key in _NORMALIZATION_KEYS:
                if key in config:
                    entry[key] = jsonable(config[key])
            entry["trainable"] = bool(layer.trainable)
        if entry:
            out.append({"path": path, "class": class_name(layer), "settings": entry})
    return out
