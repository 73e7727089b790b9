"""Checks a batch of inputs against what the model saw at training time.

:func:`check_inputs` compares a batch with :class:`~faithful_restore._stats.PreprocessingStats`
and, optionally, the model's input :class:`~faithful_restore._signature.Signature`, and returns a
:class:`~faithful_restore._findings.Report`:

- ``input_signature`` findings: a missing or unknown input, a wrong rank, shape or feature count, or
  a dtype the model cannot take (strings where numbers are expected and vice versa).
- ``preprocessing`` findings: NaN/Inf values, values beyond the training range, a shifted mean, a
  batch on another scale (typically unnormalized, e.g. pixel values 0..255 fed to a model trained
  on standardized ones), and out-of-vocabulary tokens.

False positives. Each test is built so that batches drawn from the training distribution
trigger it with probability below ``significance`` (1e-6) per feature and batch, whatever the
batch size and (for all but the NaN check, given independent rows) whatever the shape of the
distribution:

- every rate test compares a count in the batch with the rate training implies, using the
  Chernoff bound exp(-n KL(k/n || p)) on the binomial tail, an upper bound on the p-value; a
  finding needs it below ``significance``. Training rates are taken conservatively: 4 / (count + 1)
  for values beyond the extremes of ``count`` training values (twice the expectation, allowing
  for the randomness of the extremes); for values beyond a training quantile, its level plus the
  quantile's rank error (the 99.9% DKW bound); for out-of-vocabulary tokens,
  :attr:`~faithful_restore._stats.CategoricalSummary.expected_oov_rate`. Rates must also reach a
  practical minimum (``out_of_range_fraction`` 1%, ``oov_rate`` 5%).
- NaN or Inf when training had none is always an error: no amount of chance explains it.
- mean shift: the batch mean must be ``mean_shift_z`` (5) standard errors from the training mean,
  the standard error being std * sqrt(1/n + 1/count) (the batch-size scaling; about 5.7e-7 for a
  near-normal batch mean), and at least ``mean_shift_sigmas`` (0.25) training stds away, so that
  huge batches do not flag negligible drift. Skewed features (a rare 0/1 flag, log-normal income)
  make the z-test alone unreliable in small batches, so a sign test must agree: significantly more
  than half the values (plus the median's rank error) must lie on the side of the training median
  the mean moved to.
- scale (unnormalized inputs): the batch std must be at least ``scale_ratio`` (3) times the
  training std and so must the interquartile range (so one outlier cannot do it), and
  significantly more than 2% of the values must lie beyond the training 1% and 99% quantiles;
  scaled-down batches mirror this with the fraction inside the quartiles.

Consequently a single row can only raise NaN, dtype, shape and vocabulary findings: one value's
position is not significant at 1e-6 (unless training saw over 4 million values). Raise
``significance`` (e.g. to 1e-3) to check single requests more eagerly. tests/test_guard.py
finds no false positive over hundreds of batches of 1 to 1,024 rows from normal, log-normal,
Student-t(3), rare-flag, Poisson and Zipf-string features (none over 12,000 in its slow variant).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from faithful_restore._findings import Cause, Finding, Report
from faithful_restore._signature import Signature
from faithful_restore._stats import (
    FORMAT,
    CategoricalSummary,
    InputRecord,
    Key,
    NumericSummary,
    PreprocessingStats,
    column,
    column_family,
    dkw_margin,
    to_array,
    tokens,
)
from faithful_restore.errors import BundleError

_PLAIN = "x"  # how findings name a plain (non-dict) batch


@dataclass(frozen=True)
class Thresholds:
    """When :func:`check_inputs` reports a finding. The defaults keep false positives below ~1e-6.

    Attributes:
        significance: a statistical test reports only when its p-value bound falls below this; it
            is the false-positive rate per test, feature and batch.
        mean_shift_z: how many standard errors the batch mean must lie from the training mean.
        mean_shift_sigmas: the smallest reported mean shift, in training standard deviations.
        mean_shift_error_sigmas: a mean shift of at least this many training stds is an error.
        scale_ratio: batch std / training std (and IQR ratio) at or beyond which, or at or below
            whose inverse, the batch looks rescaled (typically unnormalized).
        scale_error_ratio: the ratio at or beyond which rescaling is an error.
        out_of_range_fraction: the smallest reported fraction of values beyond the training range.
        out_of_range_error_fraction: the fraction beyond the range that is an error.
        oov_rate: the smallest reported out-of-vocabulary rate.
        oov_error_rate: the out-of-vocabulary rate that is an error.
    """

    significance: float = 1e-6
    mean_shift_z: float = 5.0
    mean_shift_sigmas: float = 0.25
    mean_shift_error_sigmas: float = 3.0
    scale_ratio: float = 3.0
    scale_error_ratio: float = 10.0
    out_of_range_fraction: float = 0.01
    out_of_range_error_fraction: float = 0.25
    oov_rate: float = 0.05
    oov_error_rate: float = 0.5

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise BundleError(f"threshold {f.name} must be a finite number, found {value!r}.")
        checks = [
            ("significance", 0.0 < self.significance < 1.0, "in (0, 1)"),
            ("mean_shift_z", self.mean_shift_z > 0, "> 0"),
            ("mean_shift_sigmas", self.mean_shift_sigmas >= 0, ">= 0"),
            ("mean_shift_error_sigmas", self.mean_shift_error_sigmas >= self.mean_shift_sigmas, ">= mean_shift_sigmas"),
            ("scale_ratio", self.scale_ratio > 1, "> 1"),
            ("scale_error_ratio", self.scale_error_ratio >= self.scale_ratio, ">= scale_ratio"),
            ("out_of_range_fraction", 0 < self.out_of_range_fraction <= 1, "in (0, 1]"),
            (
                "out_of_range_error_fraction",
                self.out_of_range_fraction <= self.out_of_range_error_fraction <= 1,
                "in [out_of_range_fraction, 1]",
            ),
            ("oov_rate", 0 < self.oov_rate <= 1, "in (0, 1]"),
            ("oov_error_rate", self.oov_rate <= self.oov_error_rate <= 1, "in [oov_rate, 1]"),
        ]
        for name, ok, rule in checks:
            if not ok:
                raise BundleError(f"threshold {name} must be {rule}, found {getattr(self, name)!r}.")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> Thresholds:
        """Defaults overridden by ``data``'s keys.

        Raises:
            BundleError: for an unknown key or an out-of-range value.
        """
        if not isinstance(data, Mapping):
            raise BundleError(f"thresholds must be a Thresholds or a dict, found {type(data).__name__}.")
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise BundleError(f"unknown thresholds {sorted(unknown)}; the known ones are {sorted(known)}.")
        return cls(**dict(data))


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
            bundle's :class:`~faithful_restore._manifest.Manifest` (or manifest dict) whose
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
    signature = signature if signature is not None else manifest_signature
    if stats is None:  # a bundle saved without statistics: its signature is all there is to check
        return check_signature_only(x, signature)
    limits = thresholds if isinstance(thresholds, Thresholds) else Thresholds.from_dict(thresholds or {})
    findings: list[Finding] = []
    checks = ["input structure and dtypes"]
    if signature is not None:
        checks.append("input signature")
    if stats.numeric:
        checks += ["non-finite values", "value ranges", "mean shift", "scale (normalization)"]
    if stats.categorical:
        checks.append("out-of-vocabulary rate")

    raw = _raw_parts(x, findings)
    if raw is None:
        return Report.build(findings, checks, "inputs vs training statistics", kind="inputs")
    if signature is not None:
        _check_signature(signature, raw, findings)
    matched = _match_inputs(stats, raw, signature, findings)
    rows = {_PLAIN if key is None else key: len(array) for key, (_, array) in matched.items()}
    if len(set(rows.values())) > 1:
        findings.append(
            _signature_finding(
                "error",
                _PLAIN,
                "one row per example in every input",
                rows,
                f"the inputs have different numbers of rows {rows}; pass one row per example in every input.",
            )
        )
        return Report.build(findings, checks, "inputs vs training statistics", kind="inputs")
    n = next(iter(rows.values()), None)
    if n is None:  # nothing matched the stats; name the batch by its own size
        n = next((int(a.shape[0]) for a in raw.values() if a.ndim), 0)
    subject = f"inputs: {n} rows vs training statistics of {stats.rows} rows"
    if matched and n == 0:
        findings.append(
            _signature_finding("warning", _PLAIN, "at least one row", 0, "the batch has no rows; nothing was checked.")
        )
        return Report.build(findings, checks, subject, kind="inputs")
    for feature in stats.features:
        if feature.input not in matched:
            continue
        _, array = matched[feature.input]
        col = column(array, feature.column)
        if isinstance(feature, NumericSummary):
            _check_numeric(feature, col, limits, findings)
        else:
            _check_categorical(feature, col, limits, findings)
    return Report.build(findings, checks, subject, kind="inputs")


# --- resolving the arguments -----------------------------------------------------------------


def _resolve(obj: Any) -> tuple[PreprocessingStats | None, Signature | None]:
    """The statistics and signature to check against; stats None for a bundle saved without any."""
    from faithful_restore._bundle import Bundle
    from faithful_restore._manifest import Manifest

    if isinstance(obj, Bundle):
        signature = obj.manifest.signature if obj.manifest is not None else None
        found = {k: v for k, v in obj.preprocessing.items() if isinstance(v, PreprocessingStats)}
        if found or obj.manifest is None:
            return pick_stats(found), signature
        obj = obj.manifest
    if isinstance(obj, PreprocessingStats):
        return obj, None
    if isinstance(obj, Mapping):
        if obj.get("format") != "faithful_restore.bundle":
            return PreprocessingStats.from_dict(dict(obj)), None  # its errors say what a stats dict needs
        obj = Manifest.from_dict(dict(obj))
    if isinstance(obj, Manifest):
        return _stats_in_manifest(obj), obj.signature
    raise BundleError(
        f"check_inputs needs PreprocessingStats, their to_dict(), or a bundle manifest; found {type(obj).__name__}."
    )


def _stats_in_manifest(manifest: Any) -> PreprocessingStats | None:
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


# --- per-feature checks ----------------------------------------------------------------------


def _check_numeric(feature: NumericSummary, col: np.ndarray, limits: Thresholds, findings: list[Finding]) -> None:
    path = feature.path
    try:
        family = column_family(col, path)
    except BundleError as e:
        findings.append(_signature_finding("error", path, feature.dtype, _dtype_name(col), str(e)))
        return
    if family == "string":
        findings.append(
            _signature_finding(
                "error",
                path,
                feature.dtype,
                "string",
                f"{path} holds strings but training saw numbers ({feature.dtype}); pass the numeric values "
                "(convert or encode the strings the way the training data was).",
            )
        )
        return
    values = col.astype(np.float64)
    n = len(values)
    finite = np.isfinite(values)
    nan = int(np.isnan(values).sum())
    inf = n - int(finite.sum()) - nan
    if nan or inf:
        train_bad = feature.nan_count + feature.inf_count
        rate = train_bad / feature.rows if feature.rows else 0.0
        if train_bad == 0 or _significant(nan + inf, n, rate, limits.significance):
            seen = "none" if train_bad == 0 else f"{rate:.2%}"
            findings.append(
                _preprocessing_finding(
                    "error" if train_bad == 0 else "warning",
                    path,
                    {"nan": feature.nan_count, "inf": feature.inf_count, "rows": feature.rows},
                    {"nan": nan, "inf": inf, "rows": n},
                    f"{path} has {nan} NaN and {inf} infinite values in {n} rows (training had {seen}); "
                    "impute or drop them as the training data was cleaned, or fix the step that produced them.",
                )
            )
    v = values[finite]
    if not len(v) or not feature.count:
        return
    _check_distribution(feature, v, limits, findings)


@dataclass(frozen=True)
class _Batch:
    """One numeric feature of the batch: its finite values and the counts the tests use."""

    values: np.ndarray
    mean: float
    std: float
    margin: float  # how far (in rank) a training quantile may be from the true one
    quantiles: dict[float, float]

    def below(self, q: float) -> int:
        return int((self.values < self.quantiles[q]).sum())

    def above(self, q: float) -> int:
        return int((self.values > self.quantiles[q]).sum())


def _check_distribution(feature: NumericSummary, v: np.ndarray, limits: Thresholds, findings: list[Finding]) -> None:
    assert feature.mean is not None and feature.std is not None and feature.min is not None
    assert feature.max is not None
    path, n, alpha = feature.path, len(v), limits.significance
    margin = feature.quantile_rank_error or dkw_margin(feature.count)
    levels = {q: feature.quantile(q) for q in (0.01, 0.25, 0.5, 0.75, 0.99)}
    batch = _Batch(v, float(v.mean()), float(v.std()), margin, {q: x for q, x in levels.items() if x is not None})

    if _rescaled(feature, batch, limits, findings):
        return  # the scale explains the range and mean findings; one finding says it best

    beyond = int(((v < feature.min) | (v > feature.max)).sum())
    rate = beyond / n
    # A fresh value lands beyond the extremes of `count` training values with probability
    # 2 / (count + 1); twice that allows for the randomness of those extremes.
    if rate >= limits.out_of_range_fraction and _significant(beyond, n, 4.0 / (feature.count + 1), alpha):
        findings.append(
            _preprocessing_finding(
                "error" if rate >= limits.out_of_range_error_fraction else "warning",
                path,
                {"min": _num(feature.min), "max": _num(feature.max)},
                {"min": _num(v.min()), "max": _num(v.max()), "fraction_outside": _num(rate)},
                f"{path}: {rate:.1%} of values lie outside the training range "
                f"[{feature.min:.4g}, {feature.max:.4g}] (batch range [{v.min():.4g}, {v.max():.4g}]); "
                "check this feature's units and preprocessing.",
            )
        )

    if feature.std <= 0 or 0.5 not in batch.quantiles:
        return
    shift = batch.mean - feature.mean
    sigmas = abs(shift) / feature.std
    z = abs(shift) / (feature.std * math.sqrt(1.0 / n + 1.0 / feature.count))
    # A sign test makes the finding distribution-free: under the training distribution at most
    # half the values (plus the median's rank error) lie on either side of the training median.
    beside = batch.above(0.5) if shift > 0 else batch.below(0.5)
    moved = _significant(beside, n, 0.5 + margin, alpha)
    if z >= limits.mean_shift_z and sigmas >= limits.mean_shift_sigmas and moved:
        error = sigmas >= limits.mean_shift_error_sigmas
        findings.append(
            _preprocessing_finding(
                "error" if error else "warning",
                path,
                {"mean": _num(feature.mean), "std": _num(feature.std)},
                {"mean": _num(batch.mean), "shift_in_std": _num(sigmas), "z": _num(z), "rows": n},
                f"{path}: the batch mean {batch.mean:.4g} is {sigmas:.2g} training standard deviations from the "
                f"training mean {feature.mean:.4g}; the data drifted or is preprocessed differently"
                + (
                    " (if it is unnormalized, apply the bundle's stats or add a Normalization layer)."
                    if error
                    else "; check the pipeline feeding this feature."
                ),
            )
        )


def _rescaled(feature: NumericSummary, batch: _Batch, limits: Thresholds, findings: list[Finding]) -> bool:
    """Reports a batch on another scale than training (e.g. unnormalized); True when it did."""
    assert feature.std is not None and feature.mean is not None
    n, q = len(batch.values), batch.quantiles
    if n < 2 or feature.std <= 0 or not {0.01, 0.25, 0.75, 0.99} <= set(q):
        return False
    ratio = batch.std / feature.std
    iqr = q[0.75] - q[0.25]
    if iqr > 0:
        # The interquartile range must agree, so that one outlier cannot make a batch look rescaled.
        b25, b75 = np.quantile(batch.values, [0.25, 0.75])
        iqr_ratio = float(b75 - b25) / iqr
    else:
        iqr_ratio = ratio  # a mostly-constant feature (e.g. a rare flag): only the std says anything
    high = ratio >= limits.scale_ratio and iqr_ratio >= limits.scale_ratio
    low = ratio <= 1.0 / limits.scale_ratio and iqr_ratio <= 1.0 / limits.scale_ratio and iqr > 0
    # Distribution-free evidence: at training, at most 2% (plus rank error) of values lie beyond
    # the 1% and 99% quantiles and at most half (plus rank error) inside the quartiles.
    if high:
        tails = batch.below(0.01) + batch.above(0.99)
        high = _significant(tails, n, 0.02 + 2 * batch.margin, limits.significance)
    if low:
        inside = int(((batch.values >= q[0.25]) & (batch.values <= q[0.75])).sum())
        low = _significant(inside, n, 0.5 + 2 * batch.margin, limits.significance)
    if not (high or low):
        return False
    error = ratio >= limits.scale_error_ratio or ratio <= 1.0 / limits.scale_error_ratio
    path = feature.path
    if high:
        message = (
            f"inputs look unnormalized: mean {batch.mean:.4g} vs {feature.mean:.4g} at training, std "
            f"{batch.std:.4g} vs {feature.std:.4g} (x{ratio:.3g}) at {path}; apply the bundle's stats or add "
            "a Normalization layer."
        )
    else:
        message = (
            f"inputs look scaled down: std {batch.std:.4g} vs {feature.std:.4g} at training (x{ratio:.3g}) at "
            f"{path}, mean {batch.mean:.4g} vs {feature.mean:.4g}; the batch may be normalized twice; feed it "
            "as at training."
        )
    findings.append(
        _preprocessing_finding(
            "error" if error else "warning",
            path,
            {"mean": _num(feature.mean), "std": _num(feature.std)},
            {"mean": _num(batch.mean), "std": _num(batch.std), "std_ratio": _num(ratio)},
            message,
        )
    )
    return True


def _check_categorical(
    feature: CategoricalSummary, col: np.ndarray, limits: Thresholds, findings: list[Finding]
) -> None:
    path = feature.path
    try:
        family = column_family(col, path)
    except BundleError as e:
        findings.append(_signature_finding("error", path, feature.dtype, _dtype_name(col), str(e)))
        return
    if feature.dtype == "string" and family != "string":
        findings.append(
            _signature_finding(
                "error",
                path,
                "string",
                col.dtype.name,
                f"{path} holds numbers ({col.dtype.name}) but training saw strings; pass the raw strings, "
                "not encoded ids.",
            )
        )
        return
    if feature.dtype != "string":
        if family == "string":
            findings.append(
                _signature_finding(
                    "error",
                    path,
                    feature.dtype,
                    "string",
                    f"{path} holds strings but training saw integer ids ({feature.dtype}); encode them as at training.",
                )
            )
            return
        if family == "numeric":
            values = col.astype(np.float64)
            if not bool(np.all(np.isfinite(values) & (values == np.round(values)))):
                findings.append(
                    _signature_finding(
                        "error",
                        path,
                        feature.dtype,
                        col.dtype.name,
                        f"{path} holds fractional or non-finite floats but training saw integer ids "
                        f"({feature.dtype}); pass the ids themselves.",
                    )
                )
                return
    if not feature.count or not len(col):
        return
    vocabulary = {t for t, _ in feature.vocabulary}
    unseen = Counter(t for t in tokens(col) if t not in vocabulary)
    k = sum(unseen.values())
    rate = k / len(col)
    expected = feature.expected_oov_rate
    if rate >= limits.oov_rate and _significant(k, len(col), expected, limits.significance):
        examples = [t for t, _ in unseen.most_common(5)]
        findings.append(
            _preprocessing_finding(
                "error" if rate >= limits.oov_error_rate else "warning",
                path,
                {"oov_rate": _num(expected), "vocabulary_size": len(feature.vocabulary)},
                {"oov_rate": _num(rate), "oov_count": k, "rows": len(col), "examples": examples},
                f"{path}: {rate:.1%} of values are outside the training vocabulary (expected about "
                f"{expected:.1%}), e.g. {examples[0]!r}; check the feature's encoding, or retrain with these values.",
            )
        )


# --- helpers ---------------------------------------------------------------------------------


def binomial_tail_bound(k: int, n: int, p: float) -> float:
    """An upper bound on P(Binomial(n, p) >= k): the Chernoff bound exp(-n KL(k/n || p)).

    Args:
        k: observed count.
        n: trials.
        p: success probability under the null hypothesis.

    Returns:
        A number in [0, 1]; 1.0 when k/n <= p.
    """
    if n <= 0 or k <= 0:
        return 1.0
    q = k / n
    if q <= p:
        return 1.0
    if p <= 0.0:
        return 0.0
    if q >= 1.0:
        kl = -math.log(p)
    else:
        kl = q * math.log(q / p) + (1.0 - q) * math.log((1.0 - q) / (1.0 - p))
    return math.exp(-n * kl)


def _significant(k: int, n: int, p: float, alpha: float) -> bool:
    return binomial_tail_bound(k, n, min(1.0, p)) < alpha


def _num(value: Any) -> float:
    """A JSON-friendly float with 6 significant digits."""
    return float(f"{float(value):.6g}")


def _dtype_name(array: np.ndarray) -> str:
    return "string" if array.dtype.kind in "US" or _family(array.dtype, array) == "string" else array.dtype.name


def _signature_finding(severity: str, path: str, expected: Any, found: Any, message: str) -> Finding:
    return Finding(Cause.INPUT_SIGNATURE, severity, path, expected, found, message)


def _preprocessing_finding(severity: str, path: str, expected: Any, found: Any, message: str) -> Finding:
    return Finding(Cause.PREPROCESSING, severity, path, expected, found, message)


def check_signature_only(x: Any, signature: Signature | None) -> Report:
    """Shape and dtype checks only, for a bundle saved without preprocessing statistics."""
    findings: list[Finding] = []
    checks = ["input structure and dtypes"]
    raw = _raw_parts(x, findings)
    if raw is not None and signature is not None:
        checks.append("input signature")
        _check_signature(signature, raw, findings)
    findings.append(
        Finding(
            Cause.PREPROCESSING,
            "info",
            "stats",
            None,
            None,
            "no training statistics were saved with this bundle, so only shapes and dtypes were checked; save "
            "preprocessing=PreprocessingStats.from_data(x_train) to check value ranges, shifts and vocabularies.",
        )
    )
    return Report.build(findings, checks, "inputs vs recorded signature", kind="inputs")
