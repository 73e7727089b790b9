"""The process-wide random generators an exact resume also needs.

TensorFlow's global ``tf.random.Generator`` and Keras' global ``SeedGenerator`` (used by
``keras.random`` calls without a seed) live outside any model. BundleManager and BundleCheckpoint
save them with the caller's state under reserved names and restore them in place.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

TF_GENERATOR = "fr_global_tf_generator"
KERAS_SEED = "fr_global_keras_seed"
NAMES = (TF_GENERATOR, KERAS_SEED)


def _keras_global_seed(create: bool) -> Any:
    """The state variable of Keras' global SeedGenerator; None if there is none (or none can be found).

    Keras has no public accessor: the generator lives in its global state under the key
    ``"global_seed_generator"`` (named ``GLOBAL_SEED_GENERATOR`` from Keras 3.13 on). A Keras
    that moved it leaves it uncaptured rather than failing a save; tests/test_manager.py pins it.
    """
    try:
        from keras.src.backend.common import global_state
        from keras.src.random import seed_generator
    except ImportError:
        return None
    key = getattr(seed_generator, "GLOBAL_SEED_GENERATOR", "global_seed_generator")
    generator = global_state.get_global_attribute(key)
    if generator is None and create and callable(getattr(seed_generator, "global_seed_generator", None)):
        generator = seed_generator.global_seed_generator()
    state = getattr(generator, "state", None)
    return state if state is not None and hasattr(state, "assign") else None


def _tf_global_generator(create: bool) -> Any:
    import tensorflow as tf
    from tensorflow.python.ops import stateful_random_ops

    generator = stateful_random_ops.global_generator
    if generator is None and create:
        # get_global_generator() refuses to create one under op determinism; a seeded one is
        # created instead, and the saved state is restored into it right after.
        generator = tf.random.Generator.from_seed(0)
        tf.random.set_global_generator(generator)
    return generator


def to_save() -> dict[str, Any]:
    """The global generators that exist now (none is created just to be saved)."""
    out: dict[str, Any] = {}
    tf_generator = _tf_global_generator(create=False)
    if tf_generator is not None:
        out[TF_GENERATOR] = tf_generator
    keras_seed = _keras_global_seed(create=False)
    if keras_seed is not None:
        out[KERAS_SEED] = keras_seed
    return out


def to_restore(saved_names: Iterable[str]) -> dict[str, Any]:
    """Trackables to restore the global generators a bundle holds into."""
    names = set(saved_names)
    out: dict[str, Any] = {}
    if TF_GENERATOR in names:
        out[TF_GENERATOR] = _tf_global_generator(create=True)
    if KERAS_SEED in names:
        out[KERAS_SEED] = _keras_global_seed(create=True)
    return out
