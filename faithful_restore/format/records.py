"""Records of the environment and the input signature, as stored in a manifest."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from faithful_restore.errors import BundleError


@dataclass(frozen=True)
class Environment:
    """Versions and settings that change what a model computes or how it loads."""

    python: str
    tensorflow: str
    keras: str
    numpy: str
    platform: str
    system: str
    machine: str
    keras_backend: str
    tf_use_legacy_keras: str | None
    mixed_precision_policy: str
    device_kinds: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["device_kinds"] = list(self.device_kinds)
        return d

    @classmethod
    def from_dict(cls, data: Any) -> Environment:
        if not isinstance(data, dict):
            raise BundleError(f"manifest 'environment' must be an object, found {type(data).__name__}.")
        names = {f.name for f in fields(cls)}
        missing = names - set(data)
        if missing:
            raise BundleError(f"manifest 'environment' lacks {sorted(missing)}; the manifest is damaged.")
        kinds = data["device_kinds"]
        if not isinstance(kinds, list) or not all(isinstance(k, str) for k in kinds):
            raise BundleError("manifest 'environment.device_kinds' must be a list of strings.")
        for name in names - {"device_kinds", "tf_use_legacy_keras"}:
            if not isinstance(data[name], str):
                raise BundleError(f"manifest 'environment.{name}' must be a string, found {data[name]!r}.")
        legacy = data["tf_use_legacy_keras"]
        if legacy is not None and not isinstance(legacy, str):
            raise BundleError("manifest 'environment.tf_use_legacy_keras' must be a string or null.")
        return cls(**{**{n: data[n] for n in names}, "device_kinds": tuple(kinds)})


@dataclass(frozen=True)
class TensorRecord:
    """One input or output of a model."""

    name: str
    shape: tuple[int | None, ...] | None  # None when the rank is unknown
    dtype: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "shape": None if self.shape is None else list(self.shape),
            "dtype": self.dtype,
        }

    @classmethod
    def from_dict(cls, data: Any) -> TensorRecord:
        if not isinstance(data, dict) or set(data) != {"name", "shape", "dtype"}:
            raise BundleError(f"a signature entry must have exactly name, shape, dtype; found {data!r}.")
        shape = data["shape"]
        if shape is not None:
            if not isinstance(shape, list) or not all(
                d is None or (isinstance(d, int) and not isinstance(d, bool) and d >= 0) for d in shape
            ):
                raise BundleError(f"signature shape must be a list of ints or nulls, found {shape!r}.")
            shape = tuple(shape)
        if not isinstance(data["name"], str) or not isinstance(data["dtype"], str):
            raise BundleError(f"signature name and dtype must be strings, found {data!r}.")
        return cls(data["name"], shape, data["dtype"])


@dataclass(frozen=True)
class Signature:
    """A model's inputs and outputs, in the order the model takes and returns them."""

    inputs: tuple[TensorRecord, ...]
    outputs: tuple[TensorRecord, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
        }

    @classmethod
    def from_dict(cls, data: Any) -> Signature:
        if not isinstance(data, dict) or set(data) != {"inputs", "outputs"}:
            raise BundleError(f"manifest 'signature' must have inputs and outputs, found {data!r}.")
        for key in ("inputs", "outputs"):
            if not isinstance(data[key], list):
                raise BundleError(f"manifest 'signature.{key}' must be a list.")
        return cls(
            tuple(TensorRecord.from_dict(t) for t in data["inputs"]),
            tuple(TensorRecord.from_dict(t) for t in data["outputs"]),
        )
