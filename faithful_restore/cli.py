"""The ``faithful-restore`` command line (also ``python -m faithful_restore``).

Exit codes: 0 ok, 1 findings of severity error, 2 unreadable input or usage error.
Errors are one line; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Sequence
from typing import Any

from faithful_restore.errors import FaithfulRestoreError

EXIT_OK, EXIT_FINDINGS, EXIT_UNREADABLE = 0, 1, 2


def _quiet_tensorflow() -> None:
    # TensorFlow's C++ start-up chatter is noise on a terminal; keep a user's explicit setting.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def _shape(shape: Any) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")" if shape is not None else "(?)"


def _compact(value: Any) -> str:
    """Keras' serialized objects as Class(arg=value), other values as JSON."""
    if isinstance(value, dict) and "class_name" in value and isinstance(value.get("config"), dict):
        args = ", ".join(f"{k}={_compact(v)}" for k, v in value["config"].items())
        return f"{value['class_name']}({args})"
    return json.dumps(value)


def inspect_text(path: str, manifest: Any) -> str:
    """A readable summary of a bundle's manifest."""
    env = manifest.environment
    model = manifest.model
    lines = [
        f"Bundle {path}",
        f"  format {manifest.format_version}, written {manifest.created} "
        f"by faithful_restore {manifest.library_version}",
        f"  content digest: {manifest.content_digest} (equal for two saves of the same state)",
        f"  environment: TensorFlow {env.tensorflow}, Keras {env.keras}, Python {env.python}, NumPy {env.numpy}; "
        f"{env.system} {env.machine} ({', '.join(env.device_kinds)}); policy {env.mixed_precision_policy}",
        f"  model: {model['class'].rsplit('.', 1)[-1]} {model['name']!r}, {len(model['layers'])} layers, "
        f"{model['params']['trainable']:,} trainable + {model['params']['non_trainable']:,} non-trainable parameters",
    ]
    for kind in ("inputs", "outputs"):
        records = getattr(manifest.signature, kind)
        text = ", ".join(f"{t.name} {_shape(t.shape)} {t.dtype}" for t in records) or "unknown"
        lines.append(f"  {kind}: {text}")
    opt = manifest.optimizer
    if opt is None:
        lines.append("  optimizer: none")
    else:
        source = "model.optimizer" if opt["source"] == "model" else "separate"
        built = "" if opt["built"] else " (never built)"
        lines.append(
            f"  optimizer: {opt['class'].rsplit('.', 1)[-1]} ({source}), iterations {opt['iterations']}, "
            f"{len(opt['variables'])} variables{built}"
        )
    if manifest.compile:
        lines.append(f"  compile: loss {json.dumps(manifest.compile.get('loss'))}")
    pre = manifest.preprocessing
    if pre["layers"] or pre["user"]:
        layers = ", ".join(f"{p['path']} ({p['state']['kind']})" for p in pre["layers"])
        lines.append(f"  preprocessing: {layers or 'no layers'}; recorded values: {', '.join(pre['user']) or 'none'}")
    for entry in manifest.regularization:
        settings = ", ".join(f"{k}={_compact(v)}" for k, v in entry["settings"].items())
        lines.append(f"  regularization: {entry['path']}: {settings}")
    if manifest.distribution:
        d = manifest.distribution
        diverged = len(d["replica_divergence"])
        lines.append(
            f"  distribution: {d['strategy']}, {d['num_replicas_in_sync']} replicas, {d['num_workers']} worker(s)"
            + (f"; {diverged} variable(s) differed between replicas (replica 0's kept)" if diverged else "")
        )
    if manifest.random_state:
        lines.append(f"  random state: {len(manifest.random_state)} seed generator(s)")
    if manifest.state:
        lines.append(f"  training state: {', '.join(manifest.state)}")
    if manifest.probe is not None:
        tol = manifest.probe["tolerance"]["same_environment"]
        lines.append(
            f"  probe: {len(manifest.probe['inputs'])} input(s), {len(manifest.probe['outputs'])} output(s); "
            f"same-environment tolerance atol={tol['atol']:.3g}"
        )
    total = sum(f.size for f in manifest.files)
    lines.append(f"  files: {len(manifest.files)} listed, {_size(total)}")
    if manifest.metadata:
        lines.append(f"  metadata: {json.dumps(manifest.metadata, sort_keys=True)}")
    return "\n".join(lines)


def _cmd_inspect(args: argparse.Namespace) -> int:
    import faithful_restore as fr

    manifest = fr.read_manifest(args.path)
    if args.json:
        print(json.dumps(manifest.to_dict(), indent=1, sort_keys=True))
    else:
        print(inspect_text(args.path, manifest))
    return EXIT_OK


def _print_report(report: Any, as_json: bool) -> int:
    print(report.to_json() if as_json else report.to_text())
    return EXIT_OK if report.ok else EXIT_FINDINGS


def _cmd_verify(args: argparse.Namespace) -> int:
    import faithful_restore as fr

    return _print_report(fr.verify_bundle(args.path, safe_mode=not args.unsafe), args.json)


def _cmd_diff(args: argparse.Namespace) -> int:
    import faithful_restore as fr

    report = fr.compare(args.path_a, args.path_b, check_training_step=not args.no_training_step)
    return _print_report(report, args.json)


def _read_data(path: str) -> Any:
    """A batch from .npy, .npz (one array, or a dict of named arrays) or .csv (numbers)."""
    import numpy as np

    from faithful_restore.errors import BundleError

    lower = path.lower()
    try:
        if lower.endswith(".npy"):
            return np.load(path, allow_pickle=False)
        if lower.endswith(".npz"):
            with np.load(path, allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files}
            return next(iter(arrays.values())) if len(arrays) == 1 else arrays
        if lower.endswith(".csv"):
            try:
                return np.loadtxt(path, delimiter=",", ndmin=2, dtype="float32")
            except ValueError:  # a header row
                return np.loadtxt(path, delimiter=",", ndmin=2, dtype="float32", skiprows=1)
    except (OSError, ValueError) as e:
        raise BundleError(f"cannot read {path!r}: {e}") from e
    raise BundleError(f"{path!r}: expected a .npy, .npz or .csv file.")


def _cmd_check_inputs(args: argparse.Namespace) -> int:
    import faithful_restore as fr

    manifest = fr.read_manifest(args.path)
    # Without saved statistics the manifest's signature is all there is to check against.
    return _print_report(fr.check_inputs(manifest, _read_data(args.data)), args.json)


def _cmd_demo(args: argparse.Namespace) -> int:
    from faithful_restore import _demo

    progress = None if args.json else (lambda line: print(f"... {line}", file=sys.stderr, flush=True))
    result = _demo.run(quick=args.quick, progress=progress)
    if args.plot:
        _demo.plot(result, args.plot)
        print(f"... loss curves written to {args.plot}", file=sys.stderr)
    if args.json:
        print(_demo.to_json(result))
    else:
        print(_demo.render(result))
    # The demo succeeds when the bundle restore is exact; the other rows are meant to fail.
    bundle = next(r for r in result.rows if r.scenario == "bundle")
    return EXIT_OK if bundle.ok and bundle.max_weight_diff_after_training == 0.0 else EXIT_FINDINGS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="faithful-restore",
        description="Save and restore Keras models faithfully, and prove it.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="reproduce silent restore failures and show the fix, measured")
    p.add_argument("--quick", action="store_true", help="a smaller, faster run")
    p.add_argument("--plot", metavar="FILE.png", help="draw the continued-training loss curves (needs matplotlib)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("inspect", help="summarize a bundle (reads only its manifest)")
    p.add_argument("path")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")
    p.set_defaults(func=_cmd_inspect)

    p = sub.add_parser("verify", help="check a bundle's integrity, environment, restore and probe")
    p.add_argument("path")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--unsafe", action="store_true", help="allow Lambda layers (only for bundles you trust)")
    p.set_defaults(func=_cmd_verify)

    p = sub.add_parser("check-inputs", help="check a batch of inputs against a bundle's training statistics")
    p.add_argument("path")
    p.add_argument("data", help="a .npy, .npz or .csv file")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_cmd_check_inputs)

    p = sub.add_parser("diff", help="compare two bundles: architecture, weights, optimizer, environment")
    p.add_argument("path_a")
    p.add_argument("path_b")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--no-training-step", action="store_true", help="skip the next-training-step comparison")
    p.set_defaults(func=_cmd_diff)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``faithful-restore`` command; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _quiet_tensorflow()
    try:
        return int(args.func(args))
    except FaithfulRestoreError as e:
        if args.debug:
            traceback.print_exc()
        print(f"faithful-restore: error: {e}", file=sys.stderr)
        return EXIT_UNREADABLE
    except KeyboardInterrupt:
        print("faithful-restore: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
