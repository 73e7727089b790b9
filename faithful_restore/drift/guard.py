"""Checks a batch of inputs against what the model saw at training time.

:func:`check_inputs` compares a batch with :class:`~faithful_restore.PreprocessingStats`
and, optionally, the model's input :class:`~faithful_restore.Signature`, and returns a
:class:`~faithful_restore.Report`:

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
  :attr:`~faithful_restore.drift.schema.CategoricalSummary.expected_oov_rate`. Rates must also reach a
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

from faithful_restore.drift.batches import column, column_family, tokens
from faithful_restore.drift.schema import CategoricalSummary, NumericSummary, dkw_margin
from faithful_restore.drift.shapes import (
    _PLAIN,
    _check_signature,
    _dtype_name,
    _match_inputs,
    _raw_parts,
    _signature_finding,
)
from faithful_restore.drift.stats import PreprocessingStats
from faithful_restore.errors import ArgumentError, ArgumentTypeError, BundleError
from faithful_restore.findings import Cause, Finding, Report
from faithful_restore.format.records import Signature


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
                raise ArgumentError(f"threshold {f.name} must be a finite number, found {value!r}.")
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
                raise ArgumentError(f"threshold {name} must be {rule}, found {getattr(self, name)!r}.")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> Thresholds:
        """Defaults overridden by ``data``'s keys.

        Raises:
            BundleError: for an unknown key or an out-of-range value.
        """
        if not isinstance(data, Mapping):
            raise ArgumentTypeError(f"thresholds must be a Thresholds or a dict, found {type(data).__name__}.")
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise BundleError(f"unknown thresholds {sorted(unknown)}; the known ones are {sorted(known)}.")
        return cls(**dict(data))


def check_batch(
    stats: PreprocessingStats | None,
    x: Any,
    *,
    signature: Signature | None = None,
    thresholds: Thresholds | Mapping[str, Any] | None = None,
) -> Report:
    """Compares a batch with training statistics (and the model's signature, when given).

    ``stats`` None means a bundle saved without statistics: only the signature is checked. The
    batch itself never raises: its problems are findings. See :func:`faithful_restore.check_inputs`.
    """
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
