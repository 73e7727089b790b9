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

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from faithful_restore.drift.batches import _iter_batches, batch_rows, split_batch
from faithful_restore.drift.schema import (
    _VERSION,
    DEFAULT_QUANTILES,
    FORMAT,
    FORMAT_VERSION,
    CategoricalSummary,
    FeatureSummary,
    InputRecord,
    NumericSummary,
    _check_layout,
    _count,
    _is_int,
    _levels,
)
from faithful_restore.drift.sketches import _Accumulator
from faithful_restore.errors import ArgumentError, BundleError

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
                :func:`~faithful_restore.check_inputs` uses them.
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
                raise ArgumentError(f"{arg} must be an integer >= {low}, found {value!r}.")
        if not _is_int(seed):
            raise ArgumentError(f"seed must be an integer, found {seed!r}.")
        levels = _levels(quantiles)
        if isinstance(categorical, (str, int)):
            categorical = [categorical]
        wanted = list(categorical)
        names = None if feature_names is None else [str(n) for n in feature_names]
        if names is not None and len(set(names)) != len(names):
            raise ArgumentError(f"feature_names must be distinct, found {names!r}.")

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
        rows, inputs, features = acc.finish(levels, sample_size)
        return cls(rows, inputs, features, max_vocabulary, sample_size, seed)

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
