"""Shared fixtures: small real models of every kind the library must handle.

TensorFlow's CPU is split into two logical devices here, before any op runs, so that
distributed tests can use a 2-replica MirroredStrategy on a CPU-only machine.
"""

from __future__ import annotations

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from faithful_restore import _keras_format, _supported, fast  # noqa: E402
from faithful_restore.fast import inline_hash as _inline_hash  # noqa: E402

KERAS = _supported.parse(keras.__version__)
# Keras 3.3's MirroredStrategy fit leaves every variable different between the replicas (measured
# without faithful_restore: a Dense kernel's replicas differ by 0.075 after two epochs) and cannot
# run synchronized BatchNormalization; Keras 3.5 fixed both. docs/distributed.md states the range.
KERAS_MIRRORS_CORRECTLY = KERAS >= (3, 5)
needs_mirrored_fit = pytest.mark.skipif(
    not KERAS_MIRRORS_CORRECTLY, reason=f"Keras {keras.__version__}'s MirroredStrategy fit diverges replicas"
)
# Large weights are hashed per segment while Keras writes them into the bundle's directory: with
# the inline_hash speed patch on a Keras that writes the directory itself (3.4+).
needs_segments = pytest.mark.skipif(
    not (_keras_format.supports_directories() and fast.enabled() and _inline_hash.PATCH.available()),
    reason="segments are recorded only by the inline_hash speed patch (on, and Keras 3.4+)",
)

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)


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


def make_xy(n: int = 64, features: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)).astype("float32")
    y = (x @ rng.normal(size=(features, 1))).astype("float32")
    return x, y


def sequential_model(compiled: bool = True, trained: bool = True) -> keras.Model:
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
    keras.utils.set_random_seed(4)
    model = TinySubclassed()
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
