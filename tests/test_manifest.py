"""The manifest reader: strict, versioned, and only ever raises our own errors."""

from __future__ import annotations

import json
import time

import pytest
from conftest import rewrite_manifest, sequential_model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import faithful_restore as fr
from faithful_restore.format import manifest as _manifest


@pytest.fixture(scope="module")
def manifest_dict(tmp_path_factory):
    path = tmp_path_factory.mktemp("m") / "b"
    manifest = fr.save_bundle(sequential_model(), str(path), sample_inputs=__import__("numpy").ones((2, 4), "float32"))
    return manifest.to_dict()


def test_to_dict_from_dict_roundtrip(manifest_dict):
    manifest = fr.Manifest.from_dict(manifest_dict)
    assert manifest.to_dict() == manifest_dict
    assert _manifest.parse(manifest.to_json()) == manifest


def test_json_is_deterministic(manifest_dict):
    manifest = fr.Manifest.from_dict(manifest_dict)
    assert manifest.to_json() == fr.Manifest.from_dict(json.loads(manifest.to_json())).to_json()
    keys = list(json.loads(manifest.to_json()))
    assert keys == sorted(keys)


@pytest.mark.parametrize(
    "bad",
    ["../outside", "/etc/passwd", "a/../../b", "a//b", "C:\\x", "a\\b", "./a", "", "a/./b"],
)
def test_file_paths_outside_the_bundle_are_refused(manifest_dict, bad):
    data = json.loads(json.dumps(manifest_dict))
    data["files"][0]["path"] = bad
    with pytest.raises(fr.BundleError, match="not a plain relative path"):
        fr.Manifest.from_dict(data)


@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda d: d.update(format="other"), "not written by faithful_restore"),
        (lambda d: d.update(format_version="3.1"), "upgrade faithful_restore"),
        (lambda d: d.update(format_version="one"), "must look like"),
        (lambda d: d.pop("files"), "lacks"),
        (lambda d: d.update(surprise=1), "unknown keys"),
        (lambda d: d["files"][0].update(size=-1), "non-negative"),
        (lambda d: d["files"][0].update(sha256="xyz"), "64 lowercase hex"),
        (lambda d: d["files"].append(dict(d["files"][0])), "twice"),
        (lambda d: d.update(state="step"), "has type str"),
        (lambda d: d["probe"]["tolerance"]["same_environment"].update(atol=-1.0), "finite non-negative"),
        (lambda d: d["optimizer"].update(source="elsewhere"), "source must be"),
        (lambda d: d["environment"].pop("keras"), "lacks"),
        (lambda d: d["signature"]["inputs"][0].update(shape=["x"]), "ints or nulls"),
    ],
)
def test_malformed_manifests_are_refused(manifest_dict, mutate, match):
    data = json.loads(json.dumps(manifest_dict))
    mutate(data)
    with pytest.raises(fr.BundleError, match=match):
        fr.Manifest.from_dict(data)


def test_non_finite_and_deep_json_are_refused():
    with pytest.raises(fr.BundleError, match="NaN"):
        _manifest.parse(b'{"x": NaN}')
    with pytest.raises(fr.BundleError, match="nests too deeply|not valid"):
        _manifest.parse(b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(fr.BundleError, match="UTF-8 JSON"):
        _manifest.parse(b"\xff\xfe")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(sorted(_manifest.Manifest.__dataclass_fields__)), value=json_values)
def test_fuzzed_fields_only_raise_our_errors(manifest_dict, key, value):
    data = json.loads(json.dumps(manifest_dict))
    data[key] = value
    try:
        fr.Manifest.from_dict(data)
    except fr.BundleError:
        pass


@settings(max_examples=150, deadline=None)
@given(raw=st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()))
def test_fuzzed_bytes_only_raise_our_errors(raw):
    with pytest.raises(fr.BundleError):
        _manifest.parse(raw)


def _segmented_entry(sizes):
    segments, offset = [], 0
    for i, size in enumerate(sizes):
        segments.append(_manifest.Segment(offset, size, f"{i:064x}"))
        offset += size
    return _manifest.FileEntry.segmented("model/w.h5", tuple(segments))


@given(st.lists(st.integers(1, 10**12), min_size=1, max_size=20))
def test_segment_tables_roundtrip(sizes):
    entry = _segmented_entry(sizes)
    assert entry.size == sum(sizes) and len(entry.sha256) == 64
    assert _manifest.FileEntry.from_dict(json.loads(json.dumps(entry.to_dict()))) == entry
    assert entry.bounds == [s.offset + s.size for s in entry.segments[:-1]]


@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda d: d["segments"].pop(1), "starts at byte"),
        (lambda d: d["segments"][1].__setitem__(0, 4), "starts at byte"),
        (lambda d: d.update(size=d["size"] + 1), "cover"),
        (lambda d: d["segments"][0].__setitem__(1, 0), "size > 0"),
        (lambda d: d["segments"][0].__setitem__(2, "x" * 64), "sha256"),
        (lambda d: d["segments"][2].__setitem__(2, "f" * 64), "segment table"),
        (lambda d: d.update(segments=[]), "non-empty list"),
        (lambda d: d.update(segments="0 10 abc"), "non-empty list"),
        (lambda d: d.update(chunks=[]), "exactly path, size, sha256"),
    ],
)
def test_malformed_segment_tables_are_refused(mutate, match):
    data = _segmented_entry([10, 20, 30]).to_dict()
    mutate(data)
    with pytest.raises(fr.BundleError, match=match):
        _manifest.FileEntry.from_dict(data)


def test_bundles_are_written_with_the_lowest_version_that_describes_them(manifest_dict):
    plain = fr.Manifest.from_dict(manifest_dict)
    assert plain.format_version == _manifest.BASE_FORMAT_VERSION == _manifest.version_for(plain.files)
    segmented = (*plain.files, _segmented_entry([5, 5]))
    assert _manifest.version_for(segmented) == fr.FORMAT_VERSION
    # A 1.x manifest cannot hold segments: they would be checked as whole-file digests by 1.x readers.
    data = json.loads(plain.to_json())
    data["files"].append(_segmented_entry([5, 5]).to_dict())
    with pytest.raises(fr.BundleError, match="cannot hold segmented files"):
        fr.Manifest.from_dict(data)
    data["format_version"] = fr.FORMAT_VERSION
    assert fr.Manifest.from_dict(data).files[-1].segments


def test_content_digest_ignores_only_the_save_time(tmp_path):
    model = sequential_model()
    a = fr.save_bundle(model, str(tmp_path / "a"))
    time.sleep(1.05)  # a different second in `created` and in Keras' date_saved
    b = fr.save_bundle(model, str(tmp_path / "b"))
    assert a.created != b.created and a.to_json() != b.to_json()
    assert a.content_digest == b.content_digest == fr.read_manifest(tmp_path / "b").content_digest
    model.layers[0].kernel.assign(model.layers[0].kernel + 1.0)
    assert fr.save_bundle(model, str(tmp_path / "c")).content_digest != a.content_digest


def test_source_date_epoch_makes_identical_saves_byte_identical(tmp_path, monkeypatch):
    model = sequential_model()
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    fr.save_bundle(model, str(tmp_path / "a"))
    time.sleep(1.05)
    fr.save_bundle(model, str(tmp_path / "b"))
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert files and all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)
    assert fr.read_manifest(tmp_path / "a").created == "2023-11-14T22:13:20+00:00"
    assert json.loads((tmp_path / "a" / "model" / "metadata.json").read_text())["date_saved"] == "2023-11-14@22:13:20"
    fr.load_bundle(tmp_path / "a")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(ValueError, match="SOURCE_DATE_EPOCH must be a Unix time"):
        fr.save_bundle(model, str(tmp_path / "c"))
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d + b"x",  # a byte appended
        lambda d: d.rstrip(b"\n"),  # no newline
        lambda d: d.upper(),  # not the form save_bundle writes
        lambda d: b" " + d,
        lambda d: d + b"\n",
    ],
)
def test_the_manifest_digest_file_is_read_strictly(tmp_path, mutate):
    fr.save_bundle(sequential_model(), str(tmp_path / "b"))
    digest_file = tmp_path / "b" / "manifest.sha256"
    digest_file.write_bytes(mutate(digest_file.read_bytes()))
    for read in (fr.read_manifest, fr.load_bundle):
        with pytest.raises(fr.IntegrityError, match="manifest.sha256 in .* must hold exactly 64 lowercase hex digits"):
            read(tmp_path / "b")
    assert not fr.verify_bundle(tmp_path / "b").ok


# Reproductions of defects found in review.


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d["preprocessing"]["user"].update(bad={"kind": "value"}),
        lambda d: d["random_state"][0].update(value=[2**80, 1]),
        lambda d: d["random_state"][0].pop("path"),
    ],
)
def test_malformed_entries_raise_bundle_error(tmp_path, mutate):
    path = str(tmp_path / "b")
    fr.save_bundle(sequential_model(), path, preprocessing={"n": 1})
    rewrite_manifest(path, mutate)
    with pytest.raises(fr.BundleError):
        fr.load_bundle(path)
    with pytest.raises(fr.BundleError):
        fr.verify_bundle(path)
