"""BundleCheckpoint in model.fit, and exact resume across processes (the bar of the training issue)."""

from __future__ import annotations

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import make_xy, sequential_model

import faithful_restore as fr

SCRIPT = os.path.join(os.path.dirname(__file__), "scripts", "resume.py")
STEPS = 16  # two epochs of 8 batches for the fit variant


def test_callback_saves_each_epoch_and_resumes_with_initial_epoch(tmp_path):
    x, y = make_xy(64)
    model = sequential_model(trained=False)
    ckpt = fr.keras.BundleCheckpoint(tmp_path / "ck", save_freq="epoch", max_to_keep=2)
    model.fit(x, y, epochs=3, batch_size=16, verbose=0, callbacks=[ckpt])
    assert [b.step for b in ckpt.manager.bundles()] == [2, 3]
    meta = ckpt.manager.manifest().metadata
    assert meta["epoch"] == 3 and meta["iterations"] == 12 and "loss" in meta["logs"]

    resumed = sequential_model(trained=False)
    ckpt2 = fr.keras.BundleCheckpoint(tmp_path / "ck", save_freq="epoch")
    history = resumed.fit(x, y, epochs=5, batch_size=16, verbose=0, callbacks=[ckpt2])
    assert ckpt2.initial_epoch == 3
    assert len(history.history["loss"]) == 2  # epochs 4 and 5 only
    assert int(resumed.optimizer.iterations.numpy()) == 20
    assert resumed._initial_epoch is None


def test_callback_batch_frequency_and_best_only(tmp_path):
    x, y = make_xy(64)
    model = sequential_model(trained=False)
    ckpt = fr.keras.BundleCheckpoint(tmp_path / "ck", save_freq=3, max_to_keep=None, restore=False)
    model.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[ckpt])
    assert [b.step for b in ckpt.manager.bundles()] == [3, 6]
    best = fr.keras.BundleCheckpoint(tmp_path / "best", monitor="loss", save_best_only=True, max_to_keep=None)
    keras.utils.set_random_seed(0)
    sequential_model(trained=False).fit(x, y, epochs=4, batch_size=16, verbose=0, callbacks=[best])
    losses = [best.manager.manifest(b.step).metadata["logs"]["loss"] for b in best.manager.bundles()]
    assert losses == sorted(losses, reverse=True)  # every saved bundle improved on the last


def test_callback_bad_arguments(tmp_path):
    with pytest.raises(fr.BundleError, match="save_freq"):
        fr.keras.BundleCheckpoint(tmp_path, save_freq=0)
    with pytest.raises(fr.BundleError, match="monitor"):
        fr.keras.BundleCheckpoint(tmp_path, save_best_only=True)


def _run(loop, opt, phase, directory, out):
    return subprocess.Popen(
        [sys.executable, SCRIPT, loop, opt, phase, str(STEPS), str(directory), str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )


def _wait(*procs):
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0 and "done" in out, err[-3000:]


def _load(path):
    with np.load(path) as data:
        return [data[k] for k in sorted(data.files, key=lambda k: int(k.split("_")[1]))]


@pytest.mark.parametrize(
    "loop,opt",
    [
        ("ctl", "adam"),
        ("fit", "sgd"),
        pytest.param("ctl", "sgd", marks=pytest.mark.slow),
        pytest.param("fit", "adam", marks=pytest.mark.slow),
    ],
)
def test_exact_resume_in_a_fresh_process(tmp_path, loop, opt):
    """2N uninterrupted steps == N steps, save, fresh process, load, N more: bitwise.

    And the negative: resuming from save_weights alone is not identical.
    """
    d = tmp_path / "run"
    full, first = tmp_path / "full.npz", tmp_path / "first.npz"
    _wait(_run(loop, opt, "full", tmp_path / "unused", full), _run(loop, opt, "first", d, first))
    second, weights = tmp_path / "second.npz", tmp_path / "weights.npz"
    _wait(_run(loop, opt, "second", d, second), _run(loop, opt, "weights", d, weights))
    expected, resumed, naive = _load(full), _load(second), _load(weights)
    assert len(expected) == len(resumed)
    for a, b in zip(expected, resumed):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(expected, naive) if a.shape == b.shape)


# Reproductions of defects found in review.


def test_callback_survives_a_nan_loss(tmp_path):
    x, y = make_xy(32)
    y[3] = np.nan
    model = sequential_model(trained=False)
    ckpt = fr.keras.BundleCheckpoint(tmp_path / "ck", monitor="loss", save_best_only=True)
    model.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[ckpt])  # does not raise
    meta = fr.BundleManager(tmp_path / "ck").bundles()
    assert all("loss" not in fr.load_bundle(b.path).manifest.metadata["logs"] for b in meta)
