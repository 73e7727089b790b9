"""Streaming summaries: merged moments, a bottom-k uniform sample for quantiles, Misra-Gries
vocabularies and a K-minimum-values distinct count (see the accuracy notes in :mod:`.stats`).
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from dataclasses import dataclass

import numpy as np

from faithful_restore.drift.batches import _text, column, column_family
from faithful_restore.drift.schema import (
    DISTINCT_SKETCH_SIZE,
    CategoricalSummary,
    FeatureSummary,
    InputRecord,
    Key,
    NumericSummary,
    _is_int,
    _key_list,
    feature_path,
    quantile_rank_error,
)
from faithful_restore.errors import BundleError


def _hash64(token: str) -> int:
    # A stable hash: Python's hash() of strings changes from process to process.
    return int.from_bytes(hashlib.blake2b(token.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


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

    def finish(
        self, levels: list[float], sample_size: int
    ) -> tuple[int, tuple[InputRecord, ...], tuple[FeatureSummary, ...]]:
        """(rows, inputs, features) of the data seen."""
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
        return self.rows, inputs, tuple(features)
