"""Keras' own model format as an unzipped directory, on every Keras 3 the library supports.

Keras 3.4+ writes and reads the directory itself (``model.save(dir, zipped=False)``,
``load_model(dir)``). Keras 3.3 knows only the ``.keras`` zip, whose members are exactly the
directory's files (``config.json``, ``metadata.json``, ``model.weights.h5``, ``assets/``); there
the zip is written and unpacked, and packed again to load. Either way the bundle holds the same
files, so a bundle reads the same on both sides of 3.4.
"""

from __future__ import annotations

import inspect
import os
import shutil
import tempfile
import zipfile
from typing import Any


def supports_directories() -> bool:
    """Whether this Keras saves and loads the unzipped directory itself (Keras 3.4+)."""
    import keras

    try:
        return "zipped" in inspect.signature(keras.Model.save).parameters
    except (TypeError, ValueError):
        return False


def _safe_member(name: str) -> bool:
    parts = name.replace("\\", "/").split("/")
    return bool(name) and not name.startswith("/") and ".." not in parts and ":" not in parts[0]


def save_directory(model: Any, directory: str) -> None:
    """Writes ``model`` in Keras' format, unzipped, into the new directory ``directory``."""
    if supports_directories():
        model.save(directory, zipped=False)
        return
    archive = directory + ".keras"
    try:
        model.save(archive)
        os.makedirs(directory)
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                if not _safe_member(info.filename):
                    raise ValueError(f"unexpected member {info.filename!r} in Keras' archive")
                if info.is_dir():
                    continue
                target = os.path.join(directory, *info.filename.split("/"))
                os.makedirs(os.path.dirname(target), exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst, 16 << 20)
    finally:
        if os.path.exists(archive):
            os.remove(archive)


def load_directory(directory: str, *, custom_objects: Any, safe_mode: bool) -> Any:
    """Loads an uncompiled model from Keras' unzipped format (``directory``, local or gfile URL)."""
    import keras

    if supports_directories():
        return keras.saving.load_model(directory, custom_objects=custom_objects, compile=False, safe_mode=safe_mode)
    import tensorflow as tf

    scratch = tempfile.mkdtemp(prefix="faithful_restore-keras-")
    try:
        archive = os.path.join(scratch, "model.keras")
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
            for root, _, files in tf.io.gfile.walk(directory):
                for name in sorted(files):
                    full = tf.io.gfile.join(root, name)
                    rel = full[len(directory.rstrip("/" + os.sep)) + 1 :].replace(os.sep, "/")
                    with tf.io.gfile.GFile(full, "rb") as src, zf.open(rel, "w", force_zip64=True) as dst:
                        shutil.copyfileobj(src, dst, 16 << 20)
        return keras.saving.load_model(archive, custom_objects=custom_objects, compile=False, safe_mode=safe_mode)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
