"""``manifest.json``: what a bundle holds and how to check it. The format is specified here and
in docs/bundle-format.md.

- The manifest is a UTF-8 JSON object with sorted keys. ``format_version`` is "MAJOR.MINOR",
  independent of the package version. Readers MUST refuse a newer MAJOR; a newer MINOR only adds
  keys, which older readers ignore.
- ``manifest.sha256`` beside it holds the SHA-256 hex digest of the manifest's exact bytes.
- ``files`` lists every other file of the bundle with its size and SHA-256; a bundle holds no
  file that is not listed. Paths are relative, '/'-separated, without '..' or empty segments.
  Since 2.0 a file may instead carry ``segments``: byte ranges that tile it, each with its own
  SHA-256 (so weights can be hashed while Keras writes them); its ``sha256`` is then the digest
  of the segment table (:func:`segment_table_digest`). A bundle is written with the lowest
  version that can express it: 1.0 when no file is segmented.
- The manifest is written last: a directory without it is not a bundle.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from faithful_restore.errors import BundleError
from faithful_restore.format.layout import MODEL_METADATA
from faithful_restore.format.records import Environment, Signature

FORMAT_VERSION = "2.0"
# The version of bundles that hold no segmented file (readable by every 1.x reader).
BASE_FORMAT_VERSION = "1.0"
MANIFEST = "manifest.json"
DIGEST = "manifest.sha256"
MAX_MANIFEST_BYTES = 64 * 1024 * 1024
_SHA = re.compile(r"^[0-9a-f]{64}$")
_VERSION = re.compile(r"^(\d{1,4})\.(\d{1,4})$")
_OPTIMIZER_KEYS = {"class", "source", "config", "built", "iterations", "variable_indices", "variables"}
_PROBE_KEYS = {"structure", "inputs", "outputs", "noise_floor", "tolerance"}


@dataclass(frozen=True)
class Segment:
    """A byte range of a file with the SHA-256 of its bytes."""

    offset: int
    size: int
    sha256: str

    def to_list(self) -> list[Any]:
        return [self.offset, self.size, self.sha256]


def segment_table_digest(segments: tuple[Segment, ...] | list[Segment]) -> str:
    """The SHA-256 that stands for a segmented file: of its table, one "offset size sha256" line each."""
    table = "".join(f"{s.offset} {s.size} {s.sha256}\n" for s in segments)
    return hashlib.sha256(table.encode()).hexdigest()


@dataclass(frozen=True)
class FileEntry:
    """One file of a bundle.

    ``sha256`` is the SHA-256 of the file's bytes, or, when ``segments`` is not empty, of the
    segment table (the segments tile the file in order and each holds its bytes' SHA-256).
    """

    path: str
    size: int
    sha256: str
    segments: tuple[Segment, ...] = ()

    @classmethod
    def segmented(cls, path: str, segments: tuple[Segment, ...]) -> FileEntry:
        """The entry of a file hashed as ``segments`` (which tile it)."""
        return cls(path, sum(s.size for s in segments), segment_table_digest(segments), segments)

    @property
    def bounds(self) -> list[int]:
        """Where each segment but the last ends (for hashing the file segment by segment)."""
        return [s.offset + s.size for s in self.segments[:-1]]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "size": self.size, "sha256": self.sha256}
        if self.segments:
            out["segments"] = [s.to_list() for s in self.segments]
        return out

    @classmethod
    def from_dict(cls, data: Any) -> FileEntry:
        keys = set(data) if isinstance(data, dict) else set()
        if keys not in ({"path", "size", "sha256"}, {"path", "size", "sha256", "segments"}):
            raise BundleError(
                f"a manifest file entry must have exactly path, size, sha256 (and optionally segments); found {data!r}."
            )
        check_relative_path(data["path"])
        size, digest = data["size"], data["sha256"]
        if not _count(size):
            raise BundleError(f"file {data['path']!r}: size must be a non-negative integer, found {size!r}.")
        if not isinstance(digest, str) or not _SHA.match(digest):
            raise BundleError(f"file {data['path']!r}: sha256 must be 64 lowercase hex digits, found {digest!r}.")
        segments = _segments(data["path"], size, data["segments"]) if "segments" in data else ()
        if segments and segment_table_digest(segments) != digest:
            raise BundleError(
                f"file {data['path']!r}: sha256 {digest[:16]}... is not the digest of its segment table "
                f"({segment_table_digest(segments)[:16]}...); the manifest is damaged."
            )
        return cls(data["path"], size, digest, segments)


def version_for(files: tuple[FileEntry, ...] | list[FileEntry]) -> str:
    """The lowest format version that can describe these files (older readers can read it)."""
    return FORMAT_VERSION if any(f.segments for f in files) else BASE_FORMAT_VERSION


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _segments(path: str, size: int, raw: Any) -> tuple[Segment, ...]:
    """Validates a segment table: non-empty ranges that tile ``[0, size)`` in order."""
    if not isinstance(raw, list) or not raw:
        raise BundleError(f"file {path!r}: segments must be a non-empty list, found {raw!r}.")
    out = []
    end = 0
    for item in raw:
        if not (
            isinstance(item, list)
            and len(item) == 3
            and _count(item[0])
            and _count(item[1])
            and item[1] > 0
            and isinstance(item[2], str)
            and _SHA.match(item[2])
        ):
            raise BundleError(
                f"file {path!r}: segment {item!r} is not [offset, size > 0, sha256]; the manifest is damaged."
            )
        if item[0] != end:
            raise BundleError(
                f"file {path!r}: segment {item[:2]} starts at byte {item[0]}, the previous one ends at {end}; "
                "segments must tile the file in order. The manifest is damaged."
            )
        end += item[1]
        out.append(Segment(item[0], item[1], item[2]))
    if end != size:
        raise BundleError(
            f"file {path!r}: its segments cover {end} bytes, the file has {size}; the manifest is damaged."
        )
    return tuple(out)


def check_relative_path(path: Any) -> str:
    """Raises BundleError unless ``path`` is a plain relative path inside the bundle."""
    if (
        not isinstance(path, str)
        or not path
        or path.startswith("/")
        or "\\" in path
        or "\x00" in path
        or ":" in path
        or any(part in ("", ".", "..") for part in path.split("/"))
    ):
        raise BundleError(
            f"the manifest names file {path!r}, which is not a plain relative path inside the "
            "bundle; refusing a bundle that points outside itself."
        )
    return path


@dataclass(frozen=True)
class Manifest:
    """Everything a bundle records about the saved model. See docs/bundle-format.md."""

    format_version: str
    created: str
    library_version: str
    metadata: dict[str, Any]
    environment: Environment
    model: dict[str, Any]
    signature: Signature
    optimizer: dict[str, Any] | None
    compile: dict[str, Any] | None
    preprocessing: dict[str, Any]
    regularization: list[dict[str, Any]]
    random_state: list[dict[str, Any]]
    state: list[str]
    probe: dict[str, Any] | None
    distribution: dict[str, Any] | None = None
    model_optimizer: dict[str, Any] | None = None
    files: tuple[FileEntry, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "faithful_restore.bundle",
            "format_version": self.format_version,
            "created": self.created,
            "library_version": self.library_version,
            "metadata": self.metadata,
            "environment": self.environment.to_dict(),
            "model": self.model,
            "signature": self.signature.to_dict(),
            "optimizer": self.optimizer,
            "compile": self.compile,
            "preprocessing": self.preprocessing,
            "regularization": self.regularization,
            "random_state": self.random_state,
            "state": list(self.state),
            "probe": self.probe,
            "distribution": self.distribution,
            "model_optimizer": self.model_optimizer,
            "files": [f.to_dict() for f in self.files],
        }

    def to_json(self) -> bytes:
        return (json.dumps(self.to_dict(), sort_keys=True, indent=1, allow_nan=False) + "\n").encode()

    @property
    def file_map(self) -> dict[str, FileEntry]:
        return {f.path: f for f in self.files}

    @property
    def content_digest(self) -> str:
        """SHA-256 of what the bundle holds, not of when it was saved.

        The manifest without ``created`` and without the entry of Keras' ``model/metadata.json``
        (whose only other field, the Keras version, the environment records): two saves of the same
        model and state have the same content digest. With ``SOURCE_DATE_EPOCH`` set, save_bundle
        writes both dates from it, so the bundles are byte-identical too.
        """
        data = self.to_dict()
        del data["created"]
        data["files"] = [f for f in data["files"] if f["path"] != MODEL_METADATA]
        return digest(json.dumps(data, sort_keys=True, allow_nan=False).encode())

    @classmethod
    def from_dict(cls, data: Any) -> Manifest:
        """Validates and converts a parsed manifest; raises BundleError naming what is wrong."""
        if not isinstance(data, dict):
            raise BundleError(f"manifest.json must hold a JSON object, found {type(data).__name__}.")
        if data.get("format") != "faithful_restore.bundle":
            raise BundleError(
                f"manifest.json has format {data.get('format')!r}, expected 'faithful_restore.bundle'; "
                "this directory was not written by faithful_restore."
            )
        version = data.get("format_version")
        match = _VERSION.match(version) if isinstance(version, str) else None
        if not match:
            raise BundleError(f"manifest format_version must look like '1.0', found {version!r}.")
        major, minor = int(match.group(1)), int(match.group(2))
        ours_major, ours_minor = (int(x) for x in FORMAT_VERSION.split("."))
        if major > ours_major:
            raise BundleError(
                f"the bundle has format version {version}, this faithful_restore reads up to "
                f"{FORMAT_VERSION}; upgrade faithful_restore to load it."
            )
        known = set(cls.__dataclass_fields__) | {"format"}
        missing = known - set(data)
        if missing:
            raise BundleError(f"manifest.json lacks {sorted(missing)}; the manifest is damaged.")
        extra = set(data) - known
        if extra and (major, minor) <= (ours_major, ours_minor):
            raise BundleError(f"manifest.json has unknown keys {sorted(extra)}; the manifest is damaged.")

        def typed(key: str, types: Any, nullable: bool = False) -> Any:
            value = data[key]
            if value is None and nullable:
                return None
            if not isinstance(value, types) or isinstance(value, bool):
                raise BundleError(f"manifest {key!r} has type {type(value).__name__}; the manifest is damaged.")
            return value

        for key in ("created", "library_version"):
            typed(key, str)
        optimizer = typed("optimizer", dict, nullable=True)
        if optimizer is not None:
            _check_optimizer(optimizer)
        probe = typed("probe", dict, nullable=True)
        if probe is not None:
            _check_probe(probe)
        state = typed("state", list)
        if not all(isinstance(s, str) for s in state):
            raise BundleError("manifest 'state' must list names (strings).")
        preprocessing = typed("preprocessing", dict)
        _check_preprocessing(preprocessing)
        random_state = typed("random_state", list)
        for entry in random_state:
            if not (
                isinstance(entry, dict)
                and isinstance(entry.get("path"), str)
                and isinstance(entry.get("value"), list)
                and all(
                    isinstance(v, int) and not isinstance(v, bool) and -(2**63) <= v < 2**64 for v in entry["value"]
                )
                and isinstance(entry.get("dtype"), str)
            ):
                raise BundleError(f"manifest random_state entry {entry!r} is malformed.")
        _check_model(typed("model", dict))
        for entry in typed("regularization", list):
            if not (
                isinstance(entry, dict)
                and isinstance(entry.get("path"), str)
                and isinstance(entry.get("settings"), dict)
            ):
                raise BundleError(f"manifest regularization entry {entry!r} is malformed.")
        for entry in preprocessing["layers"]:
            if not (
                isinstance(entry, dict)
                and isinstance(entry.get("path"), str)
                and isinstance(entry.get("state"), dict)
                and isinstance(entry["state"].get("kind"), str)
            ):
                raise BundleError(f"manifest preprocessing layer entry {entry!r} is malformed.")
        model_optimizer = typed("model_optimizer", dict, nullable=True)
        if model_optimizer is not None:
            _check_optimizer(model_optimizer)
        distribution = typed("distribution", dict, nullable=True)
        if distribution is not None:
            _check_distribution(distribution)
        files_raw = typed("files", list)
        files = tuple(FileEntry.from_dict(f) for f in files_raw)
        if len({f.path for f in files}) != len(files):
            raise BundleError("manifest 'files' lists a path twice; the manifest is damaged.")
        if major < 2 and any(f.segments for f in files):
            raise BundleError(
                f"manifest format {version} cannot hold segmented files (they came with 2.0); the manifest is damaged."
            )
        return cls(
            format_version=str(version),
            created=data["created"],
            library_version=data["library_version"],
            metadata=typed("metadata", dict),
            environment=Environment.from_dict(data["environment"]),
            model=typed("model", dict),
            signature=Signature.from_dict(data["signature"]),
            optimizer=optimizer,
            compile=typed("compile", dict, nullable=True),
            preprocessing=preprocessing,
            regularization=typed("regularization", list),
            random_state=random_state,
            state=state,
            probe=probe,
            distribution=distribution,
            model_optimizer=model_optimizer,
            files=files,
        )


def _check_distribution(section: dict[str, Any]) -> None:
    ok = (
        isinstance(section.get("strategy"), str)
        and isinstance(section.get("num_replicas_in_sync"), int)
        and isinstance(section.get("num_workers"), int)
        and isinstance(section.get("replica_divergence"), list)
        and all(
            isinstance(d, dict) and isinstance(d.get("path"), str) and isinstance(d.get("replicas"), int)
            for d in section["replica_divergence"]
        )
    )
    if not ok:
        raise BundleError(f"manifest 'distribution' is malformed: {section!r}.")


def _check_model(section: dict[str, Any]) -> None:
    params = section.get("params")
    layers = section.get("layers")
    if not (
        isinstance(section.get("class"), str)
        and isinstance(section.get("name"), str)
        and isinstance(params, dict)
        and all(isinstance(params.get(k), int) for k in ("trainable", "non_trainable"))
        and isinstance(layers, list)
    ):
        raise BundleError("manifest 'model' must have class, name, params {trainable, non_trainable} and layers.")
    for layer in layers:
        if not (
            isinstance(layer, dict)
            and all(isinstance(layer.get(k), str) for k in ("path", "class", "config_sha256"))
            and isinstance(layer.get("weights"), list)
        ):
            raise BundleError(f"manifest model layer entry {layer!r} is malformed.")


def _check_optimizer(section: dict[str, Any]) -> None:
    if not _OPTIMIZER_KEYS <= set(section):
        raise BundleError(f"manifest 'optimizer' lacks {sorted(_OPTIMIZER_KEYS - set(section))}.")
    if section["source"] not in ("model", "separate"):
        raise BundleError(f"manifest optimizer.source must be 'model' or 'separate', found {section['source']!r}.")
    if not isinstance(section["built"], bool) or not isinstance(section["iterations"], int):
        raise BundleError("manifest optimizer.built/iterations have wrong types.")
    if not isinstance(section["config"], dict):
        raise BundleError("manifest optimizer.config must be an object.")
    indices = section["variable_indices"]
    if indices is not None and not (isinstance(indices, list) and all(isinstance(i, int) and i >= 0 for i in indices)):
        raise BundleError("manifest optimizer.variable_indices must be a list of non-negative ints.")
    variables = section["variables"]
    if not isinstance(variables, list):
        raise BundleError("manifest optimizer.variables must be a list.")
    for v in variables:
        if not (
            isinstance(v, dict)
            and isinstance(v.get("name"), str)
            and isinstance(v.get("dtype"), str)
            and isinstance(v.get("shape"), list)
            and all(isinstance(d, int) for d in v["shape"])
        ):
            raise BundleError(f"manifest optimizer variable {v!r} is malformed.")


def _check_entry_file(entry: Any) -> None:
    if not (isinstance(entry, dict) and isinstance(entry.get("dtype"), str) and isinstance(entry.get("shape"), list)):
        raise BundleError(f"manifest array entry {entry!r} is malformed.")
    check_relative_path(entry.get("file"))


def _check_probe(section: dict[str, Any]) -> None:
    if set(section) != _PROBE_KEYS:
        raise BundleError(f"manifest 'probe' must have keys {sorted(_PROBE_KEYS)}, found {sorted(section)}.")
    if section["structure"] not in ("array", "list", "dict"):
        raise BundleError(f"manifest probe.structure {section['structure']!r} is not array, list or dict.")
    for key in ("inputs", "outputs"):
        if not isinstance(section[key], list):
            raise BundleError(f"manifest probe.{key} must be a list.")
        for entry in section[key]:
            _check_entry_file(entry)
    for entry in section["inputs"]:
        if not isinstance(entry.get("name"), str):
            raise BundleError("manifest probe input entries need a name.")
    tol = section["tolerance"]
    try:
        values = [tol[k][t] for k in ("same_environment", "other_environment") for t in ("atol", "rtol")]
    except (KeyError, TypeError) as e:
        raise BundleError(f"manifest probe.tolerance is malformed: {tol!r}.") from e
    noise = section["noise_floor"]
    for v in [*values, noise]:
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
            raise BundleError(f"manifest probe tolerance {v!r} is not a finite non-negative number.")


def _check_preprocessing(section: dict[str, Any]) -> None:
    shape_ok = set(section) == {"layers", "user"}
    if not shape_ok or not isinstance(section["layers"], list) or not isinstance(section["user"], dict):
        raise BundleError("manifest 'preprocessing' must have a 'layers' list and a 'user' object.")
    for key, entry in section["user"].items():
        if not isinstance(entry, dict) or entry.get("kind") not in ("array", "value"):
            raise BundleError(f"manifest preprocessing entry {key!r} is malformed.")
        if entry["kind"] == "array":
            _check_entry_file(entry)
        elif set(entry) != {"kind", "value"}:
            raise BundleError(f"manifest preprocessing entry {key!r} must have exactly kind and value.")


def _reject_constant(name: str) -> Any:
    raise BundleError(f"manifest.json contains {name}, which is not valid JSON; the manifest is damaged.")


def parse(raw: bytes) -> Manifest:
    """Parses manifest bytes strictly (no NaN/Infinity, bounded nesting)."""
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except BundleError:
        raise
    except RecursionError as e:
        raise BundleError("manifest.json nests too deeply; refusing it.") from e
    except (UnicodeDecodeError, ValueError) as e:
        raise BundleError(f"manifest.json is not valid UTF-8 JSON ({e}); the manifest is damaged.") from e
    return Manifest.from_dict(data)


def digest(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()
