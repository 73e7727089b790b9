"""The layers' random state (Keras ``SeedGenerator`` states, e.g. Dropout's).

Neither ``.keras`` files nor ``tf.train.Checkpoint(model=...)`` keep it, so a restored model
would draw different dropout masks on its next training step. The states are a few integers, so
they live in the manifest. Their variable paths change across a load (``seed_generator`` vs
``seed_generator_1``), so they are matched by position.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from faithful_restore.errors import BundleError
from faithful_restore.runtime.variables import of_model, restoring


def seed_variables(model: Any) -> list[Any]:
    return [v for v in model.variables if v.name == "seed_generator_state"]


@contextlib.contextmanager
def preserved(model: Any) -> Iterator[None]:
    """Puts back, on exit, every variable running the model can change, bit for bit.

    Seed generators (an LSTM with dropout draws its mask before checking ``training``), stateful
    RNN states, counters and any other state a layer updates in its call: a probe changes none.
    """
    with restoring(of_model(model)):
        yield


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
        try:
            value = np.asarray(record["value"], dtype=np.dtype(str(target.dtype)))
        except (OverflowError, ValueError, TypeError) as e:
            raise BundleError(
                f"seed generator {record.get('path')!r}: the saved value {record.get('value')!r} does not fit "
                f"{target.dtype}; the bundle is damaged."
            ) from e
        if value.shape != tuple(target.shape):
            raise BundleError(
                f"seed generator {record['path']}: saved {list(value.shape)} values, the restored "
                f"model holds {list(target.shape)}; the bundle is damaged or from another Keras."
            )
        target.assign(value)
