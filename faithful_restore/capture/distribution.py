"""tf.distribute: which strategy a model trains under, who writes, and replicas that disagree.

Under MultiWorkerMirroredStrategy every worker must run the same save (reading some variables
runs collective ops that need all of them), but only the chief may write the bundle: the other
workers write to a private temporary directory that is removed afterwards, TensorFlow's own
pattern for checkpoints.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from faithful_restore.errors import BundleError
from faithful_restore.findings import Cause, Finding
from faithful_restore.runtime.variables import components

# tf.distribute's implementation class names, as users know them.
_PUBLIC_NAMES = {
    "CollectiveAllReduceStrategy": "MultiWorkerMirroredStrategy",
    "_CollectiveAllReduceStrategyExperimental": "MultiWorkerMirroredStrategy",
    "ParameterServerStrategyV2": "ParameterServerStrategy",
}


def strategy_of(model: Any) -> Any:
    import tensorflow as tf

    strategy = getattr(model, "distribute_strategy", None)
    return strategy if strategy is not None else tf.distribute.get_strategy()


def _is_default(strategy: Any) -> bool:
    import tensorflow as tf

    return not tf.distribute.has_strategy() and type(strategy).__name__ == "_DefaultDistributionStrategy"


def is_chief(strategy: Any) -> bool:
    """True where this process should write the bundle (every process, without multi-worker)."""
    return bool(getattr(getattr(strategy, "extended", None), "should_checkpoint", True))


def _workers(strategy: Any) -> int:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return 1
    try:
        spec = resolver.cluster_spec().as_dict()
    except Exception:  # noqa: BLE001 - a resolver without a cluster means one worker
        return 1
    return max(1, sum(len(spec.get(job, [])) for job in ("chief", "worker")))


def replica_divergence(model: Any) -> list[dict[str, Any]]:
    """Variables whose per-replica values differ on this worker (replica 0's are what is saved)."""
    out = []
    for v in model.variables:
        parts = components(v)
        if len(parts) < 2:
            continue
        first = np.asarray(parts[0])
        worst = 0.0
        for other in parts[1:]:
            other_value = np.asarray(other)
            if first.tobytes() != other_value.tobytes():
                if first.dtype.kind in "fc":
                    diff = float(np.max(np.abs(first.astype(np.float64) - other_value.astype(np.float64)), initial=0.0))
                else:
                    diff = float("inf")
                worst = max(worst, diff)
        if worst > 0:
            out.append({"path": v.path, "replicas": len(parts), "max_abs_diff": worst if np.isfinite(worst) else None})
    return out


def divergence_finding(entry: dict[str, Any], severity: str, subject: str) -> Finding:
    """The one REPLICA_DIVERGENCE finding, for an entry of :func:`replica_divergence`.

    ``subject`` says whose variable it is ("original variable", "when saved, variable").
    """
    n, worst = entry["replicas"], entry.get("max_abs_diff")
    return Finding(
        Cause.REPLICA_DIVERGENCE,
        severity,
        entry["path"],
        "identical values on every replica",
        f"{n} replicas differ by up to {worst:.3g}" if worst is not None else f"{n} replicas differ",
        f"{subject} {entry['path']!r} held different values on its {n} replicas (BatchNormalization keeps "
        "per-replica moving statistics unless synchronized=True); a save keeps replica 0's values, so the "
        "restored model predicts like replica 0, not like the distributed original. Use "
        "BatchNormalization(synchronized=True).",
    )


def describe(model: Any) -> dict[str, Any] | None:
    """The manifest's ``distribution`` section, or None for a model outside any strategy.

    Raises:
        BundleError: for ParameterServerStrategy, which is not supported.
    """
    strategy = strategy_of(model)
    name = _PUBLIC_NAMES.get(type(strategy).__name__, type(strategy).__name__)
    if "ParameterServer" in name:
        raise BundleError(
            f"model {model.name!r} trains under {name}, which faithful_restore does not support (its "
            "variables live on parameter-server tasks and Keras 3 does not save them consistently); "
            "save from a model built outside the strategy, or use MirroredStrategy / "
            "MultiWorkerMirroredStrategy."
        )
    if _is_default(strategy) and strategy.num_replicas_in_sync == 1 and not replica_divergence(model):
        return None
    return {
        "strategy": name,
        "num_replicas_in_sync": int(strategy.num_replicas_in_sync),
        "num_workers": _workers(strategy),
        "replica_divergence": replica_divergence(model),
    }
