"""Keras integration: ``BundleCheckpoint``, a drop-in for ModelCheckpoint / BackupAndRestore.

Usage::

    ckpt = fr.keras.BundleCheckpoint("runs/exp1/bundles", save_freq="epoch", max_to_keep=3)
    model.fit(x, y, epochs=10, callbacks=[ckpt])   # resumes from the newest bundle if there is one

Each bundle records the epoch and the optimizer step in its metadata; with ``restore=True``
(the default) the callback restores the newest bundle into the model at the start of ``fit``
(weights, optimizer state, the layers' random state) and makes ``fit`` start at the saved epoch,
as Keras' BackupAndRestore does.
"""

from __future__ import annotations

import os
from typing import Any

import keras
import numpy as np

from faithful_restore.bundle.manager import BundleManager
from faithful_restore.errors import ArgumentError, BundleError
from faithful_restore.runtime import keras_internals as _keras_internals

__all__ = ["BundleCheckpoint"]


class BundleCheckpoint(keras.callbacks.Callback):
    """Writes bundles during ``model.fit`` and resumes from them.

    Args:
        directory: where the numbered bundles go (a :class:`BundleManager` directory).
        save_freq: "epoch", or an integer number of batches between saves.
        max_to_keep: newest bundles to keep (None keeps all).
        monitor: a metric in the logs (e.g. "val_loss") for ``save_best_only``.
        save_best_only: save only when ``monitor`` improved.
        mode: "min", "max" or "auto" (max for names containing "acc", else min).
        restore: restore the newest bundle at the start of ``fit`` and resume at its epoch.
        sample_inputs: passed to every save, so each bundle carries a probe.
        state: trackables saved with every bundle and restored on resume.

    Raises:
        BundleError: bad arguments.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        save_freq: str | int = "epoch",
        max_to_keep: int | None = 5,
        monitor: str | None = None,
        save_best_only: bool = False,
        mode: str = "auto",
        restore: bool = True,
        sample_inputs: Any = None,
        state: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if save_freq != "epoch" and (not isinstance(save_freq, int) or isinstance(save_freq, bool) or save_freq < 1):
            raise ArgumentError(f"save_freq must be 'epoch' or a positive number of batches, found {save_freq!r}.")
        if save_best_only and not monitor:
            raise BundleError("save_best_only=True needs monitor= (e.g. monitor='val_loss').")
        if mode not in ("auto", "min", "max"):
            raise ArgumentError(f"mode must be 'auto', 'min' or 'max', found {mode!r}.")
        self.manager = BundleManager(directory, max_to_keep=max_to_keep)
        self.save_freq = save_freq
        self.monitor = monitor
        self.save_best_only = save_best_only
        self.restore = restore
        self.sample_inputs = sample_inputs
        self.state = dict(state or {})
        if mode == "auto":
            mode = "max" if monitor and ("acc" in monitor or monitor.startswith("fmeasure")) else "min"
        self._better = np.greater if mode == "max" else np.less
        self._best: float | None = None
        self._epoch = 0
        self._batches_seen = 0
        self.initial_epoch = 0

    # -------------------------------------------------------------- resume
    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        if not self.restore:
            return
        latest = self.manager.newest()
        if latest is None:
            return
        manifest = self.manager.manifest(latest.step)
        self.manager.restore_or_initialize(self.model, state=self.state or None, on_version_skew="warn")
        meta = manifest.metadata
        self.initial_epoch = int(meta.get("epoch", 0))
        self._batches_seen = int(meta.get("batches_seen", 0))
        best = meta.get("best")
        self._best = float(best) if isinstance(best, (int, float)) else None
        # Keras' own BackupAndRestore resumes fit through this attribute.
        _keras_internals.set_initial_epoch(self.model, self.initial_epoch)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if _keras_internals.initial_epoch(self.model) == self.initial_epoch:
            _keras_internals.set_initial_epoch(self.model, None)  # a later fit() starts where its caller says

    # -------------------------------------------------------------- saving
    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self._batches_seen += 1
        if isinstance(self.save_freq, int) and self._batches_seen % self.save_freq == 0:
            self._save(step=self._batches_seen, epoch=self._epoch, logs=logs, epoch_done=False)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self.save_freq == "epoch":
            self._save(step=epoch + 1, epoch=epoch + 1, logs=logs, epoch_done=True)

    def _save(self, step: int, epoch: int, logs: dict[str, Any] | None, epoch_done: bool) -> None:
        logs = logs or {}
        if self.save_best_only:
            value = logs.get(self.monitor) if self.monitor else None
            if value is None:
                raise BundleError(
                    f"monitor {self.monitor!r} is not in the logs ({sorted(logs)}); pass a metric that fit reports."
                )
            if not np.isfinite(float(value)):
                return  # a NaN/Inf metric is never an improvement
            if self._best is not None and not self._better(float(value), self._best):
                return
            self._best = float(value)
        optimizer = getattr(self.model, "optimizer", None)
        metadata = {
            # The epoch to resume at: a save in the middle of an epoch resumes that epoch.
            "epoch": int(epoch if epoch_done else self._epoch),
            "batches_seen": int(self._batches_seen),
            "iterations": int(np.asarray(optimizer.iterations)) if optimizer is not None else None,
            # JSON holds no NaN/Inf: a diverged loss is left out rather than stopping training.
            "logs": {
                k: float(v)
                for k, v in logs.items()
                if isinstance(v, (int, float, np.floating)) and np.isfinite(float(v))
            },
            "best": self._best,
        }
        self.manager.save(
            self.model,
            step=step,
            metadata=metadata,
            sample_inputs=self.sample_inputs,
            state=self.state or None,
        )
