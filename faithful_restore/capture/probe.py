"""The probe: fixed inputs and the outputs the saved model computed for them in inference mode.

A load re-runs the probe to check the restored model still computes the same. The tolerance is
recorded at save time: the model is run twice on the probe and the largest difference between
the two runs (the noise floor of its kernels) sets the same-environment tolerance, which is 0
(bitwise) for deterministic kernels. Across environments (other TF, CPU vs GPU) results may
legitimately differ by rounding, so a looser tolerance applies there.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from faithful_restore.capture.preprocessing import load_npy
from faithful_restore.capture.random_state import preserved
from faithful_restore.errors import ArgumentError, BundleError
from faithful_restore.runtime import variables as _variables

DIR = "probe"
# Rounding across TF versions/devices, relative to the output's own magnitude.
# A computed difference up to this many noise floors (run-to-run differences of the original) is noise.
NOISE_FACTOR = 4.0
_CROSS_ENV_RTOL = {"float16": 1e-2, "bfloat16": 5e-2, "float32": 1e-4, "float64": 1e-9}


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "numpy"):
        value = value.numpy()
    array = np.asarray(value)
    if array.dtype.hasobject:  # tf.string tensors come back as object arrays of bytes
        array = array.astype(bytes)
    return array


def normalize_inputs(sample_inputs: Any) -> tuple[str, list[str], list[np.ndarray]]:
    """Returns (structure, names, arrays) for an array, a list/tuple or a dict of arrays."""
    if isinstance(sample_inputs, Mapping):
        names = [str(k) for k in sample_inputs]
        return "dict", names, [_to_numpy(sample_inputs[k]) for k in sample_inputs]
    if isinstance(sample_inputs, (list, tuple)):
        return "list", [f"input_{i}" for i in range(len(sample_inputs))], [_to_numpy(v) for v in sample_inputs]
    try:
        return "array", ["input_0"], [_to_numpy(sample_inputs)]
    except Exception as e:  # noqa: BLE001
        raise ArgumentError(
            f"sample_inputs of type {type(sample_inputs).__name__} cannot be converted to arrays: "
            f"{e}; pass a NumPy array, a list of arrays or a dict of arrays."
        ) from e


def restructure(structure: str, names: list[str], arrays: list[np.ndarray]) -> Any:
    if structure == "dict":
        return dict(zip(names, arrays))
    if structure == "list":
        return list(arrays)
    return arrays[0]


def run(model: Any, inputs: Any, keep_random_state: bool = True) -> list[np.ndarray]:
    """The model's outputs in inference mode, flattened.

    With ``keep_random_state`` the model's seed generators are put back afterwards.
    """
    import tensorflow as tf

    with preserved(model) if keep_random_state else contextlib.nullcontext():
        # Keras does not save a stateful RNN's hidden state; probes start from the zero state a
        # restored model starts from.
        _variables.reset_stateful_rnns(model)
        outputs = model(inputs, training=False)
    return [_to_numpy(o) for o in tf.nest.flatten(outputs)]


def max_differences(a: list[np.ndarray], b: list[np.ndarray]) -> list[tuple[float, float]]:
    """Per output: (max abs diff, max diff relative to the largest magnitude); inf for a mismatch."""
    out = []
    for x, y in zip(a, b):
        if x.shape != y.shape or x.dtype.kind != y.dtype.kind:
            out.append((float("inf"), float("inf")))
        elif _variables.same_bytes(x, y):
            out.append((0.0, 0.0))  # the common case, decided without float64 copies
        elif x.dtype.kind in "fc":
            x64, y64 = x.astype(np.float64), y.astype(np.float64)
            nan_mismatch = bool(np.any(np.isnan(x64) != np.isnan(y64)))
            diff = np.abs(np.nan_to_num(x64 - y64, nan=0.0))
            absdiff = float("inf") if nan_mismatch else float(diff.max(initial=0.0))
            scale = float(np.abs(np.nan_to_num(x64)).max(initial=0.0))
            out.append((absdiff, absdiff / scale if scale > 0 else absdiff))
        elif x.dtype.kind in "biu":
            absdiff = float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64)), initial=0.0))
            scale = float(np.max(np.abs(x.astype(np.float64)), initial=0.0))
            out.append((absdiff, absdiff / scale if scale > 0 else absdiff))
        else:
            same = bool(np.array_equal(x, y))
            out.append((0.0, 0.0) if same else (float("inf"), float("inf")))
    if len(a) != len(b):
        out.append((float("inf"), float("inf")))
    return out


@dataclass(frozen=True)
class Probe:
    structure: str
    names: list[str]
    inputs: list[np.ndarray]
    outputs: list[np.ndarray]
    noise_floor: float


def record(model: Any, sample_inputs: Any) -> Probe:
    structure, names, arrays = normalize_inputs(sample_inputs)
    inputs = restructure(structure, names, arrays)
    try:
        first = run(model, inputs)
        second = run(model, inputs)
    except Exception as e:  # noqa: BLE001 - a model that cannot take the inputs is a caller error
        raise ArgumentError(
            f"the model cannot be called on sample_inputs ({structure} of shapes "
            f"{[list(a.shape) for a in arrays]}): {type(e).__name__}: {str(e).splitlines()[0]}; "
            "pass inputs shaped like the model's input signature."
        ) from e
    noise = max((d for d, _ in max_differences(first, second)), default=0.0)
    return Probe(structure, names, arrays, first, noise)


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def encode(probe: Probe) -> tuple[dict[str, Any], dict[str, bytes]]:
    files: dict[str, bytes] = {}
    inputs, outputs = [], []
    for i, (name, a) in enumerate(zip(probe.names, probe.inputs)):
        rel = f"{DIR}/input_{i}.npy"
        files[rel] = _npy(a)
        inputs.append({"name": name, "file": rel, "dtype": a.dtype.str, "shape": list(a.shape)})
    rtol = 0.0
    for i, a in enumerate(probe.outputs):
        rel = f"{DIR}/output_{i}.npy"
        files[rel] = _npy(a)
        outputs.append({"file": rel, "dtype": a.dtype.str, "shape": list(a.shape)})
        rtol = max(rtol, _CROSS_ENV_RTOL.get(a.dtype.name, 0.0))
    same_atol = NOISE_FACTOR * probe.noise_floor
    section = {
        "structure": probe.structure,
        "inputs": inputs,
        "outputs": outputs,
        "noise_floor": probe.noise_floor,
        "tolerance": {
            "same_environment": {"atol": same_atol, "rtol": 0.0},
            "other_environment": {"atol": same_atol, "rtol": rtol},
        },
    }
    return section, files


def decode(section: Mapping[str, Any], read: Callable[[str], bytes]) -> Probe:
    def load(entry: Mapping[str, Any]) -> np.ndarray:
        array = load_npy(read(entry["file"]), entry["file"])
        if array.dtype.str != entry["dtype"] or list(array.shape) != entry["shape"]:
            raise BundleError(
                f"{entry['file']} holds {array.dtype.str} {list(array.shape)}, the manifest records "
                f"{entry['dtype']} {entry['shape']}; the bundle is damaged."
            )
        return array

    inputs = [load(e) for e in section["inputs"]]
    outputs = [load(e) for e in section["outputs"]]
    names = [e["name"] for e in section["inputs"]]
    return Probe(section["structure"], names, inputs, outputs, float(section["noise_floor"]))


def check(model: Any, section: Mapping[str, Any], probe: Probe, same_environment: bool) -> list[str]:
    """Re-runs the probe; returns one message per output that moved beyond the tolerance."""
    tolerance = section["tolerance"]["same_environment" if same_environment else "other_environment"]
    found = run(model, restructure(probe.structure, probe.names, probe.inputs))
    problems = []
    if len(found) != len(probe.outputs):
        return [f"the restored model returns {len(found)} outputs, the saved one returned {len(probe.outputs)}"]
    for i, ((absdiff, _rel), expected) in enumerate(zip(max_differences(probe.outputs, found), probe.outputs)):
        scale = float(np.abs(expected.astype(np.float64)).max(initial=0.0)) if expected.dtype.kind in "fc" else 0.0
        allowed = tolerance["atol"] + tolerance["rtol"] * scale
        if absdiff > allowed:
            problems.append(
                f"output {i}: max abs difference {absdiff:.3g} from the saved outputs, allowed {allowed:.3g}"
            )
    return problems
