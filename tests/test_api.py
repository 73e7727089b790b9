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
        ({"check_probe": 1}, "check_probe must be True or False"),
        ({"safe_mode": None}, "safe_mode must be True or False"),
        ({"custom_objects": ["MyLayer"]}, "custom_objects must be a dict"),
        ({"state": {"step": 3}}, "cannot save"),
        ({"state": [1, 2]}, "must map names"),
        ({"state": {"not an identifier": __import__("tensorflow").Variable(1)}}, "identifiers"),
    ],
)
def test_load_bundle_bad_arguments(saved, kwargs, match):
    with pytest.raises(fr.BundleError, match=match) as info:
        fr.load_bundle(saved[1], **kwargs)
    # Argument errors are also the builtin a caller would catch for a bad argument.
    assert isinstance(info.value, (ValueError, TypeError)), type(info.value)
    flags = {"compile", "safe_mode", "check_probe", "custom_objects"}
    wrong_type = bool(flags & set(kwargs)) or kwargs.get("state") == [1, 2] or "cannot save" in match
    assert isinstance(info.value, TypeError if wrong_type else ValueError), type(info.value)


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
    with pytest.raises(ValueError, match="atol must be") as info:
        fr.compare(model, model, atol=float("nan"))
    assert isinstance(info.value, fr.ArgumentError) and isinstance(info.value, fr.BundleError)
    with pytest.raises(TypeError, match="must be a keras.Model, a faithful_restore.Bundle"):
        fr.compare(model, 42)
    with pytest.raises(ValueError, match="severity must be one of"):
        fr.Finding(fr.Cause.WEIGHTS, "fatal", "x", None, None, "m")
    with pytest.raises(TypeError, match="overwrite must be True or False"):
        fr.save_bundle(model, "unused", overwrite="yes")
    with pytest.raises(fr.BundleError, match="cannot be called on sample_inputs"):
        fr.assert_roundtrip(model, sample_inputs=np.ones((2, 9), "float32"))


def test_an_unsupported_stack_fails_at_import_with_a_clear_message():
    from faithful_restore.runtime import supported as _supported

    _supported.check("2.21.0", "3.15.1")
    _supported.check("2.16.2", "3.3.3")
    with pytest.raises(fr.UnsupportedEnvironmentError, match=r"Keras 3\.2\.1 \(needs >= 3\.3\)") as info:
        _supported.check("2.16.2", "3.2.1")
    assert isinstance(info.value, ImportError) and "pip install" in str(info.value)
    with pytest.raises(fr.UnsupportedEnvironmentError, match=r"TensorFlow 2\.15\.1 .* and Keras 2\.15\.0"):
        _supported.check("2.15.1", "2.15.0")


def test_deprecated_spellings_still_work_and_warn(saved, tmp_path):
    model, path = saved
    x = np.ones((4, 4), "float32")
    with pytest.warns(DeprecationWarning, match=r"load_bundle\(verify=\.\.\.\) is deprecated.*check_probe"):
        fr.load_bundle(path, verify=False)
    with pytest.warns(DeprecationWarning, match="passing sample_inputs to compare"):
        old = fr.compare(model, model, x, check_training_step=False)
    new = fr.compare(model, model, sample_inputs=x, check_training_step=False)
    assert old.to_dict() == new.to_dict()
    with pytest.warns(DeprecationWarning, match="passing sample_inputs to assert_roundtrip"):
        fr.assert_roundtrip(model, x, check_training_step=False)
    with pytest.raises(TypeError, match="both by position and by keyword"):
        fr.compare(model, model, x, sample_inputs=x)
    with pytest.raises(TypeError, match="only extra argument"):
        fr.compare(model, model, x, x)
    manager = fr.BundleManager(tmp_path / "run")
    manager.save(model, 3)
    with pytest.warns(DeprecationWarning, match=r"BundleManager.all.*bundles\(\)"):
        assert manager.all == manager.bundles()
    with pytest.warns(DeprecationWarning, match=r"BundleManager.latest.*newest\(\)"):
        assert manager.latest == manager.newest() and manager.newest().step == 3


def test_read_manifest_is_public_and_reads_only_the_manifest(saved):
    _, path = saved
    manifest = fr.read_manifest(path)
    assert isinstance(manifest, fr.Manifest) and manifest.files
    with pytest.raises(fr.BundleError, match="does not exist"):
        fr.read_manifest(path + "-missing")
