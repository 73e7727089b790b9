"""Training-data statistics computed in one streaming pass, for checking inputs at serving time.

:meth:`PreprocessingStats.from_data` reads a NumPy array, a ``tf.data.Dataset`` or any iterable of
batches once, holding memory that does not grow with the number of rows:

- numeric features: count, mean and population standard deviation (per-batch moments merged with
  Chan et al.'s parallel update, in float64), min, max, NaN and infinity counts, and quantiles from
  a uniform sample of at most ``sample_size`` finite values (bottom-k sampling on keys from a
  seeded generator, so the sample does not depend on how the data is cut into batches).
- categorical features (strings, or integer ids named in ``categorical=``): a Misra-Gries
  frequency summary of at most ``max_vocabulary`` tokens, the total count, and the number of
  distinct tokens (exact while it fits, else a K-minimum-values estimate).

Accuracy (documented guarantees, checked by tests/test_stats.py):

- mean, std, min, max and counts are exact up to float64 rounding.
- quantiles are exactly ``np.quantile(values, q)`` while a feature has at most ``sample_size``
  finite values; beyond that they are quantiles of a uniform random sample, and by the
  Dvoretzky-Kiefer-Wolfowitz inequality the true rank of every reported quantile is within
  ``quantile_rank_error`` = sqrt(ln(2 / 0.001) / (2 * sample_size)) of q with probability at
  least 99.9% (0.0195 for the default sample of 10,000).
- vocabulary counts are exact while a feature has at most ``max_vocabulary`` distinct tokens. Beyond
  that each stored count undercounts its token by at most ``count_error`` <= rows /
  (max_vocabulary + 1), every token more frequent than that is stored, and the tokens left out
  make up at most the ``tail_fraction`` of the values.
- the distinct-token estimate beyond ``max_vocabulary`` (and beyond 1,024) has a relative standard
  error of about 1 / sqrt(1022), i.e. 3%.

Memory: at most 32 bytes x ``sample_size`` per numeric feature, ``max_vocabulary`` + one batch of tokens and
1,024 hashes per categorical feature, and one batch of data at a time.
"""

from __future__ import annotations

import hashlib
import math
import numbers
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from faithful_restore.errors import BundleError

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
_SETTINGS_KEYS = {"max_vocabulary", "sample_size", "seed", "quantiles"}


@dataclass(frozen=True)
class PreprocessingStats:
    """Statistics of the data a model was trained on, one summary per feature.

    Build it with :meth:`from_data`; store it with :meth:`to_dict` (plain JSON, e.g. in a bundle's
    ``preprocessing=`` mapping) and read it back with :meth:`from_dict`.

    Attributes:
        rows: rows seen.
        inputs: the inputs the data had (one for a plain array, one per key for dicts).
        features: one summary per feature, in input then column order.
        max_vocabulary: capacity of each categorical summary.
        sample_size: capacity of each numeric feature's quantile sample.
        seed: seed of the quantile samples.
        format_version: the version of the :meth:`to_dict` format.
    """

    rows: int
    inputs: tuple[InputRecord, ...]
    features: tuple[FeatureSummary, ...]
    max_vocabulary: int
    sample_size: int
    seed: int
    format_version: str = FORMAT_VERSION

    @classmethod
    def from_data(
        cls,
        data: Any,
        *,
        feature_names: Sequence[str] | None = None,
        categorical: Iterable[str | int] = (),
        max_vocabulary: int = 10_000,
        quantiles: Sequence[float] = DEFAULT_QUANTILES,
        batch_size: int = 8192,
        sample_size: int = 10_000,
        seed: int = 0,
    ) -> PreprocessingStats:
        """Computes the statistics in one pass over ``data``.

        Args:
            data: a NumPy array (rows x features, or 1-D for one feature), read ``batch_size`` rows
                at a time; a ``tf.data.Dataset`` yielding batches (as for ``Model.fit``); or any
                iterable of batches. A batch is an array or tensor, a dict of them (one input per
                key), or an ``(x, y)`` / ``(x, y, sample_weight)`` tuple, of which only x is read.
                A dict entry is 1-D (one feature named by its key) or 2-D (features ``key[0]``,
                ``key[1]``, ...; a single column is named by the key).
            feature_names: names of a plain array's columns (default "0", "1", ...).
            categorical: names or indices of integer features that are ids rather than quantities.
                String features are always categorical.
            max_vocabulary: tokens kept per categorical feature.
            quantiles: quantile levels to record; the default levels are always included, since
                :func:`~faithful_restore._guard.check_inputs` uses them.
            batch_size: rows read at a time from a NumPy array or tensor.
            sample_size: values kept per numeric feature to estimate quantiles.
            seed: seed of those samples (the result is deterministic for a given seed).

        Returns:
            The statistics.

        Raises:
            BundleError: the data is empty, an iterator yields nothing (already consumed?), batches
                disagree in structure or width, an array is ragged, scalar or of rank > 2, an object
                array holds something other than strings, or an argument is out of range.
        """
        for arg, value, low in (
            ("max_vocabulary", max_vocabulary, 1),
            ("batch_size", batch_size, 1),
            ("sample_size", sample_size, 2),
        ):
            if not _is_int(value) or value < low:
                raise BundleError(f"{arg} must be an integer >= {low}, found {value!r}.")
        if not _is_int(seed):
            raise BundleError(f"seed must be an integer, found {seed!r}.")
        levels = _levels(quantiles)
        if isinstance(categorical, (str, int)):
            categorical = [categorical]
        wanted = list(categorical)
        names = None if feature_names is None else [str(n) for n in feature_names]
        if names is not None and len(set(names)) != len(names):
            raise BundleError(f"feature_names must be distinct, found {names!r}.")

        acc: _Accumulator | None = None
        batches = 0
        for batches, element in enumerate(_iter_batches(data, batch_size), start=1):
            parts = split_batch(element, f"batch {batches - 1}")
            rows = batch_rows(parts, f"batch {batches - 1}")
            if rows == 0:
                continue
            if acc is None:
                acc = _Accumulator(parts, names, wanted, max_vocabulary, sample_size, seed)
            acc.update(parts, rows, f"batch {batches - 1}")
        if acc is None:
            if batches == 0:
                raise BundleError(
                    "the data yielded no batches; expected at least one row. If it is an iterator or "
                    "generator it may already have been consumed: pass a fresh one (or a list or array)."
                )
            raise BundleError(f"the data holds no rows ({batches} empty batches); pass the training data.")
        return acc.finish(levels, max_vocabulary, sample_size, seed)

    @property
    def numeric(self) -> tuple[NumericSummary, ...]:
        return tuple(f for f in self.features if isinstance(f, NumericSummary))

    @property
    def categorical(self) -> tuple[CategoricalSummary, ...]:
        return tuple(f for f in self.features if isinstance(f, CategoricalSummary))

    def feature(self, name: str) -> FeatureSummary:
        """The summary of the feature called ``name`` (or with path ``name``, e.g. "feature[2]").

        Raises:
            KeyError: no feature has that name.
        """
        for f in self.features:
            if name in (f.name, f.path):
                return f
        raise KeyError(f"no feature {name!r}; the stats have {[f.name for f in self.features]}")

    def to_dict(self) -> dict[str, Any]:
        quantiles = sorted({q for f in self.numeric for q, _ in f.quantiles})
        return {
            "format": FORMAT,
            "format_version": self.format_version,
            "rows": self.rows,
            "settings": {
                "max_vocabulary": self.max_vocabulary,
                "sample_size": self.sample_size,
                "seed": self.seed,
                "quantiles": quantiles,
            },
            "inputs": [i.to_dict() for i in self.inputs],
            "features": [f.to_dict() for f in self.features],
        }

    @classmethod
    def from_dict(cls, data: Any) -> PreprocessingStats:
        """Validates and converts what :meth:`to_dict` produced.

        Raises:
            BundleError: naming what is malformed.
        """
        keys = {"format", "format_version", "rows", "settings", "inputs", "features"}
        if not isinstance(data, dict):
            raise BundleError(f"preprocessing stats must be a JSON object, found {type(data).__name__}.")
        if data.get("format") != FORMAT:
            raise BundleError(
                f"preprocessing stats have format {data.get('format')!r}, expected {FORMAT!r}; "
                "pass what PreprocessingStats.to_dict() returned."
            )
        version = data.get("format_version")
        match = _VERSION.match(version) if isinstance(version, str) else None
        if not match:
            raise BundleError(f"preprocessing stats format_version must look like '1.0', found {version!r}.")
        if int(match.group(1)) > int(FORMAT_VERSION.split(".")[0]):
            raise BundleError(
                f"preprocessing stats have format version {version}, this faithful_restore reads up to "
                f"{FORMAT_VERSION}; upgrade faithful_restore to read them."
            )
        newer = (int(match.group(1)), int(match.group(2))) > tuple(int(x) for x in FORMAT_VERSION.split("."))
        if not keys <= set(data) or (set(data) - keys and not newer):
            raise BundleError(
                f"preprocessing stats must have exactly {sorted(keys)}, found {sorted(data)}; the stats are damaged."
            )
        rows = _count(data, "rows", "stats")
        settings = data["settings"]
        if not isinstance(settings, dict) or set(settings) != _SETTINGS_KEYS:
            raise BundleError(f"preprocessing stats settings must have exactly {sorted(_SETTINGS_KEYS)}.")
        for key in ("max_vocabulary", "sample_size", "seed"):
            if not _is_int(settings[key]):
                raise BundleError(f"preprocessing stats settings.{key} must be an integer, found {settings[key]!r}.")
        if settings["max_vocabulary"] < 1 or settings["sample_size"] < 2:
            raise BundleError("preprocessing stats settings: max_vocabulary must be >= 1 and sample_size >= 2.")
        if not isinstance(settings["quantiles"], list):
            raise BundleError("preprocessing stats settings.quantiles must be a list.")
        if not isinstance(data["inputs"], list) or not data["inputs"]:
            raise BundleError("preprocessing stats 'inputs' must be a non-empty list.")
        inputs = tuple(InputRecord.from_dict(i) for i in data["inputs"])
        if not isinstance(data["features"], list):
            raise BundleError("preprocessing stats 'features' must be a list.")
        features: list[FeatureSummary] = []
        for entry in data["features"]:
            kind = entry.get("kind") if isinstance(entry, dict) else None
            if kind == "numeric":
                features.append(NumericSummary.from_dict(entry))
            elif kind == "categorical":
                features.append(CategoricalSummary.from_dict(entry))
            else:
                raise BundleError(f"a stats feature must have kind 'numeric' or 'categorical', found {kind!r}.")
        _check_layout(inputs, features, rows, settings["max_vocabulary"])
        return cls(rows, inputs, tuple(features), settings["max_vocabulary"], settings["sample_size"], settings["seed"])


# --- reading batches -------------------------------------------------------------------------


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


def _hash64(token: str) -> int:
    # A stable hash: Python's hash() of strings changes from process to process.
    return int.from_bytes(hashlib.blake2b(token.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


# --- accumulators ----------------------------------------------------------------------------


@dataclass
class _Slot:
    name: str
    key: Key
    column: int
    family: str  # numeric, integer or string (as first seen)
    categorical: bool
    dtype: str


class _Sample:
    """A uniform sample without replacement of at most k finite values per column (bottom-k).

    Every value gets a random key drawn from one seeded generator in row-major order, and the
    sample keeps each column's k values with the smallest keys. The keys depend only on a value's
    position in the stream, so the sample is identical however the stream is cut into batches;
    values whose key cannot make the k smallest are dropped at once, and the buffer is cut back
    to k rows whenever it exceeds 2k.
    """

    def __init__(self, k: int, width: int, seed: int) -> None:
        self.k = k
        self.rng = np.random.default_rng(seed)
        self.keys = np.empty((0, width))
        self.values = np.empty((0, width))
        self.pending: list[tuple[np.ndarray, np.ndarray]] = []
        self.pending_rows = 0
        self.threshold = np.full(width, np.inf)  # a column's k-th smallest key once it has k values

    def update(self, x: np.ndarray, finite: np.ndarray | None) -> None:
        keys = self.rng.random(x.shape)
        if finite is not None:
            keys[~finite] = np.inf
        candidate = keys < self.threshold
        rows = np.flatnonzero(candidate.any(axis=1))
        if not rows.size:
            return
        self.pending.append((np.where(candidate[rows], keys[rows], np.inf), x[rows]))
        self.pending_rows += rows.size
        if len(self.keys) + self.pending_rows > 2 * self.k:
            self._compact()

    def _compact(self) -> None:
        keys = np.concatenate([self.keys, *(k for k, _ in self.pending)])
        values = np.concatenate([self.values, *(v for _, v in self.pending)])
        self.pending, self.pending_rows = [], 0
        if len(keys) > self.k:
            keep = np.argpartition(keys, self.k - 1, axis=0)[: self.k]
            keys = np.take_along_axis(keys, keep, axis=0)
            values = np.take_along_axis(values, keep, axis=0)
            self.threshold = keys.max(axis=0)
        self.keys, self.values = keys, values

    def column(self, j: int) -> np.ndarray:
        """The sampled values of column ``j``."""
        self._compact()
        return self.values[np.isfinite(self.keys[:, j]), j]


class _Vocabulary:
    """A mergeable Misra-Gries summary plus a K-minimum-values distinct-count sketch."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.counts: dict[str, int] = {}
        self.total = 0
        self.decrement = 0
        self.hashes = np.empty(0, dtype=np.uint64)

    def update(self, batch: Counter[str]) -> None:
        self.total += sum(batch.values())
        counts = self.counts
        for token, c in batch.items():
            counts[token] = counts.get(token, 0) + c
        if len(counts) > self.capacity:
            # Subtracting the (capacity+1)-th largest count from every counter keeps at most
            # `capacity` of them and undercounts any token by at most the total subtracted.
            values = np.fromiter(counts.values(), dtype=np.int64, count=len(counts))
            cut = int(np.partition(values, len(values) - self.capacity - 1)[len(values) - self.capacity - 1])
            self.decrement += cut
            self.counts = {t: c - cut for t, c in counts.items() if c > cut}
        new = np.fromiter((_hash64(t) for t in batch), dtype=np.uint64, count=len(batch))
        self.hashes = np.union1d(self.hashes, new)[:DISTINCT_SKETCH_SIZE]

    def distinct(self) -> tuple[int, bool]:
        if self.decrement == 0:
            return len(self.counts), True
        if len(self.hashes) < DISTINCT_SKETCH_SIZE:
            return len(self.hashes), True
        kth = (float(self.hashes[-1]) + 1.0) / 2.0**64
        return max(len(self.counts), round((DISTINCT_SKETCH_SIZE - 1) / kth)), False


class _Accumulator:
    def __init__(
        self,
        parts: dict[Key, np.ndarray],
        names: list[str] | None,
        categorical: list[str | int],
        max_vocabulary: int,
        sample_size: int,
        seed: int,
    ) -> None:
        self.layout = {k: (v.ndim, 1 if v.ndim == 1 else int(v.shape[1])) for k, v in parts.items()}
        if None in parts:
            width = self.layout[None][1]
            if names is not None and len(names) != width:
                raise BundleError(
                    f"feature_names has {len(names)} names but the data has {width} features; give one per column."
                )
        elif names is not None:
            raise BundleError("feature_names names a plain array's columns; dict inputs are named by their keys.")
        self.slots: list[_Slot] = []
        for key, array in parts.items():
            width = self.layout[key][1]
            for j in range(width):
                if key is None:
                    name = names[j] if names is not None else str(j)
                else:
                    name = key if width == 1 else f"{key}[{j}]"
                where = f"feature {feature_path(name, key, j)!r}"
                family = column_family(column(array, j), where)
                dtype = "string" if family == "string" else array.dtype.name
                self.slots.append(_Slot(name, key, j, family, family == "string", dtype))
        by_name = {s.name: s for s in self.slots}
        if len(by_name) != len(self.slots):
            raise BundleError(
                f"feature names {[s.name for s in self.slots]} repeat (a dict key such as 'a[0]' clashes with "
                "a column of a 2-D entry 'a'); rename the dict keys."
            )
        for item in categorical:
            if _is_int(item):
                if not 0 <= int(item) < len(self.slots):
                    raise BundleError(
                        f"categorical index {item} is out of range; the data has {len(self.slots)} features."
                    )
                slot = self.slots[int(item)]
            elif isinstance(item, str) and item in by_name:
                slot = by_name[item]
            else:
                raise BundleError(f"categorical names unknown feature {item!r}; the features are {sorted(by_name)}.")
            if slot.family == "numeric":
                raise BundleError(
                    f"feature {slot.name!r} holds floats ({slot.dtype}) but categorical names it; only strings "
                    "and integer ids can be categorical."
                )
            slot.categorical = True
        self.numeric = [i for i, s in enumerate(self.slots) if not s.categorical]
        n = len(self.numeric)
        self.count = np.zeros(n, dtype=np.int64)
        self.nan = np.zeros(n, dtype=np.int64)
        self.mean = np.zeros(n)
        self.m2 = np.zeros(n)
        self.min = np.full(n, np.inf)
        self.max = np.full(n, -np.inf)
        self.sample = _Sample(sample_size, n, seed)
        self.vocabularies = {i: _Vocabulary(max_vocabulary) for i, s in enumerate(self.slots) if s.categorical}
        self.rows = 0

    def update(self, parts: dict[Key, np.ndarray], rows: int, where: str) -> None:
        layout = {k: (v.ndim, 1 if v.ndim == 1 else int(v.shape[1])) for k, v in parts.items()}
        if set(layout) != set(self.layout):
            raise BundleError(
                f"{where} has inputs {_key_list(layout)} but the first batch had {_key_list(self.layout)}; "
                "every batch needs the same inputs."
            )
        for key, (_, width) in layout.items():
            if width != self.layout[key][1]:
                label = "the data" if key is None else f"input {key!r}"
                raise BundleError(
                    f"{where}: {label} has {width} features per row but the first batch had "
                    f"{self.layout[key][1]}; the batches are ragged."
                )
        matrix = np.empty((rows, len(self.numeric)), dtype=np.float64)
        for out, i in enumerate(self.numeric):
            slot = self.slots[i]
            col = column(parts[slot.key], slot.column)
            if column_family(col, f"{where} feature {slot.name!r}") == "string":
                raise BundleError(
                    f"{where}: feature {slot.name!r} holds strings but earlier batches held numbers ({slot.dtype}); "
                    "a feature must keep one type."
                )
            matrix[:, out] = col
        if self.numeric:
            self._update_numeric(matrix)
        for i, vocabulary in self.vocabularies.items():
            slot = self.slots[i]
            col = column(parts[slot.key], slot.column)
            family = column_family(col, f"{where} feature {slot.name!r}")
            if (family == "string") != (slot.family == "string") or family == "numeric":
                raise BundleError(
                    f"{where}: categorical feature {slot.name!r} holds {col.dtype} values but earlier batches "
                    f"held {slot.dtype}; a feature must keep one type."
                )
            if family == "string":
                batch: Counter[str] = Counter(_text(v) for v in col)
            else:
                values, counts = np.unique(col, return_counts=True)
                batch = Counter({str(int(v)): int(c) for v, c in zip(values, counts)})
            vocabulary.update(batch)
        self.rows += rows

    def _update_numeric(self, x: np.ndarray) -> None:
        finite = np.isfinite(x)
        all_finite = bool(finite.all())
        nb = finite.sum(axis=0) if not all_finite else np.full(x.shape[1], x.shape[0], dtype=np.int64)
        safe = np.maximum(nb, 1)
        if all_finite:
            mb = x.sum(axis=0) / safe
            m2b = ((x - mb) ** 2).sum(axis=0)
            lo, hi = x.min(axis=0), x.max(axis=0)
        else:
            mb = np.where(finite, x, 0.0).sum(axis=0) / safe
            m2b = np.where(finite, (x - mb) ** 2, 0.0).sum(axis=0)
            lo = np.where(finite, x, np.inf).min(axis=0)
            hi = np.where(finite, x, -np.inf).max(axis=0)
            self.nan += np.isnan(x).sum(axis=0)
        # Chan et al.: merge (count, mean, M2) of the batch into the running totals.
        na = self.count
        total = na + nb
        share = nb / np.maximum(total, 1)
        delta = mb - self.mean
        self.mean = self.mean + delta * share
        self.m2 = self.m2 + m2b + delta**2 * na * share
        self.count = total
        self.min = np.minimum(self.min, lo)
        self.max = np.maximum(self.max, hi)
        self.sample.update(x, None if all_finite else finite)

    def finish(self, levels: list[float], max_vocabulary: int, sample_size: int, seed: int) -> PreprocessingStats:
        features: list[FeatureSummary] = []
        numeric_index = {i: j for j, i in enumerate(self.numeric)}
        for i, slot in enumerate(self.slots):
            if i in numeric_index:
                j = numeric_index[i]
                count = int(self.count[j])
                nan = int(self.nan[j])
                mean = std = lo = hi = None
                qs: tuple[tuple[float, float], ...] = ()
                if count:
                    mean, std = float(self.mean[j]), float(math.sqrt(max(self.m2[j], 0.0) / count))
                    lo, hi = float(self.min[j]), float(self.max[j])
                    if not (math.isfinite(mean) and math.isfinite(std)):
                        raise BundleError(
                            f"feature {slot.name!r}: values are too large for float64 statistics "
                            f"(mean {mean}, std {std}); rescale the feature."
                        )
                    sample = self.sample.column(j)
                    values = np.quantile(sample, levels)
                    qs = tuple((q, float(v)) for q, v in zip(levels, values))
                features.append(
                    NumericSummary(
                        slot.name,
                        slot.key,
                        slot.column,
                        slot.dtype,
                        count,
                        nan,
                        self.rows - count - nan,
                        mean,
                        std,
                        lo,
                        hi,
                        qs,
                        quantile_rank_error(sample_size, count),
                    )
                )
            else:
                vocab = self.vocabularies[i]
                ordered = sorted(vocab.counts.items(), key=lambda tc: (-tc[1], tc[0]))
                distinct, exact = vocab.distinct()
                features.append(
                    CategoricalSummary(
                        slot.name,
                        slot.key,
                        slot.column,
                        slot.dtype,
                        vocab.total,
                        tuple(ordered),
                        vocab.decrement,
                        distinct,
                        exact,
                    )
                )
        inputs = tuple(InputRecord(k, rank, width) for k, (rank, width) in self.layout.items())
        return PreprocessingStats(self.rows, inputs, tuple(features), max_vocabulary, sample_size, seed)


# --- validation helpers ----------------------------------------------------------------------


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
        raise BundleError(f"quantiles must be numbers in [0, 1], found {quantiles!r}.") from e
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
