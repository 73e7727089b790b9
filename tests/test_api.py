"""The public surface: exports, and our own clear errors for bad arguments to every function."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import sequential_model

import faithful_restore as fr


def test_public_surface():
    assert set(fr.__all__) >= {
        "save_bundle",
        "load_bundle",
        "compare",
        "assert_roundtrip",
        "verify_bundle",
        "Bundle",
        "Manifest",
        "Report",
        "Finding",
        "Cause",
        "FaithfulRestoreError",
        "BundleError",
        "IntegrityError",
        "VersionSkewError",
        "RoundtripError",
        "VersionSkewWarning",
    }
    for name in fr.__all__:
        assert hasattr(fr, name), name
    assert issubclass(fr.IntegrityError, fr.BundleError) and issubclass(fr.BundleError, fr.FaithfulRestoreError)
    assert issubclass(fr.RoundtripError, AssertionError) and issubclass(fr.VersionSkewError, fr.FaithfulRestoreError)


def test_importing_the_package_does_not_import_tensorflow():
    import subprocess
    import sys

    code = "import sys, faithful_restore; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("api") / "b"
    model = sequential_model()
    fr.save_bundle(model, str(path))
    return model, str(path)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"on_version_skew": "loud"}, "on_version_skew must be one of"),
        ({"compile": "yes"}, "compile must be True or False"),
        ({"verify": 1}, "verify must be True or False"),
        ({"safe_mode": None}, "safe_mode must be True or False"),
        ({"custom_objects": ["MyLayer"]}, "custom_objects must be a dict"),
        ({"state": {"step": 3}}, "cannot save"),
        ({"state": [1, 2]}, "must map names"),
        ({"state": {"not an identifier": __import__("tensorflow").Variable(1)}}, "identifiers"),
    ],
)
def test_load_bundle_bad_arguments(saved, kwargs, match):
    with pytest.raises(fr.BundleError, match=match):
        fr.load_bundle(saved[1], **kwargs)


def test_path_that_is_a_file(tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("x")
    for call in (fr.load_bundle, fr.verify_bundle):
        with pytest.raises(fr.BundleError, match="is a file"):
            call(str(f))
    with pytest.raises(fr.BundleError, match="is a file, not a bundle directory; refusing"):
        fr.save_bundle(sequential_model(), str(f), overwrite=True)
    assert f.read_text() == "x"


def test_assert_roundtrip_and_compare_bad_arguments(saved):
    model, _ = saved
    with pytest.raises(fr.BundleError, match="do not pass overwrite"):
        fr.assert_roundtrip(model, overwrite=True)
    with pytest.raises(fr.BundleError, match="keras.Model"):
        fr.assert_roundtrip("model")
    with pytest.raises(fr.BundleError, match="atol must be"):
        fr.compare(model, model, atol=float("nan"))
    with pytest.raises(fr.BundleError, match="cannot be called on sample_inputs"):
        fr.assert_roundtrip(model, np.ones((2, 9), "float32"))


def test_an_unsupported_stack_fails_at_import_with_a_clear_message():
    from faithful_restore import _supported

    _supported.check("2.21.0", "3.15.1")
    _supported.check("2.16.2", "3.3.3")
    with pytest.raises(fr.UnsupportedEnvironmentError, match=r"Keras 3\.2\.1 \(needs >= 3\.3\)") as info:
        _supported.check("2.16.2", "3.2.1")
    assert isinstance(info.value, ImportError) and "pip install" in str(info.value)
    with pytest.raises(fr.UnsupportedEnvironmentError, match=r"TensorFlow 2\.15\.1 .* and Keras 2\.15\.0"):
        _supported.check("2.15.1", "2.15.0")
