"""Crash safety and concurrency: SIGKILL at random moments, concurrent writers, readers during saves.

Invariant: at every instant the bundle path holds the old complete bundle or the new complete one
(or nothing, before the first commit); load_bundle never accepts a partial or mixed bundle; the
next save removes leftover temporaries.

Every child process imports TensorFlow (seconds each), so the fast suite kills one save loop once,
mid-overwrite, and reads and verifies during one loop of overwrites; the slow suite kills 5 and 40
loops at random moments (before the first commit too) and reads and verifies in separate loops.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import faithful_restore as fr

SCRIPT = os.path.join(os.path.dirname(__file__), "scripts", "save_loop.py")
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def _digest(model) -> str:
    h = hashlib.sha256()
    for v in model.trainable_variables:
        h.update(np.asarray(v).tobytes())
    return h.hexdigest()


def _start(path, digests, mode, **env):
    return subprocess.Popen(
        [sys.executable, SCRIPT, str(path), str(digests), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**ENV, **env},
    )


def _check_invariant(path, digests) -> str:
    """Returns which model the bundle holds ('a'/'b'), or 'none' when nothing was committed."""
    if not os.path.lexists(path):
        return "none"
    bundle = fr.load_bundle(str(path), check_probe=False)  # raises on any partial or mixed state
    found = _digest(bundle.model)
    assert found in digests.values(), "the bundle holds a model that was never saved"
    return next(k for k, v in digests.items() if v == found)


def _leftovers(path):
    parent, name = os.path.split(str(path))
    return sorted(s for s in os.listdir(parent) if s.startswith(f".{name}.fr-"))


def _kill_rounds(tmp_path, rounds, seed, after_first_commit=False):
    """SIGKILLs ``rounds`` save loops at random moments (after their first commit, if asked)."""
    rng = random.Random(seed)
    path = tmp_path / "bundle"
    digests_path = tmp_path / "digests.json"
    seen = []
    for _ in range(rounds):
        proc = _start(path, digests_path, "loop")
        assert proc.stdout.readline().strip() == "ready"
        if after_first_commit:
            assert proc.stdout.readline().startswith("saved")
        time.sleep(rng.uniform(0.0, 0.8))  # each save takes ~0.1-0.3 s: kills land in every phase
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        digests = json.loads(digests_path.read_text())
        seen.append(_check_invariant(path, digests))
        for leftover in _leftovers(path):
            assert ".fr-tmp-" in leftover or ".fr-old-" in leftover, leftover
    # The next save cleans up whatever the kills left behind.
    import keras

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    fr.save_bundle(model, str(path), overwrite=True)
    assert _leftovers(path) == []
    fr.load_bundle(str(path))
    return seen


def test_sigkill_during_an_overwrite_never_leaves_a_partial_bundle(tmp_path):
    """The fast twin of the two below: one kill, while a committed bundle is being overwritten."""
    seen = _kill_rounds(tmp_path, rounds=1, seed=3, after_first_commit=True)
    assert seen in (["a"], ["b"]), seen


@pytest.mark.slow
def test_sigkill_during_saves_never_leaves_a_partial_bundle(tmp_path):
    seen = _kill_rounds(tmp_path, rounds=5, seed=1)
    assert any(s in ("a", "b") for s in seen), seen


@pytest.mark.slow
def test_sigkill_many_rounds(tmp_path):
    seen = _kill_rounds(tmp_path, rounds=40, seed=2)
    assert {"a", "b"} <= set(seen)


@contextlib.contextmanager
def _overwriting(path, digests_path):
    """A child process overwriting the bundle at ``path`` in a loop, once it committed one."""
    proc = _start(path, digests_path, "loop")
    try:
        assert proc.stdout.readline().strip() == "ready"
        assert proc.stdout.readline().startswith("saved")  # something is committed
        yield
    finally:
        proc.kill()
        proc.wait()


def _readers_see_old_or_new(path, digests_path, seconds):
    digests = json.loads(digests_path.read_text())
    kinds = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        kinds.append(_check_invariant(path, digests))
    assert len(kinds) >= 5 and "none" not in kinds


def _verify_reports_no_false_finding(path, seconds):
    deadline = time.monotonic() + seconds
    reports = []
    while time.monotonic() < deadline:
        reports.append(fr.verify_bundle(str(path)))
    assert reports and all(r.ok for r in reports), [r.to_text() for r in reports if not r.ok][:1]


def test_readers_and_verify_during_overwrites(tmp_path):
    """The fast twin of the two slow tests below, sharing one overwriting child process."""
    path = tmp_path / "bundle"
    digests_path = tmp_path / "digests.json"
    with _overwriting(path, digests_path):
        _readers_see_old_or_new(path, digests_path, seconds=4)
        _verify_reports_no_false_finding(path, seconds=4)


@pytest.mark.slow
def test_readers_during_overwrites_see_old_or_new(tmp_path):
    path = tmp_path / "bundle"
    digests_path = tmp_path / "digests.json"
    with _overwriting(path, digests_path):
        _readers_see_old_or_new(path, digests_path, seconds=6)


@pytest.mark.parametrize("overwrite", ["0", "1"])
def test_two_concurrent_writers(tmp_path, overwrite):
    path = tmp_path / "bundle"
    procs = [_start(path, tmp_path / f"d{k}.json", f"once-{k}", FR_OVERWRITE=overwrite) for k in ("a", "b")]
    outputs = [p.communicate(timeout=300)[0].strip().splitlines()[-1] for p in procs]
    digests = json.loads((tmp_path / "da.json").read_text())
    held = _check_invariant(path, digests)
    assert held in ("a", "b")
    if overwrite == "1":
        assert outputs == ["ok", "ok"]
    else:
        assert sorted(o.split(":")[0] for o in outputs) == ["error", "ok"]
        assert any("already exists" in o for o in outputs)
        winner = "ab"[outputs.index("ok")]
        assert held == winner
    assert _leftovers(path) == []


@pytest.mark.slow
def test_verify_bundle_during_overwrites_reports_no_false_finding(tmp_path):
    path = tmp_path / "bundle"
    digests_path = tmp_path / "digests.json"
    with _overwriting(path, digests_path):
        _verify_reports_no_false_finding(path, seconds=5)
