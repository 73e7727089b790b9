"""check_inputs: each kind of bad batch gets the right finding; training-like batches get none."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from faithful_restore.capture import environment as _environment
from faithful_restore.capture import preprocessing as _preprocessing
from faithful_restore.diagnose.inputs import check_inputs
from faithful_restore.drift.guard import Thresholds, binomial_tail_bound
from faithful_restore.drift.stats import PreprocessingStats
from faithful_restore.errors import BundleError
from faithful_restore.findings import Cause, Report
from faithful_restore.format import manifest as _manifest
from faithful_restore.format.records import Signature, TensorRecord

CITIES = np.array([f"city{i}" for i in range(40)])


def _draw(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Training-like data: several shapes of distribution, including skewed and discrete ones."""
    return {
        "x": rng.normal(loc=[0.0, 10.0, -5.0, 100.0], scale=[1.0, 2.0, 0.5, 30.0], size=(n, 4)).astype("float32"),
        "income": rng.lognormal(10.0, 1.0, size=n),
        "heavy": rng.standard_t(3, size=n),
        "flag": (rng.random(n) < 0.01).astype("float32"),
        "visits": rng.poisson(2.0, size=n),
        "city": CITIES[np.minimum(rng.zipf(1.6, size=n), 40) - 1],
    }


@pytest.fixture(scope="module")
def stats() -> PreprocessingStats:
    return PreprocessingStats.from_data(_draw(np.random.default_rng(0), 20_000))


@pytest.fixture(scope="module")
def plain() -> PreprocessingStats:
    """Standardized training data as one array, as most tabular models see it."""
    return PreprocessingStats.from_data(np.random.default_rng(1).normal(size=(20_000, 4)))


def _batch(n: int = 64, seed: int = 10) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 4))


def _problems(report: Report) -> list[tuple[Cause, str, str]]:
    return [(f.cause, f.path, f.severity) for f in report.findings if f.severity != "info"]


def test_training_like_batches_have_no_findings(stats):
    rng = np.random.default_rng(123)
    flagged = []
    for i in range(240):
        n = (1, 4, 16, 64, 256, 1024)[i % 6]
        report = check_inputs(stats, _draw(rng, n))
        flagged += [(n, f.path, f.message) for f in report.findings if f.severity != "info"]
        assert report.ok
    # Each test is built for a false-positive rate below 1e-6 (module docstring of _guard).
    assert flagged == []


def test_training_like_batches_of_a_plain_array_have_no_findings(plain):
    for seed in range(200):
        assert _problems(check_inputs(plain, _batch(32, seed))) == []


def test_unnormalized_batch_is_reported(plain):
    report = check_inputs(plain, _batch() * 255)
    assert not report.ok
    assert {(c, p, s) for c, p, s in _problems(report)} == {
        (Cause.PREPROCESSING, f"feature[{j}]", "error") for j in range(4)
    }
    assert "inputs look unnormalized" in report.findings[0].message
    assert "Normalization layer" in report.findings[0].message
    assert report.findings[0].found["std_ratio"] > 100


def test_raw_pixel_like_batch_is_reported_even_when_small(plain):
    raw = np.random.default_rng(2).uniform(0, 255, size=(8, 4))
    report = check_inputs(plain, raw)
    assert [p for _, p, s in _problems(report) if s == "error"] == [f"feature[{j}]" for j in range(4)]


def test_scaled_down_batch_is_reported(plain):
    report = check_inputs(plain, _batch(256) / 255)
    assert {p for c, p, _ in _problems(report) if c is Cause.PREPROCESSING} == {f"feature[{j}]" for j in range(4)}
    assert "scaled down" in report.findings[0].message


def test_shifted_feature_is_reported_on_that_feature_only(plain):
    x = _batch(128)
    x[:, 2] += 1.5
    report = check_inputs(plain, x)
    assert _problems(report) == [(Cause.PREPROCESSING, "feature[2]", "warning")]
    finding = report.findings[0]
    assert "standard deviations" in finding.message and finding.found["shift_in_std"] == pytest.approx(1.5, abs=0.3)
    x[:, 2] += 3.0
    assert (Cause.PREPROCESSING, "feature[2]", "error") in _problems(check_inputs(plain, x))


def test_mean_shift_scales_with_batch_size(plain):
    small = _batch(8, seed=3)
    small[:, 0] += 0.5
    large = _batch(4096, seed=3)
    large[:, 0] += 0.5
    assert _problems(check_inputs(plain, small)) == []  # 0.5 std in 8 rows: within chance
    assert _problems(check_inputs(plain, large)) == [(Cause.PREPROCESSING, "feature[0]", "warning")]
    # A tiny shift in a huge batch is significant but too small to matter.
    huge = _batch(100_000, seed=4)
    huge[:, 1] += 0.05
    assert _problems(check_inputs(plain, huge)) == []


def test_nan_and_inf_are_errors(plain):
    x = _batch()
    x[3, 1] = np.nan
    x[4, 1] = np.inf
    report = check_inputs(plain, x)
    assert _problems(report) == [(Cause.PREPROCESSING, "feature[1]", "error")]
    assert report.findings[0].found == {"nan": 1, "inf": 1, "rows": 64}


def test_values_beyond_the_training_range_are_reported(plain):
    x = _batch(100)
    x[:20, 3] = 50.0
    report = check_inputs(plain, x)
    assert (Cause.PREPROCESSING, "feature[3]", "warning") in _problems(report)
    assert any("outside the training range" in f.message for f in report.findings)


def test_wrong_feature_count_and_rank_are_signature_errors(plain):
    report = check_inputs(plain, _batch()[:, :3])
    assert _problems(report) == [(Cause.INPUT_SIGNATURE, "x", "error")]
    assert report.findings[0].expected == {"features": 4} and report.findings[0].found == {"features": 3}
    assert _problems(check_inputs(plain, np.ones((2, 4, 1)))) == [(Cause.INPUT_SIGNATURE, "x", "error")]
    assert _problems(check_inputs(plain, 3.0)) == [(Cause.INPUT_SIGNATURE, "x", "error")]


def test_wrong_dtypes_are_signature_errors(stats, plain):
    strings = np.array([["1.0"] * 4] * 5)
    report = check_inputs(plain, strings)
    assert {p for c, p, s in _problems(report) if c is Cause.INPUT_SIGNATURE and s == "error"} == {
        f"feature[{j}]" for j in range(4)
    }
    batch = _draw(np.random.default_rng(5), 32)
    batch["city"] = np.arange(32.0)  # ids where strings were expected
    report = check_inputs(stats, batch)
    assert _problems(report) == [(Cause.INPUT_SIGNATURE, "city", "error")]
    assert "not encoded ids" in report.findings[0].message
    objects = np.array([[object()] * 4], dtype=object)
    assert {c for c, _, _ in _problems(check_inputs(plain, objects))} == {Cause.INPUT_SIGNATURE}


def test_unseen_vocabulary_is_reported(stats):
    batch = _draw(np.random.default_rng(6), 64)
    batch["city"] = batch["city"].astype(object)
    batch["city"][:16] = "atlantis"
    report = check_inputs(stats, batch)
    assert _problems(report) == [(Cause.PREPROCESSING, "city", "warning")]
    assert report.findings[0].found["examples"] == ["atlantis"]
    batch["city"][:] = "atlantis"
    assert _problems(check_inputs(stats, batch)) == [(Cause.PREPROCESSING, "city", "error")]


def test_integer_id_vocabulary():
    ids = np.random.default_rng(7).integers(0, 20, size=5000)
    stats = PreprocessingStats.from_data({"item": ids}, categorical=["item"])
    assert _problems(check_inputs(stats, {"item": ids[:100]})) == []
    assert _problems(check_inputs(stats, {"item": ids[:100] + 1000})) == [(Cause.PREPROCESSING, "item", "error")]
    assert _problems(check_inputs(stats, {"item": ids[:100].astype("float32")})) == []
    assert _problems(check_inputs(stats, {"item": ids[:100] + 0.5})) == [(Cause.INPUT_SIGNATURE, "item", "error")]
    assert _problems(check_inputs(stats, {"item": np.array(["3"] * 5)})) == [(Cause.INPUT_SIGNATURE, "item", "error")]


def test_missing_and_unknown_inputs(stats):
    batch = _draw(np.random.default_rng(8), 16)
    del batch["income"]
    batch["extra"] = np.ones(16)
    problems = _problems(check_inputs(stats, batch))
    assert (Cause.INPUT_SIGNATURE, "income", "error") in problems
    assert (Cause.INPUT_SIGNATURE, "extra", "warning") in problems
    assert _problems(check_inputs(stats, np.ones((4, 9)))) == [(Cause.INPUT_SIGNATURE, "x", "error")]
    rows = _draw(np.random.default_rng(8), 16)
    rows["flag"] = rows["flag"][:5]
    assert _problems(check_inputs(stats, rows)) == [(Cause.INPUT_SIGNATURE, "x", "error")]


def test_signature_checks_shape_and_dtype():
    stats = PreprocessingStats.from_data({"a": np.ones((10, 3)), "s": np.array(["u", "v"] * 5)})
    signature = Signature(
        (
            TensorRecord("a", (None, 3), "float32"),
            TensorRecord("s", (None,), "string"),
            TensorRecord("k", (None,), "int32"),
        ),
        (),
    )
    good = {"a": np.ones((4, 3)), "s": np.array(["u"] * 4), "k": np.arange(4)}
    assert _problems(check_inputs(stats, good, signature=signature)) == []
    trailing_axis = {**good, "k": np.arange(4).reshape(4, 1)}  # Keras squeezes a trailing 1
    assert _problems(check_inputs(stats, trailing_axis, signature=signature)) == []
    wrong_shape = {**good, "a": np.ones((4, 3, 1))}
    assert (Cause.INPUT_SIGNATURE, "a", "error") in _problems(check_inputs(stats, wrong_shape, signature=signature))
    floats_for_strings = {**good, "s": np.ones(4)}
    problems = _problems(check_inputs(stats, floats_for_strings, signature=signature))
    assert (Cause.INPUT_SIGNATURE, "s", "error") in problems
    floats_for_ints = {**good, "k": np.arange(4) + 0.5}
    assert _problems(check_inputs(stats, floats_for_ints, signature=signature)) == [
        (Cause.INPUT_SIGNATURE, "k", "warning")
    ]
    missing = {"a": good["a"], "s": good["s"]}
    assert _problems(check_inputs(stats, missing, signature=signature)) == [(Cause.INPUT_SIGNATURE, "k", "error")]
    assert _problems(check_inputs(stats, np.ones((4, 3)), signature=signature))[0] == (
        Cause.INPUT_SIGNATURE,
        "x",
        "error",
    )


@pytest.mark.tensorflow
def test_stats_dict_and_manifest_are_accepted(plain):
    x = _batch() * 255
    expected = _problems(check_inputs(plain, x))
    assert _problems(check_inputs(plain.to_dict(), x)) == expected
    user, files = _preprocessing.encode_user({"stats": plain.to_dict()})
    assert not files
    signature = Signature((TensorRecord("features", (None, 4), "float32"),), ())
    manifest = _manifest.Manifest(
        format_version=_manifest.FORMAT_VERSION,
        created="2026-01-01T00:00:00Z",
        library_version="0",
        metadata={},
        environment=_environment.current(),
        model={"class": "Sequential", "name": "m", "params": {"trainable": 0, "non_trainable": 0}, "layers": []},
        signature=signature,
        optimizer=None,
        compile=None,
        preprocessing={"layers": [], "user": user},
        regularization=[],
        random_state=[],
        state=[],
        probe=None,
    )
    assert _problems(check_inputs(manifest, x)) == expected
    as_dict = json.loads(manifest.to_json())
    assert _problems(check_inputs(as_dict, x)) == expected
    # The manifest's signature is used: a rank-3 batch is reported against it.
    assert (Cause.INPUT_SIGNATURE, "features", "error") in _problems(check_inputs(manifest, np.ones((2, 4, 3))))
    # Without statistics only the signature can be checked (the rule Bundle.check_inputs follows too).
    bare = _manifest.Manifest(**{**manifest.__dict__, "preprocessing": {"layers": [], "user": {}}})
    report = check_inputs(bare, np.ones((2, 4, 3)))
    assert (Cause.INPUT_SIGNATURE, "features", "error") in _problems(report)
    assert any("no training statistics were saved" in f.message for f in report.findings)
    with pytest.raises(BundleError, match="needs PreprocessingStats"):
        check_inputs([1, 2], x)
    with pytest.raises(BundleError, match="expected 'faithful_restore.preprocessing_stats'"):
        check_inputs({"format": "other"}, x)


def test_thresholds_override_and_validation(plain):
    x = _batch(128)
    x[:, 2] += 1.5
    assert _problems(check_inputs(plain, x, thresholds={"mean_shift_sigmas": 2.0})) == []
    assert _problems(check_inputs(plain, x, thresholds=Thresholds(mean_shift_error_sigmas=1.0)))[0][2] == "error"
    assert Thresholds.from_dict(Thresholds().to_dict()) == Thresholds()
    with pytest.raises(BundleError, match="unknown thresholds"):
        check_inputs(plain, x, thresholds={"nope": 1})
    with pytest.raises(BundleError, match="significance must be in"):
        Thresholds(significance=0.0)
    with pytest.raises(BundleError, match="scale_error_ratio must be >= scale_ratio"):
        Thresholds(scale_ratio=20.0)
    with pytest.raises(BundleError, match="finite number"):
        Thresholds(oov_rate=math.nan)


def test_report_is_json_and_names_what_was_checked(stats):
    batch = _draw(np.random.default_rng(9), 64)
    batch["x"] = batch["x"] * 255
    batch["income"][0] = np.nan
    report = check_inputs(stats, batch)
    data = json.loads(report.to_json())
    assert data["ok"] is False and {"value ranges", "out-of-vocabulary rate"} <= set(data["checks"])
    assert Report.from_dict(data).findings == report.findings
    assert report.findings[0].severity == "error"
    for finding in report.findings:
        assert finding.message.endswith(".")


@pytest.mark.tensorflow
def test_tuple_batches_and_tensors_are_read():
    import tensorflow as tf

    stats = PreprocessingStats.from_data(np.random.default_rng(11).normal(size=(1000, 2)))
    x = np.random.default_rng(12).normal(size=(32, 2)).astype("float32")
    assert check_inputs(stats, (tf.constant(x), np.zeros(32))).ok
    assert check_inputs(stats, {"only": x}).ok  # one input either way
    report = check_inputs(stats, np.zeros((0, 2)))
    assert _problems(report) == [(Cause.INPUT_SIGNATURE, "x", "warning")]


def test_binomial_tail_bound_bounds_the_exact_tail():
    for n, p in [(10, 0.1), (64, 0.02), (200, 0.5), (1, 1e-4)]:
        for k in range(n + 1):
            exact = sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))
            assert binomial_tail_bound(k, n, p) >= exact - 1e-12
    assert binomial_tail_bound(3, 10, 0.0) == 0.0 and binomial_tail_bound(0, 10, 0.5) == 1.0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    x=st.one_of(
        hnp.arrays(
            dtype=st.sampled_from(["float32", "float64", "int64", "bool", "U3", "S2"]),
            shape=hnp.array_shapes(min_dims=0, max_dims=3, max_side=6),
        ),
        st.lists(st.one_of(st.floats(), st.text(max_size=2), st.none()), max_size=5),
        st.dictionaries(st.sampled_from(["x", "city", "other"]), hnp.arrays("float64", st.integers(0, 5)), max_size=3),
    )
)
def test_check_inputs_reports_instead_of_raising(stats, plain, x):
    for reference in (stats, plain):
        report = check_inputs(reference, x)
        json.dumps(report.to_dict(), allow_nan=False, default=str)
        assert all(f.cause in (Cause.INPUT_SIGNATURE, Cause.PREPROCESSING) for f in report.findings)


@pytest.mark.slow
def test_false_positive_rate_over_many_batches(stats, request):
    if "slow" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("about 15 s: run with -m slow")
    rng = np.random.default_rng(99)
    flagged = 0
    for i in range(12_000):
        report = check_inputs(stats, _draw(rng, (1, 4, 16, 64, 256, 1024)[i % 6]))
        flagged += any(f.severity != "info" for f in report.findings)
    assert flagged == 0
