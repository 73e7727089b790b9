"""Shared fixtures: small real models of every kind the library must handle.

Nothing here imports TensorFlow or Keras at import time, so that TensorFlow-free test modules
(tests/test_fast_imports.py names them) run without paying for it: the helpers import Keras when
called, and the names that need Keras (``KERAS``, ``needs_segments``, ``TinySubclassed`` ...) are
computed on first access.

TensorFlow's CPU is still split into two logical devices before any op runs, so that distributed
tests can use a 2-replica MirroredStrategy on a CPU-only machine: an import hook does it right
after ``tensorflow`` finishes importing, whoever imports it first.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.metadata
import json
import os
import sys
from typing import TYPE_CHECKING, Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from faithful_restore.runtime import supported as _supported  # noqa: E402

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

_DEVICE_SETUP_ERROR: list[BaseException] = []


def _split_cpu(tf_module: Any) -> None:
    """Two logical CPUs, for the 2-replica MirroredStrategy; only possible before any op ran."""
    try:
        cpus = tf_module.config.list_physical_devices("CPU")
        tf_module.config.set_logical_device_configuration(
            cpus[0], [tf_module.config.LogicalDeviceConfiguration(), tf_module.config.LogicalDeviceConfiguration()]
        )
    except Exception as e:  # raised again by mirrored_strategy(), the one helper that needs it
        _DEVICE_SETUP_ERROR.append(e)


class _AfterImport(importlib.abc.MetaPathFinder):
    """Runs ``callback(module)`` once, right after the top-level module ``name`` executed.

    A mere ``importlib.util.find_spec(name)`` (no import) leaves the hook in place: only the spec
    whose module is actually executed fires it.
    """

    def __init__(self, name: str, callback) -> None:
        self.name = name
        self.callback = callback
        self.done = False

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.name or self.done:
            return None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None) if finder is not self else None
            spec = find(fullname, path, target) if find is not None else None
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        original = loader.exec_module

        def exec_module(module):
            original(module)
            if not self.done:
                self.done = True
                if self in sys.meta_path:
                    sys.meta_path.remove(self)
                self.callback(module)

        loader.exec_module = exec_module  # this spec's loader instance only
        return spec


if "tensorflow" in sys.modules:  # imported by an earlier plugin: still before any test ran an op
    _split_cpu(sys.modules["tensorflow"])
elif not any(isinstance(f, _AfterImport) and f.name == "tensorflow" for f in sys.meta_path):
    sys.meta_path.insert(0, _AfterImport("tensorflow", _split_cpu))


def _keras_version() -> str:
    try:
        return importlib.metadata.version("keras")
    except importlib.metadata.PackageNotFoundError:
        import keras

        return keras.__version__


@functools.cache
def _keras_classes() -> dict[str, type]:
    """The custom layer and subclassed model, defined (and registered) on first use."""
    import keras

    @keras.saving.register_keras_serializable(package="fr_tests")
    class Scale(keras.layers.Layer):
        """A custom layer with a weight and a constructor argument."""

        def __init__(self, factor: float = 1.0, **kwargs):
            super().__init__(**kwargs)
            self.factor = factor

        def build(self, input_shape):
            self.w = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="w")

        def call(self, x):
            return x * self.w * self.factor

        def get_config(self):
            return {**super().get_config(), "factor": self.factor}

    @keras.saving.register_keras_serializable(package="fr_tests")
    class TinySubclassed(keras.Model):
        """A subclassed model with a custom layer, get_config and registration."""

        def __init__(self, units: int = 6, **kwargs):
            super().__init__(**kwargs)
            self.units = units
            self.hidden = keras.layers.Dense(units, activation="relu")
            self.scale = Scale(0.5)
            self.drop = keras.layers.Dropout(0.2)
            self.out = keras.layers.Dense(1)

        def call(self, x, training=False):
            return self.out(self.drop(self.scale(self.hidden(x)), training=training))

        def get_config(self):
            return {"units": self.units, "name": self.name}

    return {"Scale": Scale, "TinySubclassed": TinySubclassed}


def _needs_segments():
    from faithful_restore import fast
    from faithful_restore.fast import inline_hash as _inline_hash
    from faithful_restore.runtime import keras_format as _keras_format

    return pytest.mark.skipif(
        not (_keras_format.supports_directories() and fast.enabled() and _inline_hash.PATCH.available()),
        reason="segments are recorded only by the inline_hash speed patch (on, and Keras 3.4+)",
    )


# Computed on first access (PEP 562), so that importing conftest costs no TensorFlow. KERAS comes
# from package metadata. Keras 3.3's MirroredStrategy fit leaves every variable different between
# the replicas (measured without faithful_restore: a Dense kernel's replicas differ by 0.075 after
# two epochs) and cannot run synchronized BatchNormalization; Keras 3.5 fixed both.
# docs/distributed.md states the range. Large weights are hashed per segment while Keras writes
# them into the bundle's directory: with the inline_hash speed patch on a Keras that writes the
# directory itself (3.4+).
_LAZY = {
    "KERAS": lambda: _supported.parse(_keras_version()),
    "KERAS_MIRRORS_CORRECTLY": lambda: _lazy("KERAS") >= (3, 5),
    "needs_mirrored_fit": lambda: pytest.mark.skipif(
        not _lazy("KERAS_MIRRORS_CORRECTLY"),
        reason=f"Keras {_keras_version()}'s MirroredStrategy fit diverges replicas",
    ),
    "needs_segments": _needs_segments,
    "Scale": lambda: _keras_classes()["Scale"],
    "TinySubclassed": lambda: _keras_classes()["TinySubclassed"],
}


def _lazy(name: str) -> Any:
    value = _LAZY[name]()
    globals()[name] = value
    return value


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return _lazy(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def make_xy(n: int = 64, features: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)).astype("float32")
    y = (x @ rng.normal(size=(features, 1))).astype("float32")
    return x, y


def sequential_model(compiled: bool = True, trained: bool = True) -> keras.Model:
    import keras

    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(8, activation="relu", kernel_regularizer=keras.regularizers.L2(1e-3)),
            keras.layers.Dropout(0.3),
            keras.layers.Dense(1),
        ]
    )
    if compiled:
        model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
        if trained:
            x, y = make_xy()
            model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    return model


def functional_multi_io(trained: bool = True) -> tuple[keras.Model, dict]:
    import keras

    keras.utils.set_random_seed(2)
    a = keras.Input((3,), name="a")
    b = keras.Input((5,), name="b")
    h = keras.layers.Concatenate()([keras.layers.Dense(4)(a), keras.layers.Dense(4)(b)])
    h = keras.layers.BatchNormalization()(h)
    out_reg = keras.layers.Dense(1, name="reg")(h)
    out_cls = keras.layers.Dense(3, activation="softmax", name="cls")(h)
    model = keras.Model({"a": a, "b": b}, {"reg": out_reg, "cls": out_cls})
    model.compile(
        optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
        loss={"reg": "mse", "cls": "sparse_categorical_crossentropy"},
        loss_weights={"reg": 1.0, "cls": 0.5},
        metrics={"cls": ["accuracy"]},
    )
    rng = np.random.default_rng(3)
    x = {"a": rng.normal(size=(32, 3)).astype("float32"), "b": rng.normal(size=(32, 5)).astype("float32")}
    y = {"reg": rng.normal(size=(32, 1)).astype("float32"), "cls": rng.integers(0, 3, size=(32,))}
    if trained:
        model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    return model, {"x": x, "y": y}


def subclassed_model(trained: bool = True) -> keras.Model:
    import keras

    keras.utils.set_random_seed(4)
    model = _keras_classes()["TinySubclassed"]()
    model(np.zeros((2, 4), "float32"))
    model.compile(optimizer="adam", loss="mse")
    if trained:
        x, y = make_xy()
        model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    return model


_MIRRORED: list = []


def mirrored_strategy() -> tf.distribute.MirroredStrategy:
    """The process's one 2-replica MirroredStrategy on the two logical CPUs.

    Several MirroredStrategy objects in one process make their collective ops (used by
    synchronized BatchNormalization) collide, so every test shares this one.
    """
    import tensorflow as tf

    if _DEVICE_SETUP_ERROR:
        raise RuntimeError(
            "conftest could not split the CPU into two logical devices (an op ran before it could)"
        ) from _DEVICE_SETUP_ERROR[0]
    if not _MIRRORED:
        _MIRRORED.append(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
    return _MIRRORED[0]


@pytest.fixture
def xy():
    return make_xy()


@pytest.fixture
def trained_sequential():
    return sequential_model()


def rewrite_manifest(bundle_dir: str, mutate) -> None:
    """Edits a local bundle's manifest in place and re-seals its digest (a 'valid' forgery)."""
    import hashlib

    path = os.path.join(bundle_dir, "manifest.json")
    with open(path) as f:
        data = json.load(f)
    mutate(data)
    raw = (json.dumps(data, sort_keys=True, indent=1) + "\n").encode()
    with open(path, "wb") as f:
        f.write(raw)
    with open(os.path.join(bundle_dir, "manifest.sha256"), "w") as f:
        f.write(hashlib.sha256(raw).hexdigest() + "\n")


def assert_same_variables(a, b) -> None:
    """Bitwise equality of two variable lists, matched by position."""
    assert len(a) == len(b), (len(a), len(b))
    for va, vb in zip(a, b):
        np.testing.assert_array_equal(np.asarray(va), np.asarray(vb), err_msg=f"{va.path} vs {vb.path}")
