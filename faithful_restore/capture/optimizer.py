"""Optimizer state: describe it, write it, and restore every variable of it.

Keras restores optimizer variables only when the saved and the new optimizer have the same
number of them and otherwise warns "Skipping variable loading for optimizer" and carries on with
a fresh optimizer. faithful_restore never lets Keras load the optimizer: it builds the optimizer
on the restored model's variables and assigns every saved variable itself, checking count, shape
and dtype against the manifest, so a restore is either complete or a clear error.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from faithful_restore.capture.architecture import class_name, jsonable
from faithful_restore.errors import BundleError
from faithful_restore.fast import prefetch as _prefetch
from faithful_restore.fast import save_views as _save_views
from faithful_restore.runtime import keras_internals as _keras_internals

H5_GROUP = "optimizer"


def _variables(optimizer: Any) -> list[Any]:
    return list(optimizer.variables)


def variable_indices(optimizer: Any, model: Any) -> list[int] | None:
    """Positions in ``model.variables`` of the variables the optimizer was built on.

    ``model.variables`` rather than the trainable ones: a layer frozen after training (fine-tuning)
    keeps its optimizer slots.
    """
    built_on = _keras_internals.optimizer_built_on(optimizer)
    if built_on is None:
        return None
    index = {id(v): i for i, v in enumerate(model.variables)}
    out = []
    for v in built_on:
        if id(v) not in index:
            raise BundleError(
                f"the optimizer was built on variable {v.path!r}, which is not a variable of the model "
                "being saved; pass the optimizer that trains this model."
            )
        out.append(index[id(v)])
    return out


def built_on(record: dict[str, Any], model: Any) -> list[Any]:
    """The variables of ``model`` a recorded optimizer was built on (all trainable ones if unrecorded)."""
    indices = record.get("variable_indices")
    if indices is None:
        return list(model.trainable_variables)
    variables = model.variables
    if any(i >= len(variables) for i in indices):
        raise BundleError(
            f"the optimizer was built on model variables {indices} but the restored model has "
            f"{len(variables)}; the model's architecture changed."
        )
    return [variables[i] for i in indices]


def describe(optimizer: Any, model: Any, source: str) -> dict[str, Any]:
    """The manifest's ``optimizer`` section."""
    import keras

    return {
        "class": class_name(optimizer),
        "source": source,
        "config": jsonable(keras.optimizers.serialize(optimizer)),
        "built": bool(getattr(optimizer, "built", False)),
        "iterations": int(np.asarray(optimizer.iterations)),
        "variable_indices": variable_indices(optimizer, model),
        "variables": [
            {"name": v.path, "shape": [int(d) for d in v.shape], "dtype": str(v.dtype)} for v in _variables(optimizer)
        ],
    }


def write_h5(optimizer: Any, path: str) -> None:
    """Writes an optimizer's variables in the layout Keras uses (``optimizer/vars/<i>``)."""
    import h5py

    with h5py.File(path, "w") as f:
        group = f.create_group(H5_GROUP).create_group("vars")
        for i, v in enumerate(_variables(optimizer)):
            data = _save_views.view(v)  # h5py only reads it: no copy
            data = np.asarray(v) if data is None else data
            dataset = group.create_dataset(str(i), data=data)
            if data.dtype.name == "bfloat16":  # as Keras marks it: HDF5 has no bfloat16 type
                dataset.attrs["dtype"] = "bfloat16"


def _saved_datasets(f: Any, path: str, expected: int) -> list[Any]:
    """The optimizer's datasets in order, checked for count and plain storage (nothing read yet)."""
    import h5py

    group = f.get(f"{H5_GROUP}/vars")
    if group is None:
        raise BundleError(
            f"{path} holds no optimizer variables although the manifest records {expected}; "
            "the bundle is damaged. Re-create it with save_bundle."
        )
    keys = sorted(group.keys(), key=lambda k: int(k) if k.isdigit() else -1)
    if len(keys) != expected or keys != [str(i) for i in range(expected)]:
        raise BundleError(
            f"{path} holds {len(keys)} optimizer variables, the manifest records {expected}; "
            "the bundle is damaged. Re-create it with save_bundle."
        )
    out = []
    for k in keys:
        item = group[k]
        if not isinstance(item, h5py.Dataset) or item.external or item.is_virtual:
            raise BundleError(f"{path}: optimizer/vars/{k} is not a plain dataset; refusing it.")
        out.append(item)
    return out


def deserialize(record: dict[str, Any], custom_objects: Any = None) -> Any:
    import keras

    try:
        return keras.optimizers.deserialize(record["config"], custom_objects=custom_objects)
    except Exception as e:  # noqa: BLE001 - Keras raises many types; surface one of ours
        raise BundleError(
            f"cannot rebuild optimizer {record.get('class')!r} from the bundle: {e}. If it is a "
            "custom optimizer, register it with @keras.saving.register_keras_serializable or pass "
            "custom_objects."
        ) from e


def restore(optimizer: Any, record: dict[str, Any], h5_path: str, model: Any, custom_objects: Any = None) -> Any:
    """Builds an optimizer on ``model`` as recorded and assigns every saved variable.

    Returns ``optimizer``, or a fresh one of the recorded config when ``optimizer`` was already
    built on other variables (compile() builds on every trainable variable; the saved one may
    have been built on a subset, or on layers frozen since).
    """
    saved = record["variables"]
    if record["built"]:
        wanted = built_on(record, model)
        current = _keras_internals.optimizer_built_on(optimizer)
        if current is not None and [id(v) for v in current] != [id(v) for v in wanted]:
            optimizer = deserialize(record, custom_objects)
        if not optimizer.built:
            optimizer.build(wanted)
    targets = _variables(optimizer)
    # An optimizer that was never built holds only its step counter and learning rate; the new
    # one may already have (zero) slots after compile(), which is the same state.
    if (record["built"] and len(targets) != len(saved)) or len(targets) < len(saved):
        raise BundleError(
            f"optimizer {record['class']} has {len(targets)} variables after rebuilding, the bundle "
            f"saved {len(saved)}; the model or optimizer configuration differs from the saved one."
        )
    import h5py

    with h5py.File(h5_path, "r") as f:
        datasets = _saved_datasets(f, h5_path, len(saved))
        # Every shape and dtype is checked before any value is assigned, so a mismatch leaves
        # the optimizer untouched.
        for i, (meta, dataset, target) in enumerate(zip(saved, datasets, targets)):
            if list(dataset.shape) != meta["shape"] or list(target.shape) != meta["shape"]:
                raise BundleError(
                    f"optimizer variable {i} ({meta['name']}): saved shape {meta['shape']}, file holds "
                    f"{list(dataset.shape)}, rebuilt optimizer has {list(target.shape)}; the model "
                    "changed since it was saved."
                )
            if str(target.dtype) != meta["dtype"]:
                raise BundleError(
                    f"optimizer variable {i} ({meta['name']}): saved dtype {meta['dtype']}, rebuilt "
                    f"optimizer has {target.dtype}; check the mixed-precision policy."
                )
        # One variable at a time: peak memory stays at the largest slot, not all of them.
        for dataset, target in zip(datasets, targets):
            target.assign(_value(dataset))
    return optimizer


def _value(dataset: Any) -> Any:
    """A saved optimizer variable's value: the buffer already read and hashed when kept, else the file's."""
    verified = _prefetch.take(dataset)
    if verified is not None:
        return verified
    value = np.asarray(dataset[()])
    if dataset.attrs.get("dtype") == "bfloat16":  # Keras' marker: HDF5 has no bfloat16 type
        import tensorflow as tf

        if value.dtype.itemsize != 2:
            raise BundleError(
                f"{dataset.file.filename}: {dataset.name.lstrip('/')} is marked bfloat16 but holds "
                f"{value.dtype.itemsize}-byte values; the bundle is damaged. Re-create it with save_bundle."
            )
        value = value.view(tf.bfloat16.as_numpy_dtype)
    return value
