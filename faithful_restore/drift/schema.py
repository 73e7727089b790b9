"""The JSON schema of training-data statistics: per-feature summaries and their strict readers."""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from faithful_restore.errors import ArgumentError, BundleError

FORMAT = "faithful_restore.preprocessing_stats"


FORMAT_VERSION = "1.0"


DEFAULT_QUANTILES = (0.01, 0.25, 0.5, 0.75, 0.99)


# The guard's tests use these levels, so they are always computed.
GUARD_QUANTILES = DEFAULT_QUANTILES


DISTINCT_SKETCH_SIZE = 1024


_DKW_CONFIDENCE = 0.999


_VERSION = re.compile(r"^(\d{1,4})\.(\d{1,4})$")


_COMMON_KEYS = ("kind", "name", "input", "column", "dtype", "count")


_NUMERIC_KEYS = (
    *_COMMON_KEYS,
    *("nan_count", "inf_count", "mean", "std", "min", "max", "quantiles", "quantile_rank_error"),
)


_CATEGORICAL_KEYS = (*_COMMON_KEYS, "vocabulary", "count_error", "distinct", "distinct_exact")


_UNSUPPORTED_TYPES = ("RaggedTensor", "SparseTensor", "RaggedTensorValue", "SparseTensorValue")


Key = str | None  # an input's key: the dict key, or None for a plain array


def dkw_margin(n: int) -> float:
    """The Dvoretzky-Kiefer-Wolfowitz bound: with 99.9% confidence, the empirical distribution of
    ``n`` independent values is within this distance (in rank) of the true one everywhere."""
    return math.sqrt(math.log(2.0 / (1.0 - _DKW_CONFIDENCE)) / (2.0 * n)) if n > 0 else 1.0


def quantile_rank_error(sample_size: int, count: int) -> float:
    """The rank error bound of quantiles computed from a sample (0.0 when every value was kept)."""
    return 0.0 if count <= sample_size else dkw_margin(sample_size)


def feature_path(name: str, key: Key, column: int) -> str:
    """How findings name a feature: ``feature[3]`` for an unnamed column, else its name."""
    return f"feature[{column}]" if key is None and name == str(column) else name


@dataclass(frozen=True)
class InputRecord:
    """One input the statistics were computed from: a plain array (key None) or one dict entry.

    Attributes:
        key: the dict key, or None for a plain array.
        rank: 1 (one value per row) or 2 (rows x width).
        width: the number of features (columns) this input holds.
    """

    key: Key
    rank: int
    width: int

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "rank": self.rank, "width": self.width}

    @classmethod
    def from_dict(cls, data: Any) -> InputRecord:
        if not isinstance(data, dict) or set(data) != {"key", "rank", "width"}:
            raise BundleError(f"a stats input entry must have exactly key, rank, width; found {data!r}.")
        key = data["key"]
        if key is not None and not isinstance(key, str):
            raise BundleError(f"a stats input key must be a string or null, found {key!r}.")
        rank, width = data["rank"], data["width"]
        if rank not in (1, 2) or isinstance(rank, bool):
            raise BundleError(f"stats input {key!r}: rank must be 1 or 2, found {rank!r}.")
        if not _is_int(width) or width < 1 or (rank == 1 and width != 1):
            raise BundleError(f"stats input {key!r}: width must be a positive integer (1 for rank 1), found {width!r}.")
        return cls(key, rank, width)


@dataclass(frozen=True)
class NumericSummary:
    """What training saw of one numeric feature.

    Attributes:
        name: the feature's name ("0", "1", ... for unnamed columns).
        input: the dict key of the input holding it, or None for a plain array.
        column: its column within that input.
        dtype: the NumPy dtype of the first batch, e.g. "float32".
        count: finite values seen.
        nan_count: NaN values seen.
        inf_count: infinite values seen.
        mean: mean of the finite values (None when there were none).
        std: population standard deviation (ddof=0, like ``np.std`` and Keras' Normalization).
        min: smallest finite value.
        max: largest finite value.
        quantiles: (q, value) pairs, q ascending.
        quantile_rank_error: 0.0 when exact, else the 99.9%-confidence DKW bound on rank error.
    """

    name: str
    input: Key
    column: int
    dtype: str
    count: int
    nan_count: int
    inf_count: int
    mean: float | None
    std: float | None
    min: float | None
    max: float | None
    quantiles: tuple[tuple[float, float], ...]
    quantile_rank_error: float

    kind: ClassVar[str] = "numeric"

    @property
    def path(self) -> str:
        return feature_path(self.name, self.input, self.column)

    @property
    def rows(self) -> int:
        return self.count + self.nan_count + self.inf_count

    def quantile(self, q: float) -> float | None:
        """The stored quantile ``q``, or None when it was not computed."""
        for stored, value in self.quantiles:
            if abs(stored - q) < 1e-12:
                return value
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "input": self.input,
            "column": self.column,
            "dtype": self.dtype,
            "count": self.count,
            "nan_count": self.nan_count,
            "inf_count": self.inf_count,
            "mean": self.mean,
            "std": self.std,
            "min": self.min,
            "max": self.max,
            "quantiles": [[q, v] for q, v in self.quantiles],
            "quantile_rank_error": self.quantile_rank_error,
        }

    @classmethod
    def from_dict(cls, data: Any) -> NumericSummary:
        keys = set(_NUMERIC_KEYS)
        if not isinstance(data, dict) or set(data) != keys:
            raise BundleError(f"a numeric feature entry must have exactly {sorted(keys)}; found {_keys(data)}.")
        name = _feature_name(data)
        counts = [_count(data, k, name) for k in ("count", "nan_count", "inf_count")]
        values = {k: _finite(data[k], f"feature {name!r} {k}", nullable=True) for k in ("mean", "std", "min", "max")}
        nulls = {v is None for v in values.values()}
        if nulls != {counts[0] == 0}:
            raise BundleError(
                f"feature {name!r}: mean, std, min and max must all be numbers when count > 0 and all null "
                f"when it is 0; found count {counts[0]} and {values}."
            )
        if counts[0]:
            lo, hi, std = values["min"], values["max"], values["std"]
            assert lo is not None and hi is not None and std is not None
            if lo > hi or std < 0:
                raise BundleError(f"feature {name!r}: needs min <= max and std >= 0, found {values}.")
        raw_q = data["quantiles"]
        if not isinstance(raw_q, list):
            raise BundleError(f"feature {name!r}: quantiles must be a list of [q, value] pairs, found {raw_q!r}.")
        quantiles = []
        for pair in raw_q:
            if not isinstance(pair, list) or len(pair) != 2:
                raise BundleError(f"feature {name!r}: a quantile must be a [q, value] pair, found {pair!r}.")
            q = _finite(pair[0], f"feature {name!r} quantile level")
            v = _finite(pair[1], f"feature {name!r} quantile value")
            assert q is not None and v is not None
            if not 0.0 <= q <= 1.0:
                raise BundleError(f"feature {name!r}: quantile level {q!r} is outside [0, 1].")
            quantiles.append((q, v))
        if [q for q, _ in quantiles] != sorted({q for q, _ in quantiles}):
            raise BundleError(f"feature {name!r}: quantile levels must be strictly ascending, found {raw_q!r}.")
        if counts[0] == 0 and quantiles:
            raise BundleError(f"feature {name!r}: has quantiles but no finite values.")
        error = _finite(data["quantile_rank_error"], f"feature {name!r} quantile_rank_error")
        assert error is not None
        if not 0.0 <= error <= 1.0:
            raise BundleError(f"feature {name!r}: quantile_rank_error must be in [0, 1], found {error!r}.")
        return cls(
            name,
            _input_key(data, name),
            _count(data, "column", name),
            _dtype(data, name),
            counts[0],
            counts[1],
            counts[2],
            values["mean"],
            values["std"],
            values["min"],
            values["max"],
            tuple(quantiles),
            error,
        )


@dataclass(frozen=True)
class CategoricalSummary:
    """What training saw of one categorical feature (strings or integer ids).

    Attributes:
        name: the feature's name.
        input: the dict key of the input holding it, or None for a plain array.
        column: its column within that input.
        dtype: "string", or the NumPy dtype of integer ids (tokens are then their decimal strings).
        count: values seen.
        vocabulary: (token, count) pairs, most frequent first; at most ``max_vocabulary`` of them.
        count_error: how much any stored count may undercount (0: counts and vocabulary are exact).
        distinct: distinct tokens seen (estimated when ``distinct_exact`` is False).
        distinct_exact: whether ``distinct`` is exact.
    """

    name: str
    input: Key
    column: int
    dtype: str
    count: int
    vocabulary: tuple[tuple[str, int], ...]
    count_error: int
    distinct: int
    distinct_exact: bool

    kind: ClassVar[str] = "categorical"

    @property
    def path(self) -> str:
        return feature_path(self.name, self.input, self.column)

    @property
    def rows(self) -> int:
        return self.count

    @property
    def tail_fraction(self) -> float:
        """An upper bound on the fraction of training values whose token is not in ``vocabulary``."""
        if not self.count:
            return 0.0
        return max(0.0, 1.0 - sum(c for _, c in self.vocabulary) / self.count)

    @property
    def expected_oov_rate(self) -> float:
        """A conservative (high) estimate of the out-of-vocabulary rate of fresh training-like data.

        The tail the summary dropped, plus the Good-Turing estimate of the mass of tokens never seen
        (the fraction of values whose token was seen exactly once) and four of its standard errors
        (Esty's approximation), since a small sample of a long-tailed vocabulary estimates it
        poorly. When the summary overflowed, its dropped tail stands in for unseen tokens too.
        """
        if not self.count:
            return 0.0
        rate = self.tail_fraction
        if self.count_error == 0:
            n1 = sum(1 for _, c in self.vocabulary if c == 1)
            n2 = sum(1 for _, c in self.vocabulary if c == 2)
            good_turing = n1 / self.count
            error = math.sqrt(n1 * (1.0 - good_turing) + 2.0 * n2) / self.count
            rate += good_turing + 4.0 * error
        return min(1.0, rate)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "input": self.input,
            "column": self.column,
            "dtype": self.dtype,
            "count": self.count,
            "vocabulary": [[t, c] for t, c in self.vocabulary],
            "count_error": self.count_error,
            "distinct": self.distinct,
            "distinct_exact": self.distinct_exact,
        }

    @classmethod
    def from_dict(cls, data: Any) -> CategoricalSummary:
        keys = set(_CATEGORICAL_KEYS)
        if not isinstance(data, dict) or set(data) != keys:
            raise BundleError(f"a categorical feature entry must have exactly {sorted(keys)}; found {_keys(data)}.")
        name = _feature_name(data)
        count = _count(data, "count", name)
        raw = data["vocabulary"]
        if not isinstance(raw, list):
            raise BundleError(f"feature {name!r}: vocabulary must be a list of [token, count] pairs.")
        vocabulary = []
        for pair in raw:
            if (
                not isinstance(pair, list)
                or len(pair) != 2
                or not isinstance(pair[0], str)
                or not _is_int(pair[1])
                or pair[1] < 1
            ):
                raise BundleError(f"feature {name!r}: a vocabulary entry must be [token, count >= 1], found {pair!r}.")
            vocabulary.append((pair[0], pair[1]))
        if len({t for t, _ in vocabulary}) != len(vocabulary):
            raise BundleError(f"feature {name!r}: the vocabulary lists a token twice.")
        if sum(c for _, c in vocabulary) > count:
            raise BundleError(f"feature {name!r}: vocabulary counts add up to more than count {count}.")
        if not isinstance(data["distinct_exact"], bool):
            raise BundleError(f"feature {name!r}: distinct_exact must be true or false.")
        distinct = _count(data, "distinct", name)
        count_error = _count(data, "count_error", name)
        if data["distinct_exact"] and count_error == 0 and distinct != len(vocabulary):
            raise BundleError(
                f"feature {name!r}: an exact vocabulary of {len(vocabulary)} tokens disagrees with distinct {distinct}."
            )
        return cls(
            name,
            _input_key(data, name),
            _count(data, "column", name),
            _dtype(data, name),
            count,
            tuple(vocabulary),
            count_error,
            distinct,
            data["distinct_exact"],
        )


FeatureSummary = NumericSummary | CategoricalSummary


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _keys(data: Any) -> Any:
    return sorted(data) if isinstance(data, dict) else type(data).__name__


def _key_list(layout: Mapping[Key, Any]) -> list[str]:
    return ["<array>" if k is None else k for k in layout]


def _levels(quantiles: Sequence[float]) -> list[float]:
    try:
        levels = [float(q) for q in quantiles]
    except (TypeError, ValueError) as e:
        raise ArgumentError(f"quantiles must be numbers in [0, 1], found {quantiles!r}.") from e
    if not all(0.0 <= q <= 1.0 for q in levels):
        raise BundleError(f"quantiles must be numbers in [0, 1], found {quantiles!r}.")
    return sorted(set(levels) | set(GUARD_QUANTILES))


def _feature_name(data: dict[str, Any]) -> str:
    name = data["name"]
    if not isinstance(name, str) or not name:
        raise BundleError(f"a stats feature name must be a non-empty string, found {name!r}.")
    return name


def _input_key(data: dict[str, Any], name: str) -> Key:
    key = data["input"]
    if key is not None and not isinstance(key, str):
        raise BundleError(f"feature {name!r}: input must be a string or null, found {key!r}.")
    return key


def _dtype(data: dict[str, Any], name: str) -> str:
    dtype = data["dtype"]
    if not isinstance(dtype, str):
        raise BundleError(f"feature {name!r}: dtype must be a string, found {dtype!r}.")
    if dtype != "string":
        try:
            kind = np.dtype(dtype).kind
        except TypeError as e:
            raise BundleError(f"feature {name!r}: unknown dtype {dtype!r}.") from e
        if kind not in "fiub":
            raise BundleError(f"feature {name!r}: dtype {dtype!r} is neither numeric nor 'string'.")
    return dtype


def _count(data: dict[str, Any], key: str, name: str) -> int:
    value = data[key]
    if not _is_int(value) or value < 0:
        raise BundleError(f"{name!r}: {key} must be a non-negative integer, found {value!r}.")
    return int(value)


def _finite(value: Any, what: str, nullable: bool = False) -> float | None:
    if value is None and nullable:
        return None
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not math.isfinite(value):
        raise BundleError(f"{what} must be a finite number, found {value!r}.")
    return float(value)


def _check_layout(
    inputs: tuple[InputRecord, ...], features: list[FeatureSummary], rows: int, max_vocabulary: int
) -> None:
    keys = [i.key for i in inputs]
    if len(set(keys)) != len(keys) or (None in keys and len(keys) > 1):
        raise BundleError(f"preprocessing stats inputs {keys!r} must be one plain array or distinct dict keys.")
    expected = [(i.key, j) for i in inputs for j in range(i.width)]
    found = [(f.input, f.column) for f in features]
    if found != expected:
        raise BundleError(
            f"preprocessing stats features cover (input, column) {found!r} but the inputs imply {expected!r}; "
            "the stats are damaged."
        )
    names = [f.name for f in features]
    if len(set(names)) != len(names):
        raise BundleError(f"preprocessing stats name a feature twice: {names!r}.")
    for f in features:
        if f.rows != rows:
            raise BundleError(f"feature {f.name!r} accounts for {f.rows} rows but the stats have {rows}.")
        if isinstance(f, CategoricalSummary) and len(f.vocabulary) > max_vocabulary:
            raise BundleError(
                f"feature {f.name!r} stores {len(f.vocabulary)} tokens, more than max_vocabulary {max_vocabulary}."
            )
