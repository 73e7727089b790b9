"""The layers' random state (Keras ``SeedGenerator`` states, e.g. Dropout's).

Neither ``.keras`` files nor ``tf.train.Checkpoint(model=...)`` keep it, so a restored model
would draw different dropout masks on its next training step. The states are a few integers, so
they live in the manifest. Their variable paths change across a load (``seed_generator`` vs
``seed_generator_1``), so they are matched by position.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from faithful_restore.errors import BundleError


def seed_variables(model: Any) -> list[Any]:
    return [v for v in model.variables if v.name == "seed_generator_state"]


def capture(model: Any) -> list[dict[str, Any]]:
    return [
        {"path": v.path, "dtype": str(v.dtype), "value": [int(x) for x in np.asarray(v).reshape(-1)]}
        for v in seed_variables(model)
    ]


def restore(model: Any, records: list[dict[str, Any]]) -> None:
    targets = seed_variables(model)
    if len(targets) != len(records):
        raise BundleError(
            f"the restored model has {len(targets)} random seed generators, the bundle saved "
            f"{len(records)}; the architecture differs from the saved one."
        )
    for target, record in zip(targets, records):
        value = np.asarray(record["value"], dtype=np.dtype(str(target.dtype)))
        if value.shape != tuple(target.shape):
            raise BundleError(
                f"seed generator {record['path']}: saved {list(value.shape)} values, the restored "
                f"model holds {list(target.shape)}; the bundle is damaged or from another Keras."
            )
        target.assign(value)
