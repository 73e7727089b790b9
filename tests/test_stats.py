"""PreprocessingStats: one streaming pass, bounded memory, NumPy-exact moments, strict JSON."""

from __future__ import annotations

import copy
import json
import math
import tracemalloc
from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from faithful_restore.capture import preprocessing as _preprocessing
from faithful_restore.drift.schema import DEFAULT_QUANTILES, CategoricalSummary, NumericSummary, dkw_margin
from faithful_restore.drift.stats import PreprocessingStats
from faithful_restore.errors import BundleError


def _assert_matches_numpy(summary: NumericSummary, column: np.ndarray) -> None:
    finite = column[np.isfinite(column)].astype(np.float64)
    assert summary.count == finite.size
    assert summary.nan_count == int(np.isnan(column).sum())
    assert summary.inf_count == int(np.isinf(column).sum())
    assert summary.mean == pytest.approx(finite.mean(), rel=1e-12, abs=1e-12)
    assert summary.std == pytest.approx(finite.std(), rel=1e-10, abs=1e-12)
    assert summary.min == finite.min() and summary.max == finite.max()


def test_numpy_array_matches_numpy():
    rng = np.random.default_rng(0)
    x = rng.normal(loc=[0.0, 5.0, -3.0], scale=[1.0, 10.0, 0.1], size=(5000, 3))
    x[::97, 1] = np.nan
    x[5, 2] = np.inf
    x[6, 2] = -np.inf
    stats = PreprocessingStats.from_data(x, batch_size=333)
    assert stats.rows == 5000 and [f.name for f in stats.features] == ["0", "1", "2"]
    for j, summary in enumerate(stats.features):
        assert isinstance(summary, NumericSummary)
        _assert_matches_numpy(summary, x[:, j])
        # Fewer values than the sample holds: quantiles are NumPy's own.
        assert summary.quantile_rank_error == 0.0
        finite = x[np.isfinite(x[:, j]), j]
        levels = [q for q, _ in summary.quantiles]
        np.testing.assert_allclose([v for _, v in summary.quantiles], np.quantile(finite, levels), rtol=1e-12)
        assert set(DEFAULT_QUANTILES) <= set(levels)


def test_one_dimensional_array_is_one_feature_and_names_apply():
    stats = PreprocessingStats.from_data(np.arange(10.0))
    assert [(f.name, f.path) for f in stats.features] == [("0", "feature[0]")]
    named = PreprocessingStats.from_data(np.ones((4, 2)), feature_names=["age", "income"])
    assert [(f.name, f.path) for f in named.features] == [("age", "age"), ("income", "income")]
    assert named.feature("income").column == 1 and stats.feature("feature[0]").name == "0"


@pytest.mark.tensorflow
def test_tf_data_dataset_agrees_with_numpy():
    import tensorflow as tf

    rng = np.random.default_rng(1)
    x = rng.normal(size=(3000, 2)).astype("float32")
    cities = rng.choice(["paris", "oslo", "lima"], size=3000, p=[0.5, 0.3, 0.2])
    ds = tf.data.Dataset.from_tensor_slices(({"x": x, "city": cities}, np.zeros(3000, "float32"))).batch(128)
    stats = PreprocessingStats.from_data(ds)
    assert [f.name for f in stats.features] == ["x[0]", "x[1]", "city"]
    for j in range(2):
        _assert_matches_numpy(stats.feature(f"x[{j}]"), x[:, j])
    city = stats.feature("city")
    assert isinstance(city, CategoricalSummary) and city.dtype == "string"
    assert dict(city.vocabulary) == dict(Counter(cities.tolist()))
    assert city.count_error == 0 and city.distinct == 3 and city.distinct_exact
    # The same data as one array gives the same numbers.
    plain = PreprocessingStats.from_data(x)
    for a, b in zip(plain.features, stats.features[:2]):
        assert a.mean == pytest.approx(b.mean, rel=1e-12) and a.std == pytest.approx(b.std, rel=1e-12)


@pytest.mark.tensorflow
def test_plain_tensor_dataset_and_generator_of_tuples():
    import tensorflow as tf

    x = np.arange(40, dtype="float32").reshape(20, 2)
    from_ds = PreprocessingStats.from_data(tf.data.Dataset.from_tensor_slices(x).batch(3))
    from_gen = PreprocessingStats.from_data((x[i : i + 7], None) for i in range(0, 20, 7))
    from_tensor = PreprocessingStats.from_data(tf.constant(x), batch_size=4)
    for stats in (from_ds, from_gen, from_tensor):
        _assert_matches_numpy(stats.features[0], x[:, 0])
        assert stats.rows == 20


def test_sampled_quantiles_are_within_the_documented_rank_error():
    rng = np.random.default_rng(2)
    x = rng.lognormal(size=200_000)
    stats = PreprocessingStats.from_data(x, sample_size=2000, batch_size=4096)
    summary = stats.features[0]
    bound = dkw_margin(2000)
    assert summary.quantile_rank_error == pytest.approx(bound)
    assert bound == pytest.approx(math.sqrt(math.log(2000) / 4000))
    ordered = np.sort(x)
    for q, value in summary.quantiles:
        rank = np.searchsorted(ordered, value) / len(x)
        assert abs(rank - q) <= bound, (q, rank)
    _assert_matches_numpy(summary, x)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.integers(1, 300),
    width=st.integers(1, 4),
    seed=st.integers(0, 2**16),
    batch_a=st.integers(1, 64),
    batch_b=st.integers(1, 400),
    with_nan=st.booleans(),
)
def test_streaming_merge_is_batch_size_invariant(rows, width, seed, batch_a, batch_b, with_nan):
    rng = np.random.default_rng(seed)
    x = rng.normal(loc=rng.uniform(-1e3, 1e3, size=width), scale=rng.uniform(1e-3, 1e3, size=width), size=(rows, width))
    if with_nan:
        x[rng.random(x.shape) < 0.1] = np.nan
    # A sample smaller than the data, so that the sampling itself is exercised.
    a = PreprocessingStats.from_data(x, batch_size=batch_a, sample_size=16, seed=seed)
    b = PreprocessingStats.from_data(x, batch_size=batch_b, sample_size=16, seed=seed)
    for fa, fb, col in zip(a.features, b.features, x.T):
        assert (fa.count, fa.nan_count, fa.min, fa.max) == (fb.count, fb.nan_count, fb.min, fb.max)
        if fa.count:
            assert fa.mean == pytest.approx(fb.mean, rel=1e-9, abs=1e-9)
            assert fa.std == pytest.approx(fb.std, rel=1e-9, abs=1e-9)
            _assert_matches_numpy(fa, col)
        # The sample depends on each value's position only, so the quantiles are identical.
        assert fa.quantiles == fb.quantiles


@settings(max_examples=25, deadline=None)
@given(
    values=st.lists(st.sampled_from(["a", "b", "c", "dd", "é", ""]), min_size=1, max_size=200),
    cuts=st.lists(st.integers(0, 200), max_size=6),
)
def test_vocabulary_is_exact_and_split_invariant_while_it_fits(values, cuts):
    points = sorted({0, len(values), *(c for c in cuts if c < len(values))})
    batches = [np.array(values[i:j], dtype=object) for i, j in zip(points, points[1:])]
    stats = PreprocessingStats.from_data(iter(batches), max_vocabulary=10)
    summary = stats.features[0]
    assert dict(summary.vocabulary) == Counter(values)
    assert summary.count == len(values) and summary.count_error == 0 and summary.distinct == len(set(values))
    counts = [c for _, c in summary.vocabulary]
    assert counts == sorted(counts, reverse=True)


def test_heavy_hitters_are_kept_with_bounded_error_beyond_capacity():
    rng = np.random.default_rng(3)
    ids = rng.zipf(1.3, size=200_000) % 50_000
    stats = PreprocessingStats.from_data(ids.reshape(-1, 1), categorical=[0], max_vocabulary=200, batch_size=5000)
    summary = stats.features[0]
    assert isinstance(summary, CategoricalSummary) and summary.dtype == "int64"
    assert len(summary.vocabulary) <= 200
    true = Counter(ids.tolist())
    assert 0 < summary.count_error <= len(ids) / 201
    stored = dict(summary.vocabulary)
    for token, count in true.most_common(20):
        assert count - summary.count_error <= stored[str(token)] <= count
    # Every token more frequent than the error bound is stored.
    assert all(str(t) in stored for t, c in true.items() if c > summary.count_error)
    assert summary.tail_fraction >= 1 - sum(c for t, c in true.items() if str(t) in stored) / len(ids) - 1e-12
    assert not summary.distinct_exact
    assert summary.distinct == pytest.approx(len(true), rel=0.1)  # about 3% standard error


def test_integer_ids_categorical_by_name_and_floats_refused():
    data = {"user": np.array([3, 3, 7, 9]), "score": np.array([0.5, 1.0, 1.5, 2.0])}
    stats = PreprocessingStats.from_data(data, categorical=["user"])
    assert isinstance(stats.feature("user"), CategoricalSummary)
    assert dict(stats.feature("user").vocabulary) == {"3": 2, "7": 1, "9": 1}
    assert isinstance(stats.feature("score"), NumericSummary)
    assert isinstance(PreprocessingStats.from_data(data).feature("user"), NumericSummary)  # ints: numeric by default
    with pytest.raises(BundleError, match="only strings and integer ids can be categorical"):
        PreprocessingStats.from_data(data, categorical=["score"])
    with pytest.raises(BundleError, match="unknown feature 'nope'"):
        PreprocessingStats.from_data(data, categorical=["nope"])
    with pytest.raises(BundleError, match="index 5 is out of range"):
        PreprocessingStats.from_data(data, categorical=[5])


def _lazy_batches(total_bytes: int, rows: int = 65_536, width: int = 8):
    """Float32 batches generated on demand: their total is never in memory at once."""
    rng = np.random.default_rng(4)
    base = rng.standard_normal((rows, width), dtype=np.float32)
    for i in range(total_bytes // base.nbytes):
        yield base + np.float32(i % 7)


def _peak_traced_bytes(data, **kwargs) -> tuple[PreprocessingStats, int]:
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        stats = PreprocessingStats.from_data(data, **kwargs)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return stats, peak


def test_memory_stays_bounded_on_data_larger_than_it_holds():
    total = 512 * 2**20
    stats, peak = _peak_traced_bytes(_lazy_batches(total))
    assert stats.rows * 8 * 4 >= total * 0.99
    # One 2 MiB batch, its float64 copy and temporaries, and the 8 x 10,000 samples.
    assert peak < 48 * 2**20, peak / 2**20
    assert all(f.quantile_rank_error > 0 for f in stats.features)


@pytest.mark.slow
def test_memory_stays_bounded_on_several_gigabytes(request):
    if "slow" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("about 60 s: run with -m slow")
    total = 8 * 2**30
    stats, peak = _peak_traced_bytes(_lazy_batches(total))
    assert stats.rows * 8 * 4 >= total * 0.99
    assert peak < 48 * 2**20, peak / 2**20


def test_vocabulary_memory_is_bounded_by_capacity():
    def batches():
        rng = np.random.default_rng(5)
        for _ in range(20):
            yield rng.integers(0, 10**9, size=(10_000, 1))  # almost every id is new

    stats, peak = _peak_traced_bytes(batches(), categorical=[0], max_vocabulary=1000)
    summary = stats.features[0]
    assert len(summary.vocabulary) <= 1000 and summary.count == 200_000
    assert summary.distinct == pytest.approx(200_000, rel=0.1)
    assert peak < 64 * 2**20, peak / 2**20


def _mixed_stats() -> PreprocessingStats:
    rng = np.random.default_rng(6)
    data = {
        "x": rng.normal(size=(500, 2)),
        "n": np.where(rng.random(500) < 0.1, np.nan, rng.normal(size=500)),
        "city": rng.choice(["a", "b", "c"], size=500),
        "id": rng.integers(0, 5, size=500),
        "empty": np.full(500, np.nan),
    }
    return PreprocessingStats.from_data(data, categorical=["id"])


def test_to_dict_from_dict_roundtrip_through_json():
    stats = _mixed_stats()
    raw = json.dumps(stats.to_dict(), allow_nan=False, sort_keys=True)
    again = PreprocessingStats.from_dict(json.loads(raw))
    assert again == stats
    assert again.to_dict() == stats.to_dict()
    assert stats.to_dict()["format_version"] == stats.format_version == "1.0"
    assert stats.feature("empty").mean is None and stats.feature("empty").quantiles == ()


def test_stats_survive_the_bundle_preprocessing_mapping():
    stats = _mixed_stats()
    entries, files = _preprocessing.encode_user({"stats": stats.to_dict()})
    assert not files  # plain JSON: no arrays, no pickle
    back = _preprocessing.decode_user(json.loads(json.dumps(entries)), read=None)
    assert back["stats"] == stats  # decoded back into PreprocessingStats


def _mutate(data, path, value):
    target = data
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value


_DELETE = object()


@pytest.mark.parametrize(
    "path,value,match",
    [
        (("format",), "other", "expected 'faithful_restore.preprocessing_stats'"),
        (("format_version",), "2.0", "upgrade faithful_restore"),
        (("format_version",), "one", "must look like"),
        (("rows",), _DELETE, "must have exactly"),
        (("extra",), 1, "must have exactly"),
        (("rows",), -1, "non-negative integer"),
        (("rows",), 499, "accounts for 500 rows"),
        (("settings", "seed"), "0", "must be an integer"),
        (("inputs",), [], "non-empty list"),
        (("inputs", 0, "width"), 3, "features cover"),
        (("features", 0, "kind"), "weird", "kind 'numeric' or 'categorical'"),
        (("features", 0, "mean"), float("nan"), "finite number"),
        (("features", 0, "mean"), None, "all be numbers"),
        (("features", 0, "std"), -1.0, "std >= 0"),
        (("features", 0, "min"), 1e9, "min <= max"),
        (("features", 0, "quantiles"), [[0.5, 0.0], [0.25, 0.0]], "strictly ascending"),
        (("features", 0, "quantiles"), [[1.5, 0.0]], r"outside \[0, 1\]"),
        (("features", 0, "quantiles"), [0.5], r"\[q, value\] pair"),
        (("features", 0, "dtype"), "complex64", "neither numeric"),
        (("features", 0, "dtype"), "no-such-type", "unknown dtype"),
        (("features", 0, "name"), "", "non-empty string"),
        (("features", 1, "name"), "x[0]", "name a feature twice"),
        (("features", 0, "column"), 1, "features cover"),
        (("features", 3, "vocabulary"), [["a", 1], ["a", 2]], "twice"),
        (("features", 3, "vocabulary"), [["a", 0]], "count >= 1"),
        (("features", 3, "vocabulary"), [["a", 10**6]], "add up to more"),
        (("features", 3, "distinct"), 99, "disagrees with distinct"),
        (("features", 3, "distinct_exact"), "yes", "true or false"),
        (("features", 3, "count_error"), 1.5, "non-negative integer"),
    ],
)
def test_from_dict_rejects_malformed_stats(path, value, match):
    data = copy.deepcopy(_mixed_stats().to_dict())
    _mutate(data, path, value)
    with pytest.raises(BundleError, match=match):
        PreprocessingStats.from_dict(data)


def test_from_dict_rejects_non_objects_and_accepts_a_newer_minor_version():
    with pytest.raises(BundleError, match="JSON object"):
        PreprocessingStats.from_dict([1, 2])
    data = _mixed_stats().to_dict()
    data["format_version"] = "1.9"
    data["added_later"] = {"x": 1}
    assert PreprocessingStats.from_dict(data).rows == 500


def _leaves(value, path=()):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _leaves(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _leaves(v, (*path, i))
    else:
        yield path


_VALID = _mixed_stats().to_dict()
_PATHS = list(_leaves(_VALID))


@settings(max_examples=150, deadline=None)
@given(
    index=st.integers(0, len(_PATHS) - 1),
    value=st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-5, 10**6),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=5),
        st.lists(st.integers(), max_size=3),
        st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    ),
)
def test_from_dict_fuzz_only_ever_raises_bundle_error(index, value):
    data = copy.deepcopy(_VALID)
    _mutate(data, _PATHS[index], value)
    try:
        stats = PreprocessingStats.from_dict(data)
    except BundleError:
        return
    json.dumps(stats.to_dict(), allow_nan=False)  # whatever it accepts is still valid JSON


def _consumed():
    gen = iter([np.ones((2, 2))])
    list(gen)
    return gen


class _TensorFlow:
    """A TensorFlow value built when its test runs, so that collecting this module imports no TensorFlow."""

    def __init__(self, build):
        self.build = build

    def make(self):
        import tensorflow as tf

        return self.build(tf)


@pytest.mark.parametrize(
    "data,kwargs,match",
    [
        (np.empty((0, 3)), {}, "holds no rows"),
        ([], {}, "yielded no batches"),
        (_consumed(), {}, "may already have been consumed"),
        pytest.param(
            _TensorFlow(lambda tf: tf.data.Dataset.from_tensor_slices(np.ones((0, 2))).batch(2)),
            {},
            "yielded no batches",
            marks=pytest.mark.tensorflow,
        ),
        ([[[1.0, 2.0], [3.0]]], {}, "ragged"),
        (np.array([[1, "a"], [2, "b"]], dtype=object), {}, "holding int values, not strings"),
        (np.ones((2, 3, 4)), {}, "rank 1 or 2"),
        ([1.0, 2.0], {}, "is a scalar"),
        ([np.ones((3, 2)), np.ones((3, 3))], {}, "ragged"),
        ([{"a": np.ones(2)}, {"b": np.ones(2)}], {}, "same inputs"),
        ([np.ones(2), np.array(["a", "b"])], {}, "keep one type"),
        ({"a": np.ones(3), "b": np.ones(2)}, {}, "different numbers of rows"),
        (np.ones((3, 2)), {"feature_names": ["a"]}, "one per column"),
        ({"a": np.ones(3)}, {"feature_names": ["a"]}, "named by their keys"),
        (np.ones((3, 2)), {"max_vocabulary": 0}, "max_vocabulary must be"),
        (np.ones((3, 2)), {"quantiles": [2.0]}, r"in \[0, 1\]"),
        (np.array(["2020-01-01"], dtype="datetime64[D]"), {}, "numbers or strings"),
        pytest.param(
            _TensorFlow(lambda tf: tf.ragged.constant([[1.0], [2.0, 3.0]])), {}, "dense", marks=pytest.mark.tensorflow
        ),
        (42, {}, "must be an array"),
        ([(np.ones(2), 1, 2, 3)], {}, "tuple of 4 items"),
        ({"a": np.ones((2, 2)), "a[0]": np.ones(2)}, {}, "rename the dict keys"),
    ],
)
def test_bad_data_raises_bundle_error(data, kwargs, match):
    if isinstance(data, _TensorFlow):
        data = data.make()
    with pytest.raises(BundleError, match=match):
        PreprocessingStats.from_data(data, **kwargs)


def test_seed_makes_sampling_deterministic():
    x = np.random.default_rng(7).normal(size=(5000, 1))
    a = PreprocessingStats.from_data(x, sample_size=100, seed=1)
    assert a == PreprocessingStats.from_data(x, sample_size=100, seed=1)
    assert a.features[0].quantiles != PreprocessingStats.from_data(x, sample_size=100, seed=2).features[0].quantiles
