"""Hostile and damaged bundles: every mutation is detected, every hostile construct refused with our
own error, never code execution and never a read outside the bundle."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess

import h5py
import numpy as np
import pytest
import tensorflow as tf
from conftest import make_xy, rewrite_manifest, sequential_model

import faithful_restore as fr


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    path = tmp_path_factory.mktemp("pristine") / "b"
    fr.save_bundle(
        sequential_model(),
        str(path),
        sample_inputs=make_xy(4)[0],
        state={"step": tf.Variable(3)},
        preprocessing={"mean": np.arange(4.0)},
    )
    return path


def _copy(pristine, tmp_path):
    dst = tmp_path / "b"
    shutil.copytree(pristine, dst, symlinks=True)
    return dst


def _reseal(path, rel):
    """Updates the manifest's record of ``rel`` to its current bytes (a forger's move)."""
    data = (path / rel).read_bytes()
    sha = hashlib.sha256(data).hexdigest()

    def mutate(d):
        for f in d["files"]:
            if f["path"] == rel:
                f.update(sha256=sha, size=len(data))

    rewrite_manifest(str(path), mutate)


def _mutations(path):
    files = json.loads((path / "manifest.json").read_text())["files"]
    for entry in files:
        rel = entry["path"]
        yield f"flip {rel}", rel, lambda p, d: p.write_bytes(d[:-1] + bytes([d[-1] ^ 1]))
        yield f"truncate {rel}", rel, lambda p, d: p.write_bytes(d[:-1])
        yield f"append {rel}", rel, lambda p, d: p.write_bytes(d + b"\0")
        yield f"delete {rel}", rel, lambda p, d: p.unlink()
        yield f"empty {rel}", rel, lambda p, d: p.write_bytes(b"")
    for extra in ("extra.bin", "model/extra.bin", "state/ckpt.data-00001-of-00002"):
        yield f"add {extra}", extra, lambda p, d: p.write_bytes(b"x")
    yield "delete manifest.sha256", "manifest.sha256", lambda p, d: p.unlink()
    yield "edit manifest.json", "manifest.json", lambda p, d: p.write_bytes(d.replace(b'"size": ', b'"size":  '))


def test_every_mutation_of_every_file_is_detected(pristine, tmp_path):
    detected = 0
    for label, rel, mutate in _mutations(pristine):
        path = _copy(pristine, tmp_path / label.replace(" ", "_").replace("/", "_"))
        target = path / rel
        data = target.read_bytes() if target.exists() else b""
        mutate(target, data)
        with pytest.raises(fr.IntegrityError):
            fr.load_bundle(str(path))
        report = fr.verify_bundle(str(path))
        assert report.findings[0].cause is fr.Cause.INTEGRITY, label
        detected += 1
    assert detected >= 40


def test_hdf5_external_link_is_refused(pristine, tmp_path):
    path = _copy(pristine, tmp_path)
    outside = tmp_path / "outside.h5"
    with h5py.File(outside, "w") as f:
        f["secret"] = np.arange(3)
    with h5py.File(path / "model" / "model.weights.h5", "a") as f:
        f["layers/dense/vars/extra"] = h5py.ExternalLink(str(outside), "/secret")
    _reseal(path, "model/model.weights.h5")
    with pytest.raises(fr.BundleError, match="ExternalLink"):
        fr.load_bundle(str(path))


def test_hdf5_external_storage_is_refused(pristine, tmp_path):
    path = _copy(pristine, tmp_path)
    raw = tmp_path / "raw.bin"
    raw.write_bytes(np.arange(4, dtype="float32").tobytes())
    with h5py.File(path / "model" / "model.weights.h5", "a") as f:
        f.create_dataset("sneaky", shape=(4,), dtype="float32", external=[(str(raw), 0, 16)])
    _reseal(path, "model/model.weights.h5")
    with pytest.raises(fr.BundleError, match="external or virtual"):
        fr.load_bundle(str(path))


def test_config_importing_an_arbitrary_module_is_refused(pristine, tmp_path):
    path = _copy(pristine, tmp_path)
    config = json.loads((path / "model" / "config.json").read_text())
    marker = tmp_path / "pwned"
    config["config"]["layers"][1] = {
        "module": "os",
        "class_name": "system",
        "config": {"command": f"touch {marker}"},
        "registered_name": "system",
    }
    (path / "model" / "config.json").write_text(json.dumps(config))
    _reseal(path, "model/config.json")
    for safe_mode in (True, False):
        with pytest.raises(fr.BundleError, match="neither a Keras class nor registered"):
            fr.load_bundle(str(path), safe_mode=safe_mode)
    assert not marker.exists()


def test_manifest_pointing_outside_is_refused(pristine, tmp_path):
    path = _copy(pristine, tmp_path)
    secret = tmp_path / "secret.npy"
    np.save(secret, np.arange(3))
    rewrite_manifest(str(path), lambda d: d["preprocessing"]["user"]["mean"].update(file="../secret.npy"))
    with pytest.raises(fr.BundleError, match="not a plain relative path"):
        fr.load_bundle(str(path))


def test_symlinked_directory_is_refused(pristine, tmp_path):
    path = _copy(pristine, tmp_path)
    shutil.move(str(path / "probe"), str(tmp_path / "probe_elsewhere"))
    os.symlink(tmp_path / "probe_elsewhere", path / "probe")
    with pytest.raises(fr.IntegrityError):
        fr.load_bundle(str(path))


def test_oversized_manifest_is_refused(pristine, tmp_path):
    path = _copy(pristine, tmp_path)
    with open(path / "manifest.json", "wb") as f:
        f.truncate(65 * 1024 * 1024)  # sparse: cheap to create
    with pytest.raises(fr.BundleError, match="larger than"):
        fr.load_bundle(str(path))


def test_pickle_is_never_used(pristine, tmp_path):
    path = _copy(pristine, tmp_path)
    target = path / "preprocessing" / "0000.npy"
    np.save(target, np.array([object()], dtype=object), allow_pickle=True)
    _reseal(path, "preprocessing/0000.npy")
    with pytest.raises(fr.BundleError, match="never use pickle"):
        fr.load_bundle(str(path))


def _mount_tmpfs(where, size):
    where.mkdir()
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True, capture_output=True
        )
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.skip(f"cannot mount a tmpfs here (needs root and mount permission): {e}")


def test_disk_full_and_read_only_keep_the_old_bundle(tmp_path):
    import keras

    mnt = tmp_path / "small"
    _mount_tmpfs(mnt, "1M")
    try:
        path = str(mnt / "b")
        small = sequential_model()
        fr.save_bundle(small, path)
        before = sorted(os.listdir(mnt))
        keras.utils.set_random_seed(0)
        big = keras.Sequential([keras.Input((512,)), keras.layers.Dense(1024)])  # ~2 MiB of weights
        with pytest.raises(fr.BundleError, match="No space left|failed"):
            fr.save_bundle(big, path, overwrite=True)
        assert sorted(os.listdir(mnt)) == before  # no partial temporaries
        restored = fr.load_bundle(path)
        np.testing.assert_array_equal(restored.model.layers[0].kernel, small.layers[0].kernel)

        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        with pytest.raises(fr.BundleError, match="Read-only|cannot write"):
            fr.save_bundle(small, path, overwrite=True)
        fr.load_bundle(path)  # reading from a read-only location works (no snapshot possible)
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


# Reproductions of defects found in review.


def test_symlinked_manifest_files_are_refused(tmp_path):
    path = tmp_path / "b"
    fr.save_bundle(sequential_model(), str(path))
    for name in ("manifest.json", "manifest.sha256"):
        outside = tmp_path / f"outside-{name}"
        os.replace(path / name, outside)
        os.symlink(outside, path / name)
    with pytest.raises(fr.BundleError, match="cannot read|not a regular file"):
        fr.load_bundle(str(path))
    with pytest.raises(fr.BundleError):
        fr.verify_bundle(str(path))


def test_fifo_manifest_digest_does_not_hang(tmp_path):
    path = tmp_path / "b"
    fr.save_bundle(sequential_model(), str(path))
    os.remove(path / "manifest.sha256")
    os.mkfifo(path / "manifest.sha256")
    with pytest.raises(fr.BundleError, match="not a regular file"):
        fr.load_bundle(str(path))


def test_manifest_that_is_a_directory(tmp_path):
    path = tmp_path / "b"
    fr.save_bundle(sequential_model(), str(path))
    os.remove(path / "manifest.json")
    os.mkdir(path / "manifest.json")
    with pytest.raises(fr.BundleError) as info:
        fr.load_bundle(str(path))
    assert ".fr-read-" not in str(info.value)  # the message names the user's path, not a snapshot
