"""Preprocessing layer state and the caller's preprocessing mapping."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import faithful_restore as fr
from faithful_restore.capture import preprocessing as _preprocessing


def _model():
    data = np.arange(30, dtype="float32").reshape(10, 3)
    norm = keras.layers.Normalization()
    norm.adapt(data)
    lookup = keras.layers.StringLookup(vocabulary=["a", "b", "c"])
    inner = keras.Sequential([keras.Input((3,)), norm, keras.layers.Rescaling(0.5, offset=1.0)], name="inner")
    x = keras.Input((3,))
    s = keras.Input((1,), dtype="string")
    out = keras.layers.Concatenate()([inner(x), keras.ops.cast(lookup(s), "float32")])
    return keras.Model([x, s], out), data


def test_layer_states_include_nested_layers():
    model, data = _model()
    states = {e["path"]: e["state"] for e in _preprocessing.layer_states(model)}
    norm = (
        states["inner/normalization"]
        if "inner/normalization" in states
        else next(s for p, s in states.items() if s["kind"] == "Normalization")
    )
    np.testing.assert_allclose(norm["mean"], data.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(norm["variance"], data.var(axis=0), rtol=1e-5)
    assert norm["adapted"] is True
    kinds = {s["kind"] for s in states.values()}
    assert {"Normalization", "Rescaling", "StringLookup"} <= kinds
    lookup = next(s for s in states.values() if s["kind"] == "StringLookup")
    assert lookup["vocabulary_size"] == 4 and len(lookup["vocabulary_sha256"]) == 64


def test_unadapted_normalization_is_recorded_as_such():
    norm = keras.layers.Normalization()
    model = keras.Sequential([keras.Input((2,)), norm])
    state = _preprocessing.layer_states(model)[0]["state"]
    assert state["adapted"] is False


@pytest.mark.parametrize(
    "bad,match",
    [
        ({"x": object()}, "has type object"),
        ({"x": float("nan")}, "JSON cannot hold"),
        ({1: 2}, "keys must be strings"),
        ({"x": np.array([object()], dtype=object)}, "object array"),
        ([1, 2], "must be a mapping"),
    ],
)
def test_bad_preprocessing_values(bad, match):
    with pytest.raises(fr.BundleError, match=match):
        _preprocessing.encode_user(bad)


def test_user_mapping_roundtrip_preserves_dtypes():
    arrays = {"mean": np.arange(3, dtype="float64"), "ids": np.arange(4, dtype="int16"), "bytes": np.array([b"a"])}
    entries, files = _preprocessing.encode_user({**arrays, "n": 3, "nested": {"a": [1, 2]}})
    back = _preprocessing.decode_user(entries, files.__getitem__)
    for key, value in arrays.items():
        assert back[key].dtype == value.dtype
        np.testing.assert_array_equal(back[key], value)
    assert back["n"] == 3 and back["nested"] == {"a": [1, 2]}


def test_unadapted_normalization_warns_at_save(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Normalization(name="norm"), keras.layers.Dense(1)])
    with pytest.warns(fr.PreprocessingWarning, match="'norm' was never adapted"):
        fr.save_bundle(model, str(tmp_path / "b"))
    adapted = keras.layers.Normalization()
    adapted.adapt(np.arange(12, dtype="float32").reshape(4, 3))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", fr.PreprocessingWarning)
        fr.save_bundle(keras.Sequential([keras.Input((3,)), adapted]), str(tmp_path / "c"))


def _stats_bundle(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 3)).astype("float32")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    stats = fr.PreprocessingStats.from_data(x)
    path = str(tmp_path / "b")
    fr.save_bundle(model, path, preprocessing=stats)
    return fr.load_bundle(path), x, stats


def test_stats_saved_with_the_bundle_guard_inference(tmp_path):
    bundle, x, stats = _stats_bundle(tmp_path)
    assert isinstance(bundle.preprocessing["stats"], fr.PreprocessingStats)
    assert bundle.preprocessing["stats"].to_dict() == stats.to_dict()
    assert fr.check_inputs(bundle, x[:256]).ok
    report = fr.check_inputs(bundle.manifest, x[:256] * 255)
    assert not report.ok and report.findings[0].cause is fr.Cause.PREPROCESSING
    assert "unnormalized" in report.summary() or "scale" in report.to_text()
    np.testing.assert_array_equal(bundle.predict(x[:8]), bundle.model.predict(x[:8], verbose=0))
    with pytest.raises(fr.InputCheckError) as info:
        bundle.predict(x[:256] * 255)
    assert info.value.report.findings[0].cause is fr.Cause.PREPROCESSING
    with pytest.raises(fr.InputCheckError) as info:
        bundle.predict(np.ones((4, 5), "float32"))
    assert info.value.report.findings[0].cause is fr.Cause.INPUT_SIGNATURE
    assert bundle.predict(x[:256] * 255, check_inputs=False).shape == (256, 2)


def test_predict_without_stats_checks_the_signature(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    path = str(tmp_path / "b")
    fr.save_bundle(model, path)
    bundle = fr.load_bundle(path)
    assert bundle.predict(np.ones((2, 3), "float32")).shape == (2, 2)
    report = bundle.check_inputs(np.ones((2, 3), "float32"))
    assert report.ok and report.findings[0].severity == "info"
    with pytest.raises(fr.InputCheckError, match="input_signature"):
        bundle.predict(np.ones((2, 4), "float32"))
