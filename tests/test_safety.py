"""The config scan refuses code and unknown classes before Keras sees a config."""

from __future__ import annotations

import pytest

import faithful_restore as fr
from faithful_restore.capture.safety import scan


def _layer(class_name, module="keras.layers", registered=None, **config):
    return {
        "module": module,
        "class_name": class_name,
        "config": {"name": "x", **config},
        "registered_name": registered,
    }


def test_keras_classes_and_data_markers_pass():
    config = {"layers": [_layer("Dense"), {"class_name": "__keras_tensor__", "config": {}}]}
    scan(config, safe_mode=True, custom_objects=None, where="t")


def test_lambda_refused_only_in_safe_mode():
    config = {"layers": [_layer("Lambda", function={"class_name": "__lambda__", "config": {"code": "AAAA"}})]}
    with pytest.raises(fr.BundleError, match="Lambda 'x'.*safe_mode"):
        scan(config, safe_mode=True, custom_objects=None, where="t")
    scan(config, safe_mode=False, custom_objects=None, where="t")


@pytest.mark.tensorflow
@pytest.mark.parametrize("module", ["os", "subprocess", "__main__", None, "builtins.evil.x"])
def test_unknown_modules_are_never_resolved(module):
    config = {"layers": [_layer("system", module=module, registered="system")]}
    with pytest.raises(fr.BundleError, match="neither a Keras class nor registered"):
        scan(config, safe_mode=True, custom_objects=None, where="t")


@pytest.mark.tensorflow
def test_custom_objects_allow_a_class():
    config = {"layers": [_layer("MyLayer", module="my_pkg.layers", registered="MyLayer")]}
    scan(config, safe_mode=True, custom_objects={"MyLayer": object}, where="t")


def test_deep_nesting_refused():
    node: dict = {}
    for _ in range(300):
        node = {"x": node}
    with pytest.raises(fr.BundleError, match="nests deeper"):
        scan(node, safe_mode=True, custom_objects=None, where="t")
