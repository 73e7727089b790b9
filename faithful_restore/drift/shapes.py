"""A batch's structure, shapes and dtypes against the model's recorded input signature."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from faithful_restore.drift.batches import to_array
from faithful_restore.drift.schema import InputRecord, Key
from faithful_restore.drift.stats import PreprocessingStats
from faithful_restore.errors import BundleError
from faithful_restore.findings import Cause, Finding
from faithful_restore.format.records import Signature

_PLAIN = "x"  # how findings name a plain (non-dict) batch


def _raw_parts(x: Any, findings: list[Finding]) -> dict[Key, np.ndarray] | None:
    """The batch as {key: array}, any rank; conversion problems become findings."""
    if isinstance(x, tuple) and len(x) in (2, 3):
        x = x[0]
    items: dict[Key, Any] = dict(x) if isinstance(x, Mapping) else {None: x}
    out: dict[Key, np.ndarray] = {}
    for key, value in items.items():
        path = _PLAIN if key is None else str(key)
        if key is not None and not isinstance(key, str):
            findings.append(_signature_finding("error", path, "string keys", repr(key), "input names must be strings."))
            continue
        try:
            if hasattr(value, "numpy") and not isinstance(value, np.ndarray):
                value = value.numpy()
            array = np.asarray(value)
            if array.dtype.kind == "O" and array.size and isinstance(array.flat[0], (list, tuple, np.ndarray)):
                raise ValueError("an object array of sequences")
        except (ValueError, TypeError) as e:
            findings.append(
                _signature_finding(
                    "error",
                    path,
                    "a dense array",
                    type(value).__name__,
                    f"{path} cannot be read as a dense array ({e}); pad ragged rows to one length.",
                )
            )
            continue
        out[key] = array
    return out if out or not findings else None


def _family(dtype: np.dtype, array: np.ndarray | None = None) -> str:
    kind = dtype.kind
    if kind == "f":
        return "float"
    if kind in "iu":
        return "int"
    if kind == "b":
        return "bool"
    if kind in "US":
        return "string"
    if kind == "O" and array is not None and all(isinstance(v, (str, bytes)) for v in array.reshape(-1)):
        return "string"
    return "other"


def _record_family(dtype: str) -> str:
    if dtype == "string":
        return "string"
    try:
        return _family(np.dtype(dtype))
    except TypeError:
        return "other"


def _check_signature(signature: Signature, raw: dict[Key, np.ndarray], findings: list[Finding]) -> None:
    records = list(signature.inputs)
    if not records:
        return
    names = [r.name for r in records]
    pairs = []
    if None in raw:
        if len(records) != 1:
            findings.append(
                _signature_finding(
                    "error",
                    _PLAIN,
                    names,
                    "one array",
                    f"the model takes {len(records)} inputs {names} but got one array; pass a dict {{name: array}}.",
                )
            )
            return
        pairs.append((records[0], raw[None]))
    else:
        for record in records:
            if record.name in raw:
                pairs.append((record, raw[record.name]))
            else:
                findings.append(
                    _signature_finding(
                        "error",
                        record.name,
                        record.to_dict(),
                        None,
                        f"input {record.name!r} is missing; pass it (the model takes {names}).",
                    )
                )
        for key in raw:
            if key not in names:
                findings.append(
                    _signature_finding(
                        "warning",
                        str(key),
                        names,
                        str(key),
                        f"the model has no input {key!r}; rename it to one of {names} or drop it.",
                    )
                )
    for record, array in pairs:
        given = shape = list(array.shape)
        if record.shape is not None:
            expected = [None if d is None else int(d) for d in record.shape]
            # Keras adds or drops a trailing axis of size 1 to match an input's rank.
            if len(shape) == len(expected) - 1 and expected[-1] == 1:
                shape = [*shape, 1]
            elif len(shape) == len(expected) + 1 and shape[-1] == 1:
                shape = shape[:-1]
            wrong_dims = [i for i, (e, f) in enumerate(zip(expected, shape)) if i > 0 and e is not None and e != f]
            if len(expected) != len(shape) or wrong_dims:
                findings.append(
                    _signature_finding(
                        "error",
                        record.name,
                        expected,
                        given,
                        f"input {record.name!r} has shape {tuple(given)} but the model takes "
                        f"{tuple(expected)} (None: any size); reshape the batch to match.",
                    )
                )
        want, got = _record_family(record.dtype), _family(array.dtype, array)
        numbers = ("float", "int", "bool")
        lossy = want in ("int", "bool") and got == "float"
        if want == got or want == "other" or (want in numbers and got in numbers and not lossy):
            continue
        findings.append(
            _signature_finding(
                "warning" if lossy else "error",
                record.name,
                record.dtype,
                _dtype_name(array),
                f"input {record.name!r} holds {_dtype_name(array)} values but the model takes {record.dtype}; "
                + (
                    "they will be cast, losing fractions: pass the integer ids themselves."
                    if lossy
                    else "pass the values the model was built for (e.g. raw strings, not encoded ids, or vice versa)."
                ),
            )
        )


def _match_inputs(
    stats: PreprocessingStats,
    raw: dict[Key, np.ndarray],
    signature: Signature | None,
    findings: list[Finding],
) -> dict[Key, tuple[InputRecord, np.ndarray]]:
    """Pairs each input the stats describe with the batch's array for it, checking rank and width."""
    pairs: dict[Key, tuple[InputRecord, np.ndarray]] = {}
    known = {i.key for i in stats.inputs}
    only = stats.inputs[0].key if len(stats.inputs) == 1 else ""
    if len(raw) == 1 and only != "" and (None in raw or only is None or only in raw):
        # One input each: a dict of one entry and a plain array are the same thing.
        pairs[stats.inputs[0].key] = (stats.inputs[0], next(iter(raw.values())))
    else:
        if None in raw:
            findings.append(
                _signature_finding(
                    "error",
                    _PLAIN,
                    sorted(str(k) for k in known),
                    "one array",
                    f"training data had inputs {sorted(str(k) for k in known)} but got one array; "
                    "pass a dict {name: array}.",
                )
            )
            return {}
        for record in stats.inputs:
            if record.key is None:
                findings.append(
                    _signature_finding(
                        "error",
                        _PLAIN,
                        "one array",
                        sorted(str(k) for k in raw),
                        "training data was one array but got a dict; pass the array itself.",
                    )
                )
                return {}
            if record.key in raw:
                pairs[record.key] = (record, raw[record.key])
            elif signature is None or record.key not in {r.name for r in signature.inputs}:
                # (A missing input the signature names was reported by the signature check.)
                findings.append(
                    _signature_finding(
                        "error",
                        record.key,
                        record.to_dict(),
                        None,
                        f"input {record.key!r} is missing; pass it (training data had {sorted(map(str, known))}).",
                    )
                )
        for key in raw:
            # With a signature, the signature check judges inputs the training data did not have.
            if key not in known and signature is None:
                findings.append(
                    _signature_finding(
                        "warning",
                        str(key),
                        sorted(str(k) for k in known),
                        str(key),
                        f"input {key!r} was not in the training data; rename it or drop it.",
                    )
                )
    out: dict[Key, tuple[InputRecord, np.ndarray]] = {}
    for key, (record, value) in pairs.items():
        path = _PLAIN if key is None else key
        try:
            array = to_array(value, path)
        except BundleError as e:
            findings.append(_signature_finding("error", path, f"rank {record.rank}", list(np.shape(value)), str(e)))
            continue
        width = 1 if array.ndim == 1 else int(array.shape[1])
        if width != record.width:
            findings.append(
                _signature_finding(
                    "error",
                    path,
                    {"features": record.width},
                    {"features": width},
                    f"{path} has {width} features per row but training had {record.width}; "
                    "pass the same columns, in the same order, as at training.",
                )
            )
            continue
        out[key] = (record, array)
    return out


def _dtype_name(array: np.ndarray) -> str:
    return "string" if array.dtype.kind in "US" or _family(array.dtype, array) == "string" else array.dtype.name


def _signature_finding(severity: str, path: str, expected: Any, found: Any, message: str) -> Finding:
    return Finding(Cause.INPUT_SIGNATURE, severity, path, expected, found, message)
