"""Paths, hashing and the atomic commit."""

from __future__ import annotations

import hashlib
import os
import pathlib
import threading
import time

import numpy as np
import pytest
from conftest import sequential_model
from hypothesis import given, settings
from hypothesis import strategies as st

import faithful_restore as fr
from faithful_restore.format import commit as _commit
from faithful_restore.format import durable as _durable
from faithful_restore.format import hashing as _hashing
from faithful_restore.format import paths as _paths


def test_as_path_accepts_pathlike_and_file_urls(tmp_path):
    assert _paths.as_path(tmp_path / "b") == str(tmp_path / "b")
    assert _paths.as_path(f"file://{tmp_path}/b/") == f"{tmp_path}/b"
    with pytest.raises(fr.BundleError):
        _paths.as_path(["not", "a", "path"])


@pytest.mark.tensorflow
def test_hash_and_copy_agree(tmp_path):
    data = os.urandom(3 * 1024 * 1024 + 7)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    expected = (len(data), hashlib.sha256(data).hexdigest())
    assert _hashing.hash_file(str(src)) == expected
    assert _hashing.copy_hashing(str(src), "ram://fr-fileio/copy.bin") == (expected[0], [expected[1]])
    assert _hashing.hash_file("ram://fr-fileio/copy.bin") == expected


@settings(max_examples=30, deadline=None)
@given(
    size=st.integers(0, 2 * 8 * 1024 * 1024 + 5),
    cuts=st.lists(st.floats(0, 1, exclude_max=True), max_size=6, unique=True),
)
def test_segment_digests_hash_each_range(tmp_path_factory, size, cuts):
    # Bounds fall inside and across the 8 MiB read chunks; every range gets its own SHA-256.
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    src = tmp_path_factory.mktemp("seg") / "f.bin"
    src.write_bytes(data)
    bounds = sorted({int(c * size) for c in cuts} - {0})
    edges = [0, *bounds, size]
    expected = [hashlib.sha256(data[a:b]).hexdigest() for a, b in zip(edges, edges[1:])]
    assert _hashing.hash_segments(str(src), bounds) == (size, expected)
    copied = _hashing.copy_hashing(str(src), str(src) + ".copy", bounds=bounds)
    assert copied == (size, expected)
    assert pathlib.Path(str(src) + ".copy").read_bytes() == data


def test_commit_local_replaces_and_cleans(tmp_path):
    target = tmp_path / "b"
    target.mkdir()
    (target / "old").write_text("old")
    stage = tmp_path / "stage"
    stage.mkdir()
    (stage / "new").write_text("new")
    with pytest.raises(fr.BundleError, match="overwrite=False"):
        _commit.commit_local(str(stage), str(target), overwrite=False)
    _commit.commit_local(str(stage), str(target), overwrite=True)
    assert sorted(os.listdir(tmp_path)) == ["b"]
    assert (target / "new").read_text() == "new"


def test_stage_dir_is_a_hidden_sibling(tmp_path):
    stage = _commit.local_stage_dir(str(tmp_path / "bundle"))
    assert os.path.dirname(stage) == str(tmp_path)
    assert os.path.basename(stage).startswith(".bundle" + _commit.TMP_TAG)


def test_list_files_reports_links(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_text("x")
    os.symlink("/etc", tmp_path / "link")
    assert _paths.list_files(str(tmp_path)) == ["d/f", "link"]


@pytest.mark.tensorflow
def test_symlinked_file_in_bundle_is_refused(tmp_path):
    from conftest import sequential_model

    path = tmp_path / "b"
    fr.save_bundle(sequential_model(), str(path))
    meta = path / "model" / "metadata.json"
    real = tmp_path / "elsewhere.json"
    real.write_bytes(meta.read_bytes())
    meta.unlink()
    os.symlink(real, meta)
    with pytest.raises(fr.IntegrityError, match="link"):
        fr.load_bundle(str(path))


@pytest.mark.tensorflow
def test_progress_is_shown_only_when_asked_or_on_a_terminal(tmp_path, capsys):
    from conftest import sequential_model

    from faithful_restore.format import progress as _progress

    assert _progress.wanted(True) and not _progress.wanted(False)
    assert not _progress.wanted("auto")  # pytest's captured stderr is not a terminal
    with pytest.raises(fr.BundleError, match="verbose must be"):
        fr.save_bundle(sequential_model(), str(tmp_path / "x"), verbose="loud")
    fr.save_bundle(sequential_model(), str(tmp_path / "b"), verbose=True)
    fr.load_bundle(str(tmp_path / "b"), verbose=True)
    captured = capsys.readouterr()
    assert "hashing" in captured.err and "checking" in captured.err
    assert "byte" in captured.out  # Keras' Progbar
    fr.save_bundle(sequential_model(), str(tmp_path / "c"))
    fr.load_bundle(str(tmp_path / "c"))
    quiet = capsys.readouterr()
    assert quiet.out == "" and "hashing" not in quiet.err


def test_in_background_waits_and_raises_the_threads_error():
    done = threading.Event()

    def slow_failure():
        done.wait(5)
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        with _durable.in_background(slow_failure, "t"):
            done.set()  # the error surfaces at the end of the block, after the thread finished
    ran: list[int] = []
    with _durable.in_background(lambda: ran.append(1), "t") as wait:
        wait()
        assert ran == [1]


def test_in_background_never_outlives_a_failing_block():
    finished = threading.Event()

    def work():
        time.sleep(0.2)
        finished.set()

    with pytest.raises(ValueError):
        with _durable.in_background(work, "t"):
            raise ValueError("caller failed")
    assert finished.is_set()  # joined before the caller's error propagated


def test_scratch_writes_skip_fsync_only_inside_the_block(tmp_path, monkeypatch):
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    with _durable.scratch_writes():
        assert not _durable.durable()
        _durable.write_bytes_local(str(tmp_path / "a"), b"scratch")
    assert synced == []
    assert _durable.durable()
    _durable.write_bytes_local(str(tmp_path / "b"), b"kept")
    assert len(synced) == 1
    assert (tmp_path / "a").read_bytes() == b"scratch" and (tmp_path / "b").read_bytes() == b"kept"


@pytest.mark.tensorflow
def test_assert_roundtrip_does_not_flush_its_scratch_bundle_but_save_bundle_does(tmp_path, monkeypatch):
    trees: list[str] = []
    real = _durable.fsync_tree
    monkeypatch.setattr(_durable, "fsync_tree", lambda root: (trees.append(root), real(root))[1])
    model = sequential_model()
    fr.assert_roundtrip(model, path=tmp_path / "scratch", check_training_step=False)
    assert trees == []
    fr.save_bundle(model, tmp_path / "kept")
    assert len(trees) == 1


def test_early_writeback_leaves_files_intact_and_closes_what_it_opened(tmp_path):
    fd_dir = "/proc/self/fd"
    before = len(os.listdir(fd_dir)) if os.path.isdir(fd_dir) else None
    data = os.urandom(1 << 20)
    with _durable.early_writeback(str(tmp_path), interval=0.001):
        with open(tmp_path / "w.bin", "wb") as f:
            for _ in range(8):
                f.write(data)
                time.sleep(0.005)
    assert (tmp_path / "w.bin").read_bytes() == data * 8
    if before is not None:
        assert len(os.listdir(fd_dir)) == before


@settings(max_examples=60, deadline=None)
@given(
    data=st.binary(max_size=3000),
    offset=st.integers(0, 3500),
    length=st.integers(0, 3500),
)
def test_read_at_fills_the_view_from_the_offset_and_stops_only_at_the_end(tmp_path_factory, data, offset, length):
    path = tmp_path_factory.mktemp("read_at") / "f"
    path.write_bytes(data)
    buf = bytearray(b"\xaa" * length)
    with open(path, "rb", buffering=0) as f:
        got = _paths.read_at(f, offset, memoryview(buf))
    expected = data[offset : offset + length]
    assert got == len(expected)
    assert bytes(buf[:got]) == expected
    assert bytes(buf[got:]) == b"\xaa" * (length - got)  # nothing written past what was read
