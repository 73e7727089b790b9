"""The input/output signature of a live model (names, dtypes, shapes with a free batch dimension)."""

from __future__ import annotations

from typing import Any

import numpy as np

from faithful_restore.format.records import Signature, TensorRecord


def _dtype_name(dtype: Any) -> str:
    import tensorflow as tf

    if isinstance(dtype, str):
        return dtype
    if isinstance(dtype, tf.DType):
        return dtype.name
    if isinstance(dtype, np.dtype) and dtype.kind in "SUO":
        return "string"
    return np.dtype(dtype).name


def _shape(shape: Any) -> tuple[int | None, ...] | None:
    if shape is None:
        return None
    try:
        return tuple(None if d is None else int(d) for d in shape)
    except TypeError:
        return None


def _records(tensors: Any, names: list[str] | None = None) -> tuple[TensorRecord, ...]:
    import tensorflow as tf

    flat = tf.nest.flatten(tensors)
    out = []
    for i, t in enumerate(flat):
        # A Keras input tensor is best named by the InputLayer that made it.
        history = getattr(t, "_keras_history", None)
        layer_name = getattr(getattr(history, "operation", None), "name", None)
        name = names[i] if names and i < len(names) else layer_name or getattr(t, "name", None) or f"input_{i}"
        out.append(TensorRecord(str(name), _shape(getattr(t, "shape", None)), _dtype_name(t.dtype)))
    return tuple(out)


def _free_batch(records: tuple[TensorRecord, ...]) -> tuple[TensorRecord, ...]:
    """The batch dimension of concrete tensors is not part of the signature."""
    return tuple(
        TensorRecord(r.name, None if r.shape is None else (None, *r.shape[1:]) if r.shape else r.shape, r.dtype)
        for r in records
    )


def of_model(model: Any, sample_inputs: Any = None, sample_outputs: Any = None) -> Signature:
    """The signature of a built model.

    Functional and Sequential models declare their inputs and outputs; a subclassed model's
    signature comes from ``sample_inputs`` and the outputs they produced, else from its build
    config (outputs then unknown).
    """
    inputs: tuple[TensorRecord, ...] = ()
    outputs: tuple[TensorRecord, ...] = ()
    try:
        declared_in = model.inputs
        declared_out = model.outputs
    except (AttributeError, ValueError):
        declared_in = declared_out = None
    if declared_in:
        names = getattr(model, "input_names", None) or None
        inputs = _records(declared_in, names if isinstance(names, list) else None)
    elif sample_inputs is not None:
        inputs = _free_batch(_records(sample_inputs))
    else:
        build = model.get_build_config() if hasattr(model, "get_build_config") else None
        shape = (build or {}).get("input_shape")
        if shape is not None:
            dtype = getattr(model, "input_dtype", None) or "float32"
            if isinstance(shape, (list, tuple)) and shape and isinstance(shape[0], (list, tuple)):
                inputs = tuple(TensorRecord(f"input_{i}", _shape(s), _dtype_name(dtype)) for i, s in enumerate(shape))
            else:
                inputs = (TensorRecord("input_0", _shape(shape), _dtype_name(dtype)),)
    if declared_out:
        outputs = _records(declared_out, [f"output_{i}" for i in range(len(declared_out))])
        if isinstance(getattr(model, "output_names", None), list) and len(model.output_names) == len(outputs):
            outputs = tuple(TensorRecord(n, o.shape, o.dtype) for n, o in zip(model.output_names, outputs))
    elif sample_outputs is not None:
        import tensorflow as tf

        flat = tf.nest.flatten(sample_outputs)
        outputs = _free_batch(_records(flat, [f"output_{i}" for i in range(len(flat))]))
    return Signature(inputs, outputs)
