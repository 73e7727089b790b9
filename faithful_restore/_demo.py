"""The demo: reproduce silent restore failures on today's TensorFlow and show the fix, measured.

A small classifier is trained on a learnable synthetic data set (seeded NumPy, no download).
Each scenario restores it one way, measures held-out accuracy and loss right after the restore
and the training loss after N more steps on the same batches, and asks faithful_restore for a
diagnosis. Everything printed is measured in this run.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

FEATURES = 8
CLASSES = 3


@dataclass(frozen=True)
class Row:
    """One restore scenario and what was measured for it."""

    scenario: str
    how: str
    accuracy: float
    loss: float
    continued_loss: float
    max_weight_diff_after_training: float
    diagnosis: str
    ok: bool


@dataclass(frozen=True)
class DemoResult:
    rows: tuple[Row, ...]
    train_accuracy: float
    test_accuracy: float
    steps: int
    bundle_files: int
    bundle_bytes: int
    checks: tuple[str, ...] = field(default=())
    curves: dict[str, tuple[float, ...]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "rows": [{k: _json_number(v) for k, v in asdict(r).items()} for r in self.rows],
            "checks": list(self.checks),
            "curves": {k: list(v) for k, v in self.curves.items()},
        }


def _json_number(value: Any) -> Any:
    return None if isinstance(value, float) and value != value else value


def make_data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Features on very different scales (so normalization matters) and a learnable label."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, FEATURES))
    w = np.random.default_rng(1234).normal(size=(FEATURES, CLASSES))
    y = np.argmax(z @ w + 0.3 * rng.normal(size=(n, CLASSES)), axis=1)
    scale = np.geomspace(1.0, 1000.0, FEATURES)
    offset = np.linspace(-50.0, 500.0, FEATURES)
    return (z * scale + offset).astype("float32"), y.astype("int32")


def build_model(x_train: np.ndarray, rate: float = 0.2, l2: float = 1e-4, units: int = 32) -> Any:
    import keras

    keras.utils.set_random_seed(7)
    norm = keras.layers.Normalization(name="normalize")
    norm.adapt(x_train)
    model = keras.Sequential(
        [
            keras.Input((FEATURES,), name="features"),
            norm,
            keras.layers.Dense(units, activation="relu", kernel_regularizer=keras.regularizers.L2(l2), name="hidden"),
            keras.layers.Dropout(rate, name="dropout"),
            keras.layers.Dense(CLASSES, activation="softmax", name="classes"),
        ],
        name="demo_classifier",
    )
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def _evaluate(model: Any, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    loss, acc = model.evaluate(x, y, verbose=0, batch_size=256)
    return float(acc), float(loss)


def _continue(model: Any, batches: list[tuple[np.ndarray, np.ndarray]]) -> tuple[float, list[float]]:
    """Trains on the same fixed batches; returns the final loss and the loss curve."""
    curve = []
    for xb, yb in batches:
        out = model.train_on_batch(xb, yb, return_dict=True)
        curve.append(float(out["loss"]))
    return curve[-1], curve


def _max_diff(a: Any, b: Any) -> float:
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)), initial=0.0)) for x, y in zip(a, b))


def _forge_environment(bundle_path: str, skewed_path: str) -> None:
    """Copies a bundle and rewrites its recorded TensorFlow version (a simulated version skew)."""
    import shutil

    from faithful_restore.format.manifest import DIGEST, MANIFEST, digest

    shutil.copytree(bundle_path, skewed_path)
    with open(os.path.join(skewed_path, MANIFEST)) as f:
        data = json.load(f)
    data["environment"]["tensorflow"] = "2.15.0"
    raw = (json.dumps(data, sort_keys=True, indent=1) + "\n").encode()
    with open(os.path.join(skewed_path, MANIFEST), "wb") as f:
        f.write(raw)
    with open(os.path.join(skewed_path, DIGEST), "w") as f:
        f.write(digest(raw) + "\n")


def _external_preprocessing_model(x_train: np.ndarray, y_train: np.ndarray, epochs: int) -> tuple[Any, Any, Any]:
    """A model trained on inputs standardized *outside* the model, as many pipelines do."""
    import keras

    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    keras.utils.set_random_seed(11)
    model = keras.Sequential(
        [
            keras.Input((FEATURES,)),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(CLASSES, activation="softmax"),
        ],
        name="external_preprocessing",
    )
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit((x_train - mean) / std, y_train, epochs=epochs, batch_size=64, verbose=0)
    return model, mean.astype("float32"), std.astype("float32")


def run(quick: bool = False, workdir: str | None = None, progress: Callable[[str], None] | None = None) -> DemoResult:
    """Runs every scenario and returns what was measured.

    Args:
        quick: a smaller data set and fewer steps.
        workdir: where bundles are written (a temporary directory by default).
        progress: called with a short line before each stage.
    """
    import faithful_restore as fr

    say = progress or (lambda _line: None)
    n_train, epochs, steps = (1500, 4, 15) if quick else (4000, 8, 40)
    x_train, y_train = make_data(n_train, seed=0)
    x_test, y_test = make_data(1000, seed=1)
    rng = np.random.default_rng(5)
    batches = []
    for _ in range(steps):
        idx = rng.integers(0, n_train, size=64)
        batches.append((x_train[idx], y_train[idx]))

    say(f"training a {FEATURES}-feature, {CLASSES}-class classifier on {n_train} synthetic samples")
    model = build_model(x_train)
    model.fit(x_train, y_train, epochs=epochs, batch_size=64, verbose=0, shuffle=True)
    train_acc, _ = _evaluate(model, x_train, y_train)
    test_acc, test_loss = _evaluate(model, x_test, y_test)

    own_tmp = None
    if workdir is None:
        own_tmp = tempfile.TemporaryDirectory(prefix="faithful-restore-demo-")
        workdir = own_tmp.name
    try:
        bundle_path = os.path.join(workdir, "bundle")
        say("saving a bundle and restoring it")
        manifest = fr.save_bundle(model, bundle_path, sample_inputs=x_test[:32], metadata={"demo": True})
        restored = fr.load_bundle(bundle_path)
        verify = fr.verify_bundle(bundle_path)
        weights_path = os.path.join(workdir, "weights.weights.h5")
        model.save_weights(weights_path)

        # (scenario, how, restored model, diagnosis)
        scenarios: list[tuple[str, str, Any, str, bool]] = []
        report = fr.compare(model, restored)
        scenarios.append(("bundle", "save_bundle / load_bundle", restored.model, *_diagnosis(report)))

        say("weights-only restore (save_weights / load_weights into a fresh model)")
        naive = build_model(x_train)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Keras' "Skipping variable loading for optimizer"
            naive.load_weights(weights_path)
        scenarios.append(("weights only", "save_weights / load_weights", naive, *_diagnosis(fr.compare(model, naive))))

        say("a rebuilt model whose dropout and L2 differ from the trained one")
        rebuilt = build_model(x_train, rate=0.5, l2=1e-2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rebuilt.load_weights(weights_path)
        scenarios.append(
            (
                "rebuilt, other regularization",
                "code rebuilt: Dropout 0.5, L2 1e-2",
                rebuilt,
                *_diagnosis(fr.compare(model, rebuilt)),
            )
        )

        say("a rebuilt model with other hidden units (the weights cannot fit)")
        wider = build_model(x_train, units=48)
        scenarios.append(
            ("rebuilt, other architecture", "code rebuilt: 48 units", wider, *_diagnosis(fr.compare(model, wider)))
        )

        say("a bundle whose recorded TensorFlow version differs (simulated version skew)")
        skewed_path = os.path.join(workdir, "skewed")
        _forge_environment(bundle_path, skewed_path)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            skewed = fr.load_bundle(skewed_path)
        skew_warned = any(issubclass(w.category, fr.VersionSkewWarning) for w in caught)
        skew_report = fr.verify_bundle(skewed_path)
        skew_diag = ", ".join(f"{f.cause.value} ({f.severity}: {f.path})" for f in skew_report.findings[:1])
        scenarios.append(("version skew (simulated)", "manifest says TF 2.15.0", skewed.model, skew_diag, skew_warned))

        say("continuing training from each restore, then the original itself")
        measured = []
        curves: dict[str, list[float]] = {}
        for name, how, candidate, diagnosis, ok in scenarios:
            acc, loss = _evaluate(candidate, x_test, y_test)
            cont_loss, curve = _continue(candidate, batches)
            curves[name] = curve
            weights = [np.array(v) for v in candidate.trainable_variables]
            measured.append((name, how, acc, loss, cont_loss, weights, diagnosis, ok))
        original_loss, curves["original"] = _continue(model, batches)
        original_weights = [np.array(v) for v in model.trainable_variables]
        rows = [Row("original", "the model as trained", test_acc, test_loss, original_loss, 0.0, "-", True)]
        for name, how, acc, loss, cont_loss, weights, diagnosis, ok in measured:
            shapes_match = [w.shape for w in weights] == [w.shape for w in original_weights]
            diff = _max_diff(original_weights, weights) if shapes_match else float("nan")
            rows.append(Row(name, how, acc, loss, cont_loss, diff, diagnosis, ok))

        say("a model trained on inputs standardized outside it, served without the standardization")
        rows.append(_preprocessing_row(fr, x_train, y_train, x_test, y_test, epochs, workdir))
        return DemoResult(
            rows=tuple(rows),
            train_accuracy=train_acc,
            test_accuracy=test_acc,
            steps=steps,
            bundle_files=len(manifest.files) + 2,
            bundle_bytes=sum(f.size for f in manifest.files),
            checks=tuple(report.checks) + tuple(f"verify_bundle: {c}" for c in verify.checks),
            curves={k: tuple(v) for k, v in curves.items()},
        )
    finally:
        if own_tmp is not None:
            own_tmp.cleanup()


def _diagnosis(report: Any) -> tuple[str, bool]:
    if report.ok:
        return "identical", True
    return ", ".join(c.value for c in report.causes()[:3]), False


def _preprocessing_row(fr: Any, x_train: Any, y_train: Any, x_test: Any, y_test: Any, epochs: int, workdir: str) -> Row:
    model, mean, std = _external_preprocessing_model(x_train, y_train, epochs)
    stats = fr.PreprocessingStats.from_data((x_train - mean) / std)  # what the model saw in training
    path = os.path.join(workdir, "external")
    fr.save_bundle(model, path, preprocessing={"mean": mean, "std": std, "stats": stats})
    bundle = fr.load_bundle(path)
    faithful_acc, _ = _evaluate(
        bundle.model, (x_test - bundle.preprocessing["mean"]) / bundle.preprocessing["std"], y_test
    )
    forgot_acc, forgot_loss = _evaluate(bundle.model, x_test, y_test)  # the serving code forgot to standardize
    report = fr.check_inputs(bundle, x_test[:256])
    first = report.findings[0] if report.findings else None
    diagnosis = f"{first.cause.value}: {first.message.split(';')[0]}" if first else "not detected"
    return Row(
        "preprocessing forgotten",
        f"raw inputs to a model trained on standardized ones (with the bundle's stats: {faithful_acc:.4f})",
        forgot_acc,
        forgot_loss,
        float("nan"),
        float("nan"),
        diagnosis,
        report.ok,
    )


def render(result: DemoResult) -> str:
    """The demo's table and an honest reading of it."""
    lines = [
        f"Trained: train accuracy {result.train_accuracy:.3f}, held-out accuracy {result.test_accuracy:.3f}.",
        f"Bundle: {result.bundle_files} files, {result.bundle_bytes / 1024:.1f} KiB.",
        "",
        f"{'scenario':<30} {'held-out acc':>12} {'held-out loss':>13} "
        f"{f'loss after {result.steps} steps':>20} {'max |w - w_orig|':>17}  diagnosis",
    ]
    for r in result.rows:
        diff = _cell(r.max_weight_diff_after_training, "{:.2e}")
        cont = _cell(r.continued_loss, "{:.4f}")
        lines.append(f"{r.scenario:<30} {r.accuracy:>12.4f} {r.loss:>13.4f} {cont:>20} {diff:>17}  {r.diagnosis}")
    lines += ["", "What this run measured:"] + [f"- {line}" for line in reading(result)]
    lines.append("Checked for the bundle: " + ", ".join(result.checks) + ".")
    return "\n".join(lines)


def _cell(value: float, fmt: str) -> str:
    return "n/a" if value != value else fmt.format(value)


def reading(result: DemoResult) -> list[str]:
    """Plain sentences derived from the measured rows (nothing here is asserted in advance)."""
    original = result.rows[0]
    out = []
    for r in result.rows[1:]:
        same_acc = r.accuracy == original.accuracy
        exact = r.max_weight_diff_after_training == 0.0
        if r.continued_loss != r.continued_loss:  # a scenario of its own model (no continued training)
            out.append(f"{r.scenario}: {r.how}; held-out accuracy {r.accuracy:.4f}. Diagnosis: {r.diagnosis}.")
        elif exact and same_acc:
            flagged = "" if r.diagnosis == "identical" else f" The library still flags it: {r.diagnosis}."
            out.append(
                f"{r.scenario}: held-out accuracy identical ({r.accuracy:.4f}) and, after {result.steps} more "
                f"steps, bitwise the same weights as the original.{flagged}"
            )
        elif same_acc:
            out.append(
                f"{r.scenario}: predicts exactly like the original right after the restore (accuracy "
                f"{r.accuracy:.4f}), so an evaluation would not notice; yet after {result.steps} more steps its "
                f"weights differ by up to {r.max_weight_diff_after_training:.2e} (loss {r.continued_loss:.4f} vs "
                f"{original.continued_loss:.4f}). Diagnosis: {r.diagnosis}."
            )
        else:
            out.append(
                f"{r.scenario}: held-out accuracy {r.accuracy:.4f} vs {original.accuracy:.4f} for the original "
                f"right after the restore. Diagnosis: {r.diagnosis}."
            )
    return out


def plot(result: DemoResult, path: str) -> None:
    """Draws the continued-training loss curves to a PNG (needs matplotlib: pip install '.[plot]').

    Raises:
        BundleError: matplotlib is not installed.
    """
    from faithful_restore.errors import BundleError

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise BundleError(
            "--plot needs matplotlib, which is not installed; pip install 'faithful-restore[plot]' or "
            "run the demo without --plot."
        ) from e
    fig, ax = plt.subplots(figsize=(7, 4))
    styles = {
        "original": ("black", "-", 2.5),
        "bundle": ("tab:green", "--", 1.8),
        "weights only": ("tab:red", "-", 1.5),
    }
    for name, (color, dash, width) in styles.items():
        curve = result.curves.get(name)
        if curve:
            ax.plot(range(1, len(curve) + 1), curve, dash, color=color, linewidth=width, label=name)
    ax.set_xlabel("training step after the restore")
    ax.set_ylabel("training loss (same batches)")
    ax.set_title("Continued training: original vs restores")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def to_json(result: DemoResult) -> str:
    return json.dumps(result.to_dict(), indent=1, default=float)
