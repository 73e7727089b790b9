"""What a model is made of: layers, their configs, parameter counts, regularization settings."""

from __future__ import annotations

import base64
import hashlib
import json
import marshal
import re
import types
from typing import Any

import numpy as np

from faithful_restore.runtime import keras_internals as _keras_internals

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


def _canonical_code(code: Any) -> Any:
    consts = [_canonical_code(c) if isinstance(c, types.CodeType) else repr(c) for c in code.co_consts]
    return {"code": code.co_code.hex(), "consts": consts, "names": list(code.co_names), "args": list(code.co_varnames)}


def canonical(config: Any) -> Any:
    """``config`` with serialized Python functions (a Lambda's ``__lambda__``) by what they compute.

    Keras stores a Lambda's function as marshalled bytecode, whose bytes differ between a function
    compiled from source and the same function after a load (marshal's reference flags), so the
    bytes cannot be compared; the instructions, constants and names can. Only called on configs of
    models already in memory (a bundle storing code loads only with ``safe_mode=False``).
    """
    if isinstance(config, dict):
        if config.get("class_name") == "__lambda__" and isinstance(config.get("config"), dict):
            inner = config["config"]
            try:
                code = marshal.loads(base64.b64decode(str(inner.get("code", "")).encode("ascii")))
            except Exception:  # noqa: BLE001 - not decodable: compared as stored
                return {k: canonical(v) for k, v in config.items()}
            if isinstance(code, types.CodeType):
                rest = {k: canonical(v) for k, v in inner.items() if k != "code"}
                return {"class_name": "__lambda__", "config": {**rest, "code": _canonical_code(code)}}
        return {k: canonical(v) for k, v in config.items()}
    if isinstance(config, (list, tuple)):
        return [canonical(v) for v in config]
    return config


def config_hash(config: Any) -> str:
    """SHA-256 of a layer config without its name (names change, behaviour does not)."""
    if isinstance(config, dict):
        config = {k: v for k, v in config.items() if k != "name"}
    blob = json.dumps(jsonable(canonical(config)), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def class_name(obj: Any) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def config_or_none(layer: Any) -> dict[str, Any] | None:
    """The layer's config, or None when its ``get_config`` fails (Keras may never need it: a
    sublayer its parent's constructor rebuilds is not serialized)."""
    try:
        return dict(layer.get_config())
    except Exception:  # noqa: BLE001 - reported as "not comparable", never fatal here
        return None


def safe_config(layer: Any) -> dict[str, Any]:
    config = config_or_none(layer)
    return {} if config is None else config


# What describe() records for a layer whose config is unavailable: the hash of an empty config.
UNAVAILABLE_CONFIG_SHA256 = hashlib.sha256(b"{}").hexdigest()


def configs_comparable(a: str | None, b: str | None) -> bool:
    return a not in (None, UNAVAILABLE_CONFIG_SHA256) and b not in (None, UNAVAILABLE_CONFIG_SHA256)


_AUTO_SUFFIX = re.compile(r"_\d+$")


def stable_keys(paths: list[str]) -> list[str]:
    """Process-independent keys for one model's layer paths, in :func:`iter_layers` order.

    Keras numbers auto-generated names per process (``dropout``, then ``dropout_2`` after other
    models were built), so names cannot identify a layer across processes. Each path segment
    becomes its name without a trailing ``_<n>`` plus its rank among earlier siblings with the
    same stripped name: ``block/dropout_2`` and ``block/dropout`` both become ``block#0/dropout#0``.
    Pure function of the ordered paths, so it applies to any bundle's recorded layer list.
    """
    keys: list[str] = []
    by_path: dict[str, str] = {}
    counts: dict[tuple[str, str], int] = {}
    for path in paths:
        parent, _, name = path.rpartition("/")
        parent_key = by_path.get(parent, parent)
        base = _AUTO_SUFFIX.sub("", name)
        rank = counts.get((parent_key, base), 0)
        counts[(parent_key, base)] = rank + 1
        key = f"{parent_key}/{base}#{rank}" if parent_key else f"{base}#{rank}"
        by_path.setdefault(path, key)
        keys.append(key)
    return keys


def parent_key(key: str) -> str:
    return key.rpartition("/")[0]


class Layers:
    """One model's layer entries (``describe()["layers"]`` items) indexed by stable key."""

    def __init__(self, entries: list[dict[str, Any]]) -> None:
        self.entries = list(entries)
        self.keys = stable_keys([e["path"] for e in self.entries])
        self.by_key = dict(zip(self.keys, self.entries))
        self.key_of_path = {e["path"]: k for e, k in zip(self.entries, self.keys)}

    def keyed(self, items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """Path-bearing entries (regularization, preprocessing) by this model's stable keys."""
        return {self.key_of_path.get(item["path"], item["path"]): item for item in items}

    def unmatched(
        self, other: Layers, other_built: dict[str, bool]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
        """(lazily built, missing from ``other``, extra in ``other``).

        A layer of ours that ``other`` lacks is *lazily built* when it holds no weights of its own
        and its parent exists in ``other`` but is not built there (``other_built``: path -> built):
        a parent creating it on first call (e.g. a preprocessor's packer) decides it from its own
        config, which is compared. Under a built parent it is missing; anything else is too.
        """

        def lazy(key: str, entry: dict[str, Any]) -> bool:
            parent = other.by_key.get(parent_key(key))
            return not entry.get("weights") and parent is not None and other_built.get(parent["path"]) is False

        lazily: list[dict[str, Any]] = []
        missing: list[dict[str, Any]] = []
        extra: list[dict[str, Any]] = []
        for key, entry in self.by_key.items():
            if key in other.by_key:
                continue
            if lazy(key, entry):
                lazily.append(entry)
            else:
                missing.append(entry)
        for key, entry in other.by_key.items():
            if key not in self.by_key:
                extra.append(entry)
        return lazily, missing, extra


def _count(variables: Any) -> int:
    return int(sum(int(np.prod(v.shape)) for v in variables))


def describe(model: Any) -> dict[str, Any]:
    """The manifest's ``model`` section."""
    layers = []
    for path, layer in _keras_internals.iter_layers(model):
        layers.append(
            {
                "path": path,
                "class": class_name(layer),
                # An unavailable config is recorded as the hash of {} (UNAVAILABLE_CONFIG_SHA256).
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
    for path, layer in _keras_internals.iter_layers(model):
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
