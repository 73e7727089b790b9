"""Reading data as batches of NumPy columns: arrays, dicts, ``(x, y)`` tuples, ``tf.data`` and iterables."""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from faithful_restore.drift.schema import _UNSUPPORTED_TYPES, Key
from faithful_restore.errors import BundleError


def _iter_batches(data: Any, batch_size: int) -> Iterator[Any]:
    if isinstance(data, (str, bytes, numbers.Number)) or data is None:
        raise BundleError(
            f"data must be an array, a tf.data.Dataset or an iterable of batches, found {type(data).__name__}."
        )
    if type(data).__name__ in _UNSUPPORTED_TYPES:
        raise BundleError(f"data is a {type(data).__name__}; convert it to a dense array first.")
    if hasattr(data, "numpy") and hasattr(data, "dtype") and not isinstance(data, np.ndarray):
        data = np.asarray(data.numpy())
    if isinstance(data, np.ndarray) or isinstance(data, Mapping):
        whole = split_batch(data, "data")
        rows = batch_rows(whole, "data")
        for start in range(0, max(rows, 1), batch_size):
            if None in whole:
                yield whole[None][start : start + batch_size]
            else:
                yield {k: v[start : start + batch_size] for k, v in whole.items()}
        return
    if hasattr(data, "as_numpy_iterator") and hasattr(data, "element_spec"):
        yield from data.as_numpy_iterator()
        return
    try:
        iterator = iter(data)
    except TypeError as e:
        raise BundleError(
            f"data must be an array, a tf.data.Dataset or an iterable of batches, found {type(data).__name__}."
        ) from e
    yield from iterator


def split_batch(element: Any, where: str) -> dict[Key, np.ndarray]:
    """One batch as {input key: array of rank 1 or 2}; key None for a plain array.

    Args:
        element: an array or tensor, a dict of them, or an (x, y[, sample_weight]) tuple.
        where: how error messages name the batch.

    Returns:
        The batch's inputs.

    Raises:
        BundleError: for a structure, rank or dtype that cannot be summarized.
    """
    if isinstance(element, tuple):
        if len(element) not in (2, 3):
            raise BundleError(
                f"{where} is a tuple of {len(element)} items; expected an array, a dict, or an (x, y) or "
                "(x, y, sample_weight) tuple."
            )
        element = element[0]
    if isinstance(element, Mapping):
        if not element:
            raise BundleError(f"{where} is an empty dict; expected at least one input.")
        out: dict[Key, np.ndarray] = {}
        for key, value in element.items():
            if not isinstance(key, str):
                raise BundleError(f"{where} has dict key {key!r}; input names must be strings.")
            out[key] = to_array(value, f"{where}[{key!r}]")
        return out
    if isinstance(element, (list, tuple)) and element and _is_array_like(element[0]) and np.ndim(element[0]) > 1:
        raise BundleError(f"{where} is a list of arrays (several inputs?); pass a dict {{name: array}} instead.")
    return {None: to_array(element, where)}


def _is_array_like(value: Any) -> bool:
    return isinstance(value, np.ndarray) or hasattr(value, "numpy")


def to_array(value: Any, where: str) -> np.ndarray:
    """``value`` as a NumPy array of rank 1 or 2 with a numeric or string dtype.

    Raises:
        BundleError: for ragged, sparse, scalar, rank > 2, or unsupported dtypes.
    """
    if type(value).__name__ in _UNSUPPORTED_TYPES:
        raise BundleError(f"{where} is a {type(value).__name__}; convert it to a dense array (e.g. .to_tensor()).")
    if hasattr(value, "numpy") and not isinstance(value, np.ndarray):
        value = value.numpy()
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as e:
        raise BundleError(
            f"{where} is ragged (rows of different lengths): {e}; pad the rows to one length or pass a dict."
        ) from e
    if array.ndim == 0:
        raise BundleError(
            f"{where} is a scalar; expected a batch (rows x features, or one value per row). An iterable "
            "is read as a sequence of batches: wrap a list of values in np.asarray(...)."
        )
    if array.ndim > 2:
        raise BundleError(
            f"{where} has shape {array.shape}; expected rows x features (rank 1 or 2). Reshape it, e.g. "
            "x.reshape(len(x), -1), to summarize each element as a feature."
        )
    if array.dtype.kind not in "fiubUSO":
        raise BundleError(f"{where} has dtype {array.dtype}; expected numbers or strings.")
    if array.dtype.kind == "O" and array.size:
        # Ragged input can also come out as a 1-D object array of lists.
        first = array.flat[0]
        if isinstance(first, (list, tuple, np.ndarray)):
            raise BundleError(f"{where} is ragged (an object array of sequences); pad the rows to one length.")
    return array


def batch_rows(parts: Mapping[Key, np.ndarray], where: str) -> int:
    """The number of rows of a split batch.

    Raises:
        BundleError: when the inputs disagree.
    """
    counts = {k: int(v.shape[0]) for k, v in parts.items()}
    if len(set(counts.values())) > 1:
        raise BundleError(f"{where}: inputs have different numbers of rows {counts}; every input needs one per row.")
    return next(iter(counts.values()))


def column(array: np.ndarray, index: int) -> np.ndarray:
    return array if array.ndim == 1 else array[:, index]


def column_family(col: np.ndarray, where: str) -> str:
    """ "numeric", "integer" (also numeric) or "string" for one column.

    Raises:
        BundleError: for an object column that does not hold only strings.
    """
    kind = col.dtype.kind
    if kind == "f":
        return "numeric"
    if kind in "iub":
        return "integer"
    if kind in "US":
        return "string"
    bad = next((v for v in col if not isinstance(v, (str, bytes))), None)
    if bad is not None:
        raise BundleError(
            f"{where} is an object array holding {type(bad).__name__} values, not strings; "
            "convert it to a numeric or string dtype."
        )
    return "string"


def tokens(col: np.ndarray) -> list[str]:
    """A categorical column's values as tokens: strings as text, integers as decimal strings."""
    kind = col.dtype.kind
    if kind in "iub":
        return [str(int(v)) for v in col]
    if kind == "f":
        return [str(int(v)) if math.isfinite(v) and float(v).is_integer() else repr(float(v)) for v in col]
    return [_text(v) for v in col]


def _text(value: Any) -> str:
    if isinstance(value, (bytes, np.bytes_)):
        return bytes(value).decode("utf-8", "backslashreplace")
    return str(value)
