"""Synthesized probe batches for models whose caller gave no sample inputs.

Floats are standard normal, integers stay below what the model's Embedding / lookup layers
accept, and strings are drawn from the model's own vocabularies; everything is seeded.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from faithful_restore.bundle.types import Bundle
from faithful_restore.capture import preprocessing as _preprocessing
from faithful_restore.drift import guard as _guard
from faithful_restore.drift.guard import Thresholds
from faithful_restore.drift.stats import PreprocessingStats
from faithful_restore.errors import ArgumentTypeError, BundleError
from faithful_restore.findings import Report
from faithful_restore.format.manifest import Manifest
from faithful_restore.format.records import Signature
from faithful_restore.runtime.keras_internals import iter_layers

BATCH = 8
_FREE_DIM = 4


def _integer_bound(model: Any) -> int:
    bounds = []
    for _path, layer in iter_layers(model):
        kind = type(layer).__name__
        if kind == "Embedding":
            bounds.append(int(layer.input_dim))
        elif kind == "IntegerLookup" or kind == "CategoryEncoding":
            size = getattr(layer, "num_tokens", None) or (layer.vocabulary_size() if kind == "IntegerLookup" else None)
            if size:
                bounds.append(int(size))
    return min(bounds) if bounds else 10


def _vocabulary(model: Any) -> list[str]:
    for _path, layer in iter_layers(model):
        if type(layer).__name__ in ("TextVectorization", "StringLookup") and hasattr(layer, "get_vocabulary"):
            tokens = [t.decode() if isinstance(t, bytes) else str(t) for t in layer.get_vocabulary()]
            tokens = [t for t in tokens if t and not t.startswith("[")]
            if tokens:
                return tokens
    return ["alpha", "beta", "gamma", "delta"]


def synthesize(model: Any, signature: Signature, seed: int = 0) -> Any:
    """A seeded batch matching ``signature``: one array, or a list/dict for several inputs."""
    rng = np.random.default_rng(seed)
    arrays = []
    if not signature.inputs:
        raise BundleError(
            f"model {getattr(model, 'name', '?')!r} declares no inputs, so no probe batch can be "
            "synthesized; pass sample_inputs."
        )
    for record in signature.inputs:
        if record.shape is None:
            raise BundleError(f"input {record.name!r} has unknown rank; pass sample_inputs.")
        shape = (BATCH, *[_FREE_DIM if d is None else d for d in record.shape[1:]])
        dtype = record.dtype
        if dtype == "string":
            vocab = _vocabulary(model)
            words = rng.choice(vocab, size=(*shape, 3))
            arrays.append(np.array([" ".join(w) for w in words.reshape(-1, 3)], dtype=bytes).reshape(shape))
        elif dtype.startswith(("int", "uint")):
            arrays.append(rng.integers(0, _integer_bound(model), size=shape).astype(dtype))
        elif dtype == "bool":
            arrays.append(rng.integers(0, 2, size=shape).astype(bool))
        else:
            arrays.append(rng.normal(size=shape).astype(dtype if dtype != "bfloat16" else "float32"))
    if len(arrays) == 1:
        return arrays[0]
    inputs = getattr(model, "_inputs_struct", None)
    if isinstance(inputs, dict):
        return {r.name: a for r, a in zip(signature.inputs, arrays)}
    return arrays


def _resolve(obj: Any) -> tuple[PreprocessingStats | None, Signature | None]:
    """The statistics and signature to check against; stats None for a bundle saved without any."""
    if isinstance(obj, Bundle):
        return obj.input_stats(), obj.manifest.signature if obj.manifest is not None else None
    if isinstance(obj, PreprocessingStats):
        return obj, None
    if isinstance(obj, Mapping):
        if obj.get("format") != "faithful_restore.bundle":
            return PreprocessingStats.from_dict(dict(obj)), None  # its errors say what a stats dict needs
        obj = Manifest.from_dict(dict(obj))
    if isinstance(obj, Manifest):
        return _preprocessing.stats_in_manifest(obj), obj.signature
    raise ArgumentTypeError(
        f"check_inputs needs PreprocessingStats, their to_dict(), or a bundle manifest; found {type(obj).__name__}."
    )


def check_inputs(
    stats_or_manifest: Any,
    x: Any,
    *,
    thresholds: Thresholds | Mapping[str, Any] | None = None,
    signature: Signature | None = None,
) -> Report:
    """Compares a batch of inputs with what training saw.

    Args:
        stats_or_manifest: a :class:`PreprocessingStats`, the dict its ``to_dict()`` returned, or a
            bundle's :class:`~faithful_restore.Manifest` (or manifest dict) whose
            ``preprocessing`` mapping holds such a dict (its signature is then used too).
        x: the batch: an array or tensor (rows x features), a dict of them, or an ``(x, y)`` tuple.
        thresholds: a :class:`Thresholds`, or a dict overriding some of the defaults.
        signature: the model's signature, to check input names, shapes and dtypes.

    Returns:
        A report whose findings have cause ``input_signature`` or ``preprocessing``, most severe
        first; ``report.ok`` is False when any is an error.

    Raises:
        BundleError: the stats, manifest or thresholds are malformed (the batch itself never
            raises: its problems are findings).
    """
    stats, manifest_signature = _resolve(stats_or_manifest)
    return _guard.check_batch(
        stats, x, signature=signature if signature is not None else manifest_signature, thresholds=thresholds
    )
