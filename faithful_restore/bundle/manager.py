"""BundleManager: numbered bundles in a directory, retention, and restore-or-initialize.

Layout::

    directory/
      step-0000000100/     a bundle (see docs/bundle-format.md)
      step-0000000200/
      index.json           human-readable list of the bundles; derived, rebuilt on every change

The bundles themselves are the source of truth: a directory ``step-N`` with a valid manifest.
Retention runs only after a new bundle is committed and never removes the newest one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from faithful_restore import _deprecated
from faithful_restore.bundle.load import load_bundle
from faithful_restore.bundle.save import save_bundle
from faithful_restore.bundle.types import Bundle
from faithful_restore.capture import global_rng as _global_rng
from faithful_restore.capture import optimizer as _optimizer
from faithful_restore.errors import ArgumentError, BundleError
from faithful_restore.format import durable as _durable
from faithful_restore.format import paths as _paths
from faithful_restore.format.integrity import read_manifest
from faithful_restore.format.manifest import MANIFEST, Manifest

_STEP_DIR = re.compile(r"^step-(\d{10})$")
INDEX = "index.json"


@dataclass(frozen=True)
class BundleInfo:
    """One bundle kept by a manager."""

    step: int
    path: str

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "path": self.path}


def _step_name(step: int) -> str:
    return f"step-{step:010d}"


class BundleManager:
    """Keeps numbered bundles of one training run in a directory.

    Args:
        directory: a local directory or ``tf.io.gfile`` URL; created on the first save.
        max_to_keep: how many of the newest bundles to keep (None keeps all).
        keep_every_n_steps: additionally keep every bundle whose step is a multiple of this.

    Raises:
        BundleError: bad arguments.
    """

    def __init__(
        self, directory: str | os.PathLike[str], max_to_keep: int | None = 5, keep_every_n_steps: int | None = None
    ) -> None:
        self.directory = _paths.as_path(directory, "directory")
        for name, value in (("max_to_keep", max_to_keep), ("keep_every_n_steps", keep_every_n_steps)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ArgumentError(f"{name} must be a positive integer or None, found {value!r}.")
        self.max_to_keep = max_to_keep
        self.keep_every_n_steps = keep_every_n_steps

    # ------------------------------------------------------------------ listing
    def bundles(self) -> list[BundleInfo]:
        """Every committed bundle, oldest first (lists the directory on each call)."""
        if not _paths.exists(self.directory):
            return []
        if _paths.is_local(self.directory):
            names = os.listdir(self.directory)
        else:
            import tensorflow as tf

            names = [n.rstrip("/") for n in tf.io.gfile.listdir(self.directory)]
        out = []
        for name in names:
            match = _STEP_DIR.match(name)
            path = _paths.join(self.directory, name)
            if match and _paths.exists(_paths.join(path, MANIFEST)):
                out.append(BundleInfo(int(match.group(1)), path))
        return sorted(out, key=lambda b: b.step)

    def newest(self) -> BundleInfo | None:
        """The newest bundle, or None when there is none (lists the directory on each call)."""
        bundles = self.bundles()
        return bundles[-1] if bundles else None

    @property
    def all(self) -> list[BundleInfo]:
        """Deprecated: :meth:`bundles` (a property that did directory I/O and shadowed a builtin)."""
        _deprecated.warn("BundleManager.all", "BundleManager.bundles()")
        return self.bundles()

    @property
    def latest(self) -> BundleInfo | None:
        """Deprecated: :meth:`newest`."""
        _deprecated.warn("BundleManager.latest", "BundleManager.newest()")
        return self.newest()

    def manifest(self, step: int | None = None) -> Manifest:
        return read_manifest(self._find(step).path)

    def _find(self, step: int | None) -> BundleInfo:
        bundles = self.bundles()
        if not bundles:
            raise BundleError(f"no bundle in {self.directory!r} yet; save one first or check the directory.")
        if step is None:
            return bundles[-1]
        for info in bundles:
            if info.step == step:
                return info
        raise BundleError(
            f"no bundle for step {step} in {self.directory!r}; available steps: {[b.step for b in bundles]}."
        )

    # ------------------------------------------------------------------ save / load
    def save(self, model: Any, step: int, *, include_global_rng: bool = True, **save_kwargs: Any) -> Manifest:
        """Saves a bundle for ``step`` (replacing one of the same step), then applies retention.

        Args:
            model: the model to save.
            step: a non-negative training step (or epoch) number; names the bundle.
            include_global_rng: also save TensorFlow's global generator and Keras' global seed
                generator, which restore_or_initialize puts back.
            **save_kwargs: passed to :func:`save_bundle` (optimizer, state, metadata, ...).

        Returns:
            The new bundle's manifest.
        """
        if not isinstance(step, (int, np.integer)) or isinstance(step, bool) or step < 0:
            raise ArgumentError(f"step must be a non-negative integer, found {step!r}.")
        if "overwrite" in save_kwargs:
            raise BundleError("BundleManager.save replaces a bundle of the same step itself; do not pass overwrite.")
        metadata = dict(save_kwargs.pop("metadata", None) or {})
        metadata.setdefault("step", int(step))
        if include_global_rng:
            state = dict(save_kwargs.pop("state", None) or {})
            clash = sorted(set(state) & set(_global_rng.NAMES))
            if clash:
                raise BundleError(f"state names {clash} are reserved for the global random generators; rename them.")
            save_kwargs["state"] = {**state, **_global_rng.to_save()}
        path = _paths.join(self.directory, _step_name(int(step)))
        manifest = save_bundle(model, path, overwrite=True, metadata=metadata, **save_kwargs)
        self._apply_retention(newest=int(step))
        self._write_index()
        return manifest

    def load(self, step: int | None = None, **load_kwargs: Any) -> Bundle:
        """Loads the bundle of ``step`` (the newest by default); kwargs go to :func:`load_bundle`."""
        return load_bundle(self._find(step).path, **load_kwargs)

    def restore_or_initialize(
        self, model: Any, *, optimizer: Any = None, state: Mapping[str, Any] | None = None, **load_kwargs: Any
    ) -> int:
        """Restores the newest bundle into ``model`` (and its optimizer, and ``state``) in place.

        Args:
            model: a model built like the saved one; its weights, random state and optimizer
                (``optimizer`` or ``model.optimizer``) are overwritten with the bundle's.
            optimizer: the optimizer to restore into, for custom training loops.
            state: trackables to restore in place, as for :func:`load_bundle`.

        The global random generators saved with the bundle (see :meth:`save`) are restored too.

        Returns:
            The step to resume from: the newest bundle's step, or 0 when there is none.

        Raises:
            BundleError: the model does not match the saved one.
        """
        latest = self.newest()
        if latest is None:
            return 0
        saved = read_manifest(latest.path).state
        state = {**dict(state or {}), **_global_rng.to_restore(saved)}
        bundle = load_bundle(latest.path, state=state or None, **load_kwargs)
        restore_into(bundle, model, optimizer if optimizer is not None else getattr(model, "optimizer", None))
        return latest.step

    # ------------------------------------------------------------------ retention
    def _apply_retention(self, newest: int) -> None:
        bundles = self.bundles()
        if self.max_to_keep is None:
            return
        keep = {b.step for b in bundles[-self.max_to_keep :]} | {newest}
        if self.keep_every_n_steps:
            keep |= {b.step for b in bundles if b.step % self.keep_every_n_steps == 0}
        for info in bundles:
            if info.step not in keep:
                self._remove(info.path)

    def _remove(self, path: str) -> None:
        # Uncommit first (the manifest is the commit marker), so a crash mid-removal leaves a
        # directory that is no longer listed rather than a damaged bundle that is.
        manifest = _paths.join(path, MANIFEST)
        if _paths.is_local(path):
            os.remove(manifest)
            shutil.rmtree(path, ignore_errors=True)
        else:
            import tensorflow as tf

            tf.io.gfile.remove(manifest)
            tf.io.gfile.rmtree(path)

    def _write_index(self) -> None:
        entries = []
        for info in self.bundles():
            try:
                manifest = read_manifest(info.path)
            except BundleError:
                continue
            entries.append(
                {
                    "step": info.step,
                    "directory": os.path.basename(info.path),
                    "created": manifest.created,
                    "metadata": manifest.metadata,
                    "bytes": sum(f.size for f in manifest.files),
                }
            )
        raw = json.dumps({"bundles": entries}, indent=1, sort_keys=True).encode() + b"\n"
        target = _paths.join(self.directory, INDEX)
        if _paths.is_local(self.directory):
            tmp = target + ".tmp"
            _durable.write_bytes_local(tmp, raw)
            os.replace(tmp, target)
        else:
            import tensorflow as tf

            with tf.io.gfile.GFile(target, "wb") as f:
                f.write(raw)


def restore_into(bundle: Bundle, model: Any, optimizer: Any) -> None:
    """Copies a loaded bundle's weights, random state and optimizer state into live objects.

    Variables are matched by position and checked for shape and dtype (their paths differ
    between a model built by code and one rebuilt by Keras).
    """
    source, target = list(bundle.model.variables), list(model.variables)
    _check_pairs(source, target, "model")
    for s, t in zip(source, target):
        t.assign(np.asarray(s))
    if bundle.optimizer is None or optimizer is None:
        return
    if not optimizer.built and bundle.optimizer.built:
        record = (bundle.manifest.optimizer if bundle.manifest is not None else None) or {}
        optimizer.build(_optimizer.built_on(record, model))
    source, target = list(bundle.optimizer.variables), list(optimizer.variables)
    if not bundle.optimizer.built:
        target = target[: len(source)]
    _check_pairs(source, target, "optimizer")
    for s, t in zip(source, target):
        t.assign(np.asarray(s))


def _check_pairs(source: list[Any], target: list[Any], what: str) -> None:
    if len(source) != len(target):
        raise BundleError(
            f"the {what} has {len(target)} variables, the bundle {len(source)}; build the {what} exactly as "
            "the saved one (same layers and optimizer) before restoring into it."
        )
    for s, t in zip(source, target):
        if tuple(s.shape) != tuple(t.shape) or str(s.dtype) != str(t.dtype):
            raise BundleError(
                f"{what} variable {t.path!r} is {t.dtype}{list(t.shape)}, the bundle holds {s.dtype}{list(s.shape)}; "
                f"build the {what} exactly as the saved one before restoring into it."
            )
