"""Preprocessing state: what the model's preprocessing layers hold, and the caller's own stats.

Layer state goes into the manifest (small: statistics, boundaries, vocabulary size and hash; the
vocabularies themselves are saved by Keras in the model's assets). The caller's mapping keeps
JSON values in the manifest and NumPy arrays as ``.npy`` files (read back with
``allow_pickle=False``).
"""

from __future__ import annotations

import hashlib
import io
import json
import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np

from faithful_restore.capture.architecture import class_name, jsonable, safe_config
from faithful_restore.drift.schema import FORMAT
from faithful_restore.drift.stats import PreprocessingStats
from faithful_restore.errors import BundleError
from faithful_restore.runtime.keras_internals import iter_layers

ARRAY_DIR = "preprocessing"
_MAX_VALUE_DEPTH = 8


def _floats(tensor: Any) -> list[float]:
    return [float(v) for v in np.asarray(tensor, dtype=np.float64).reshape(-1)]


def vocabulary_digest(vocabulary: Any) -> str:
    tokens = [t.decode() if isinstance(t, bytes) else str(t) for t in vocabulary]
    return hashlib.sha256(json.dumps(tokens).encode()).hexdigest()


def assets_digest(layer: Any) -> str | None:
    """SHA-256 over the files the layer writes through Keras' ``save_assets`` hook, or None.

    Keras saves a layer's state that is not a weight (vocabularies, merges, lookup tables) as
    assets; any layer that has the hook, whatever package it comes from, is fingerprinted by what
    it writes.
    """
    import os
    import shutil
    import tempfile

    save_assets = getattr(layer, "save_assets", None)
    if not callable(save_assets):
        return None
    scratch = tempfile.mkdtemp(prefix="faithful_restore-assets-")
    try:
        try:
            save_assets(scratch)
        except Exception as e:  # noqa: BLE001 - a layer that cannot write its assets is still compared
            return f"unavailable: {type(e).__name__}"
        digest = hashlib.sha256()
        for root, dirs, files in os.walk(scratch):
            dirs.sort()
            for name in sorted(files):
                full = os.path.join(root, name)
                digest.update(os.path.relpath(full, scratch).replace(os.sep, "/").encode() + b"\0")
                with open(full, "rb") as f:
                    digest.update(hashlib.sha256(f.read()).digest())
        return digest.hexdigest()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def is_preprocessing(layer: Any) -> bool:
    """Keras preprocessing layers, and any layer holding state Keras saves as assets (tokenizers'
    vocabularies and merges, lookup tables), whatever package it comes from."""
    kind = type(layer).__name__
    return (
        "preprocessing" in type(layer).__module__
        or kind in ("Normalization", "Rescaling")
        or callable(getattr(layer, "save_assets", None))
    )


def _layer_state(layer: Any) -> dict[str, Any] | None:
    if not is_preprocessing(layer):
        return None
    kind = type(layer).__name__
    config = safe_config(layer)
    state: dict[str, Any] = {"kind": kind}
    assets = assets_digest(layer)
    if assets is not None:
        state["assets_sha256"] = assets
    if kind == "Normalization":
        state["axis"] = jsonable(config.get("axis"))
        state["invert"] = bool(config.get("invert", False))
        explicit = config.get("mean") is not None
        adapted = explicit
        if layer.built:
            state["mean"] = _floats(layer.mean)
            state["variance"] = _floats(layer.variance)
            # Keras leaves `count` at 0 after adapt(); an identity (mean 0, variance 1) layer is
            # what an un-adapted one computes: inputs pass through unnormalized.
            adapted = adapted or any(m != 0.0 for m in state["mean"]) or any(v != 1.0 for v in state["variance"])
        state["adapted"] = bool(adapted)
    elif kind == "Rescaling":
        state["scale"] = jsonable(config.get("scale"))
        state["offset"] = jsonable(config.get("offset"))
    elif kind == "Discretization":
        bins = getattr(layer, "bin_boundaries", None)
        state["bin_boundaries"] = jsonable(bins if bins is not None else config.get("bin_boundaries"))
        state["output_mode"] = config.get("output_mode")
    elif hasattr(layer, "get_vocabulary"):
        vocabulary = layer.get_vocabulary()
        state["vocabulary_size"] = len(vocabulary)
        state["vocabulary_sha256"] = vocabulary_digest(vocabulary)
        for key in (
            "mask_token",
            "oov_token",
            "num_oov_indices",
            "output_mode",
            "invert",
            "max_tokens",
            "standardize",
            "split",
            "ngrams",
            "output_sequence_length",
        ):
            if key in config:
                state[key] = jsonable(config[key])
    elif kind in ("Hashing", "CategoryEncoding"):
        for key in ("num_bins", "salt", "mask_value", "num_tokens", "output_mode"):
            if key in config:
                state[key] = jsonable(config[key])
    else:
        state["config"] = jsonable({k: v for k, v in config.items() if k != "name"})
    return state


def unadapted_normalization(states: list[dict[str, Any]]) -> list[str]:
    """Paths of Normalization layers that were never adapted and have no explicit statistics."""
    return [s["path"] for s in states if s["state"]["kind"] == "Normalization" and not s["state"].get("adapted")]


def layer_states(model: Any) -> list[dict[str, Any]]:
    """The state of every preprocessing layer in the model, nested models included."""
    out = []
    for path, layer in iter_layers(model):
        state = _layer_state(layer)
        if state is not None:
            out.append({"path": path, "class": class_name(layer), "state": state})
    return out


def _check_value(value: Any, where: str, depth: int = 0) -> Any:
    if depth > _MAX_VALUE_DEPTH:
        raise BundleError(f"preprocessing[{where}] nests deeper than {_MAX_VALUE_DEPTH} levels.")
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        f = float(value)
        if not np.isfinite(f):
            raise BundleError(f"preprocessing[{where}] is {f}, which JSON cannot hold; store it in a NumPy array.")
        return f
    if isinstance(value, (list, tuple)):
        return [_check_value(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        return {str(k): _check_value(v, f"{where}.{k}", depth + 1) for k, v in value.items()}
    raise BundleError(
        f"preprocessing[{where}] has type {type(value).__name__}; expected a NumPy array, a number, "
        "a string, or lists/dicts of those. Convert it (e.g. np.asarray) before saving."
    )


def as_mapping(preprocessing: Any) -> Any:
    """``save_bundle(preprocessing=)`` as the mapping a bundle holds: bare stats become ``{"stats": ...}``."""
    from faithful_restore.drift.stats import PreprocessingStats

    if isinstance(preprocessing, PreprocessingStats):
        return {"stats": preprocessing}
    return preprocessing


def encode_user(preprocessing: Any) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Splits the caller's mapping into manifest JSON and ``.npy`` files (relative path -> bytes)."""
    from faithful_restore.drift.stats import PreprocessingStats

    if preprocessing is None:
        return {}, {}
    preprocessing = as_mapping(preprocessing)
    if not isinstance(preprocessing, Mapping):
        raise BundleError(
            f"preprocessing must be a mapping of names to arrays/values, found "
            f"{type(preprocessing).__name__}; pass e.g. {{'mean': mean, 'std': std}}."
        )
    entries: dict[str, Any] = {}
    files: dict[str, bytes] = {}
    for i, (key, value) in enumerate(preprocessing.items()):
        if not isinstance(key, str):
            raise BundleError(f"preprocessing keys must be strings, found {key!r}.")
        if isinstance(value, PreprocessingStats):
            value = value.to_dict()  # plain JSON: check_inputs finds it by its "format" key
        if hasattr(value, "numpy") and not isinstance(value, np.ndarray):
            value = np.asarray(value.numpy())
        if isinstance(value, np.ndarray):
            if value.dtype.hasobject:
                if all(isinstance(v, (str, bytes)) for v in value.reshape(-1)):
                    value = value.astype(bytes if value.size and isinstance(value.flat[0], bytes) else str)
                else:
                    raise BundleError(
                        f"preprocessing[{key!r}] is an object array; only numeric, bool and string "
                        "arrays can be stored without pickle. Convert it to a plain dtype."
                    )
            rel = f"{ARRAY_DIR}/{i:04d}.npy"
            buf = io.BytesIO()
            np.save(buf, value, allow_pickle=False)
            files[rel] = buf.getvalue()
            entries[key] = {"kind": "array", "file": rel, "dtype": value.dtype.str, "shape": list(value.shape)}
        else:
            entries[key] = {"kind": "value", "value": _check_value(value, key)}
    return entries, files


def load_npy(data: bytes, where: str) -> np.ndarray:
    """Reads .npy bytes without pickle; anything else is a BundleError."""
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as e:  # object arrays need pickle, which bundles never use
        raise BundleError(f"{where} is not a plain NumPy array ({e}); refusing it (bundles never use pickle).") from e
    except (OSError, EOFError) as e:
        raise BundleError(f"{where} is not a valid .npy file ({e}); the bundle is damaged.") from e


def decode_user(entries: Mapping[str, Any], read: Any) -> dict[str, Any]:
    """Rebuilds the caller's mapping; ``read(rel_path) -> bytes`` reads a bundle file."""
    from faithful_restore.drift.schema import FORMAT as STATS_FORMAT
    from faithful_restore.drift.stats import PreprocessingStats

    out: dict[str, Any] = {}
    for key, entry in entries.items():
        if entry["kind"] == "array":
            out[key] = load_npy(read(entry["file"]), entry["file"])
        elif isinstance(entry["value"], dict) and entry["value"].get("format") == STATS_FORMAT:
            out[key] = PreprocessingStats.from_dict(entry["value"])
        else:
            out[key] = entry["value"]
    return out


def stats_in_manifest(manifest: Any) -> PreprocessingStats | None:
    found = {
        key: PreprocessingStats.from_dict(entry["value"])
        for key, entry in manifest.preprocessing.get("user", {}).items()
        if entry.get("kind") == "value"
        and isinstance(entry.get("value"), dict)
        and entry["value"].get("format") == FORMAT
    }
    return pick_stats(found)


def pick_stats(found: Mapping[str, PreprocessingStats]) -> PreprocessingStats | None:
    """The one rule for which saved statistics inputs are checked against.

    None when there are none (only the signature is checked); the entry named ``"stats"`` when
    there are several; a BundleError when several are saved and none is named ``"stats"``.
    """
    if not found:
        return None
    if len(found) > 1 and "stats" not in found:
        raise BundleError(
            f"the bundle holds several preprocessing statistics {sorted(found)} and none is named 'stats'; "
            "pass the one to check against: check_inputs(bundle.preprocessing[name], x)."
        )
    return found["stats"] if "stats" in found else next(iter(found.values()))
