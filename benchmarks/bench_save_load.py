#!/usr/bin/env python
"""faithful_restore save/load benchmark: the issue 9 targets as ratios against plain Keras, in one run.

Model: an MLP of Dense layers, compiled with Adam and trained one step so the optimizer slots
exist (state = 3 x params x 4 bytes). Operations: save_bundle, load_bundle (defaults: every
SHA-256 checked, compile, verify), assert_roundtrip (check_training_step=True), and the
baselines model.save("m.keras") and keras.models.load_model("m.keras").

Each measured operation runs in a fresh child process (this file with ``--_child``) that warms
up and builds what it needs outside the timed region; repetitions are interleaved; loads read
their inputs once first (warm page cache) and every child runs ``os.sync()`` before timing.
Peak memory is ``VmHWM`` (reset through ``/proc/self/clear_refs``) minus ``VmRSS`` before the op,
or a 5 ms VmRSS sampler where clear_refs is not writable. Linearity is judged on work per GB of
bundle (user CPU seconds from getrusage, syscall bytes from /proc/self/io); wall seconds per GB
are printed as information. Only the standard library, NumPy, TensorFlow/Keras and the public
faithful_restore API are used, and TensorFlow only inside functions, so the pure functions can be
imported and tested alone. Usage and output: benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import hashlib
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

OPS = ("save_bundle", "load_bundle", "assert_roundtrip", "keras_save", "keras_load")
LINEARITY_OPS = ("save_bundle", "load_bundle", "assert_roundtrip")
WORK_JUDGED = ("cpu_user_seconds", "io_bytes")
WORK_COUNTERS = (*WORK_JUDGED, "cpu_system_seconds")  # system CPU: tabulated, not judged
WORK_GROWTH_LIMIT = 1.2
TARGETS = (  # (ratio key, what issue 9 asks, limit)
    ("load_bundle / keras_load", "load_bundle time <= 0.3x keras_load time", 0.3),
    ("load_bundle peak / bundle bytes", "load_bundle peak memory above baseline <= 1.15x bundle bytes", 1.15),
    ("save_bundle / keras_save", "save_bundle time <= 1.0x keras_save time", 1.0),
    ("bundle bytes / keras bytes", "bundle bytes <= 1.02x .keras bytes", 1.02),
    ("assert_roundtrip / (keras_save + keras_load)", "assert_roundtrip <= 1.0x (keras_save + keras_load) time", 1.0),
)
LAYER_WIDTH, BATCH, PROBE_ROWS, SEED, GB = 2048, 32, 8, 1234, 1e9
RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


# --------------------------------------------------------------------------- pure functions


def parse_params(text: str) -> int:
    """``"10M"`` -> 10_000_000; also K and B/G suffixes and plain integers."""
    t, mult = text.strip().upper().replace("_", ""), 1
    if t[-1:] in ("K", "M", "B", "G"):
        t, mult = t[:-1], {"K": 10**3, "M": 10**6, "B": 10**9, "G": 10**9}[t[-1]]
    try:
        value = int(float(t) * mult)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a parameter count: {text!r} (e.g. 10M, 300M, 5000000)") from None
    if value < 1000:
        raise argparse.ArgumentTypeError(f"parameter count too small: {text!r}")
    return value


def label(params: int) -> str:
    return f"{params // 10**6}M" if params % 10**6 == 0 else str(params)


def layout(params: int) -> tuple[int, int]:
    """(layers, width) with layers * (width**2 + width) ~= params and width <= 2048 (~16 MB arrays)."""
    n = max(1, math.ceil(params / (LAYER_WIDTH * (LAYER_WIDTH + 1))))
    return n, max(2, round((-1 + math.sqrt(1 + 4 * params / n)) / 2))


def summarize(values: list[float]) -> dict | None:
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def summarize_op(reps: list[dict]) -> dict:
    """One op's child results; a counter is summarized only if every good repetition has it."""
    ok = [r for r in reps if r.get("ok")]
    out = {"failures": len(reps) - len(ok), "reps": reps}
    for key in ("seconds", "peak_above_baseline", *WORK_COUNTERS):
        out[key] = summarize([r[key] for r in ok]) if ok and all(r.get(key) is not None for r in ok) else None
    return out


def median(size: dict, op: str, key: str = "seconds") -> float | None:
    summary = size["ops"].get(op, {}).get(key)
    return summary["median"] if summary else None


def _div(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def ratios(size: dict) -> dict[str, float | None]:
    """The target ratios of one size, from medians over repetitions."""
    setup, ks, kl = size["setup"], median(size, "keras_save"), median(size, "keras_load")
    return {
        "load_bundle / keras_load": _div(median(size, "load_bundle"), kl),
        "load_bundle peak / bundle bytes": _div(
            median(size, "load_bundle", "peak_above_baseline"), setup["bundle_bytes"]
        ),
        "save_bundle / keras_save": _div(median(size, "save_bundle"), ks),
        "bundle bytes / keras bytes": _div(setup["bundle_bytes"], setup["keras_bytes"]),
        "assert_roundtrip / (keras_save + keras_load)": _div(
            median(size, "assert_roundtrip"), None if ks is None or kl is None else ks + kl
        ),
    }


def judge_targets(sizes: list[dict]) -> dict:
    """Each ratio target's verdict at the size nearest 100M (``*``: not at 100M, so indicative only)."""
    if not sizes:
        return {"judged_at": None, "indicative_only": True, "items": []}
    at = min(sizes, key=lambda s: abs(math.log(s["params"] / 1e8)))
    star, values, items = ("" if at["params"] == 10**8 else "*"), ratios(at), []
    for key, target, limit in TARGETS:
        value = values[key]
        verdict = "NOT RUN" if value is None else ("PASS" if value <= limit else "FAIL") + star
        items.append({"ratio": key, "target": target, "limit": limit, "value": value, "verdict": verdict})
    return {"judged_at": label(at["params"]), "indicative_only": bool(star), "items": items}


def per_gb(sizes: list[dict], key: str, ops=OPS) -> dict[str, dict[str, float | None]]:
    """``{op: {size label: median of key / bundle GB}}``, sizes ascending."""
    sizes = sorted(sizes, key=lambda s: s["params"])
    return {
        op: {label(s["params"]): _div(median(s, op, key), s["setup"]["bundle_bytes"] / GB) for s in sizes} for op in ops
    }


def work_linearity(sizes: list[dict]) -> dict:
    """The linearity target, judged on work per GB of bundle in each op's own children.

    Per op in ``LINEARITY_OPS`` and size: the median user CPU seconds and the median syscall bytes
    (rchar + wchar: a byte read or written twice counts twice), each per GB of bundle. A step
    between consecutive sizes is ``super-linear`` when either grows by more than
    ``WORK_GROWTH_LIMIT``; both may fall (fixed costs make small sizes dearer per GB). A quadratic
    share f of the user CPU grows it by ~(1 + 2f) from 100M to 300M; reading or writing the data
    again grows the bytes. Kernel time and waits that grow without more user work or bytes are
    not seen: system CPU and wall time per GB are printed beside it for that. PASS/FAIL needs
    sizes from <= 10M to >= 300M; otherwise PARTIAL.
    """
    missing = [f"setup@{label(s['params'])}" for s in sizes if not s["setup"].get("ok")]
    sizes = sorted((s for s in sizes if s["setup"].get("ok")), key=lambda s: s["params"])
    tables = {key: per_gb(sizes, key, LINEARITY_OPS) for key in WORK_COUNTERS}
    steps, worst = {}, None
    for op in LINEARITY_OPS:
        ran = [label(s["params"]) for s in sizes if op in s["ops"]]
        missing += [f"{op}@{lab}" for lab in ran if not all(tables[k][op][lab] for k in WORK_JUDGED)]
        steps[op] = []
        for a, b in zip(ran, ran[1:]):
            if not all(tables[k][op][a] and tables[k][op][b] for k in WORK_JUDGED):
                continue  # already in ``missing``
            growth = {k: _div(tables[k][op][b], tables[k][op][a]) for k in WORK_COUNTERS}
            judged = max(growth[k] for k in WORK_JUDGED)
            worst = judged if worst is None else max(worst, judged)
            rule = "linear" if judged <= WORK_GROWTH_LIMIT else "super-linear"
            steps[op].append({"from": a, "to": b, "growth": growth, "rule": rule})
    bad = any(st["rule"] == "super-linear" for op_steps in steps.values() for st in op_steps)
    if missing:
        verdict = f"NOT MEASURED (no work counters or no good repetition: {', '.join(missing[:4])})"
    elif worst is None:
        verdict = "NOT TESTED (needs at least two sizes)"
    elif sizes[0]["params"] <= 10**7 and sizes[-1]["params"] >= 3 * 10**8:
        verdict = "FAIL" if bad else "PASS"
    else:
        span = f"{label(sizes[0]['params'])}..{label(sizes[-1]['params'])}"
        verdict = f"PARTIAL ({'a super-linear' if bad else 'no super-linear'} step over {span}; 10M..300M not covered)"
    return {
        "judged": list(WORK_JUDGED),
        "limit": WORK_GROWTH_LIMIT,
        "per_GB": tables,
        "steps": steps,
        "worst_growth": worst,
        "verdict": verdict,
    }


def analyse(results: dict) -> dict:
    """Adds each size's ratios, the target verdicts, the work rule and wall seconds per GB."""
    good = [s for s in results["sizes"] if s["setup"].get("ok")]
    for s in good:
        s["ratios"] = ratios(s)
    results["targets"] = judge_targets(good)
    results["linearity"] = work_linearity(results["sizes"])
    results["wall_seconds_per_GB"] = per_gb(good, "seconds")
    return results


def fmt(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def fmt_bytes(x: float | None) -> str:
    return "-" if x is None else (f"{x / 1e9:.3f} GB" if abs(x) >= 1e8 else f"{x / 1e6:.1f} MB")


def report_lines(results: dict) -> list[str]:
    """The console report of an analysed run (every number is in the JSON too)."""
    lines, sizes = [], sorted(results["sizes"], key=lambda s: s["params"])
    lines += [
        f"=== {label(s['params'])}: setup failed ({s['setup'].get('error')})" for s in sizes if not s["setup"]["ok"]
    ]
    sizes = [s for s in sizes if s["setup"]["ok"]]
    for s in sizes:
        st = s["setup"]
        lines += [
            f"=== {label(s['params'])}: {st['layers']} x Dense({st['width']}), {st['params_exact']:,} params, "
            f"bundle {fmt_bytes(st['bundle_bytes'])}, .keras {fmt_bytes(st['keras_bytes'])}",
            f"    {'operation':<18}{'median s':>10}{'min':>9}{'max':>9}{'peak above base':>18}{'user CPU':>10}"
            f"{'sys CPU':>9}{'syscall GB':>12}",
        ]
        for op, o in s["ops"].items():
            t = o["seconds"] or {"median": None, "min": None, "max": None}
            cpu = [fmt(median(s, op, key), 2) for key in ("cpu_user_seconds", "cpu_system_seconds")]
            failed = f"  ({o['failures']} failed)" if o["failures"] else ""
            lines.append(
                f"    {op:<18}{fmt(t['median']):>10}{fmt(t['min']):>9}{fmt(t['max']):>9}"
                f"{fmt_bytes(median(s, op, 'peak_above_baseline')):>18}{cpu[0]:>10}{cpu[1]:>9}"
                f"{fmt(_div(median(s, op, 'io_bytes'), GB)):>12}{failed}"
            )
    t, lin = results["targets"], results["linearity"]
    note = " (* not at 100M: indicative only)" if t["indicative_only"] else ""
    lines += ["", f"=== targets (issue 9), judged at {t['judged_at']}{note}"]
    lines += [f"    [{i['verdict']:<12}] {i['target']:<62} {fmt(i['value'])}x" for i in t["items"]]
    lines.append(f"    [{lin['verdict'].split(' (')[0]:<12}] work linear 10M..300M: {lin['verdict']}")
    head = f"    {'operation':<18}" + "".join(f"{label(s['params']):>10}" for s in sizes)
    lines += ["", f"=== work per GB of bundle (medians; judged: a step may grow at most x{lin['limit']:.1f})"]
    for key, unit, div in (("cpu_user_seconds", "user CPU s/GB", 1.0), ("io_bytes", "syscall GB/GB", GB)):
        lines += [f"  {unit}", head]
        for op, row in lin["per_GB"][key].items():
            lines.append(f"    {op:<18}" + "".join(f"{fmt(_div(v, div)):>10}" for v in row.values()))
    for op, steps in lin["steps"].items():
        for st in steps:
            grown = ", ".join(f"{k} x{fmt(g, 2)}" for k, g in st["growth"].items())
            lines.append(f"    {op} {st['from']}->{st['to']}: {grown} => {st['rule']}")
    lines += ["", "=== [info] wall seconds per GB of bundle (medians; not judged)", head]
    for op, row in results["wall_seconds_per_GB"].items():
        lines.append(f"    {op:<18}" + "".join(f"{fmt(v):>10}" for v in row.values()))
    return lines


def write_results(results: dict, path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(results, f, indent=1, default=str)
    return os.path.abspath(path)


# --------------------------------------------------------------------------- measuring (children)


def _status(key: str) -> int | None:
    """A /proc/self/status field (VmRSS, VmHWM) in bytes, or None without /proc."""
    try:
        with open("/proc/self/status") as f:
            return next((int(ln.split()[1]) * 1024 for ln in f if ln.startswith(key + ":")), None)
    except OSError:
        return None


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # Linux >= 4.0: resets VmHWM to the current RSS
        return True
    except OSError:
        return False


def io_counters() -> dict[str, int] | None:
    """This process's read/write syscall counters (``/proc/self/io``, every thread), or None."""
    try:
        with open("/proc/self/io") as f:
            return {k.strip(): int(v) for k, v in (line.split(":", 1) for line in f if ":" in line)}
    except (OSError, ValueError):
        return None


def work_since(start: tuple) -> dict:
    """CPU seconds and syscall bytes of this process since ``start = (io_counters(), getrusage())``."""
    import resource

    (io0, cpu0), cpu1, io1 = start, resource.getrusage(resource.RUSAGE_SELF), io_counters()
    io = None if io0 is None or io1 is None else io1["rchar"] + io1["wchar"] - io0["rchar"] - io0["wchar"]
    return {
        "cpu_user_seconds": cpu1.ru_utime - cpu0.ru_utime,
        "cpu_system_seconds": cpu1.ru_stime - cpu0.ru_stime,
        "io_bytes": io,
    }


class _Sampler(threading.Thread):
    """Fallback peak: the largest VmRSS seen every 5 ms (a lower bound; can miss short spikes)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak, self._done = _status("VmRSS") or 0, threading.Event()

    def run(self) -> None:
        while not self._done.wait(0.005):
            self.peak = max(self.peak, _status("VmRSS") or 0)

    def stop(self) -> int:
        self._done.set()
        self.join()
        return max(self.peak, _status("VmRSS") or 0)


def _files(path: str) -> list[str]:
    return [path] if os.path.isfile(path) else [os.path.join(d, n) for d, _, names in os.walk(path) for n in names]


def read_into_page_cache(path: str) -> None:
    buf = bytearray(8 << 20)
    for p in _files(path):
        with open(p, "rb", buffering=0) as f:
            while f.readinto(buf):
                pass


def library_fingerprint() -> str:
    """SHA-256 over faithful_restore's source (not imported): the tree may be edited while a run goes on."""
    import importlib.util

    root, h = os.path.dirname(importlib.util.find_spec("faithful_restore").origin), hashlib.sha256()
    for path in sorted(p for p in _files(root) if p.endswith(".py")):
        with open(path, "rb") as f:
            h.update(os.path.relpath(path, root).encode() + b"\0" + f.read())
    return h.hexdigest()


def build_model(params: int):
    """The trained MLP (same seed, so the same weights in every child) and its 8 probe rows."""
    import keras
    import numpy as np

    n, w = layout(params)
    keras.utils.set_random_seed(SEED)
    dense = [keras.layers.Dense(w, activation="relu" if i < n - 1 else None, name=f"dense_{i}") for i in range(n)]
    model = keras.Sequential([keras.Input((w,), name="x"), *dense], name=f"mlp_{label(params)}")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    rng = np.random.default_rng(SEED)
    x, y = (rng.standard_normal((BATCH, w), dtype=np.float32) for _ in range(2))
    model.train_on_batch(x, y)  # creates Adam's slots
    return model, x[:PROBE_ROWS].copy()


def child_setup(spec: dict) -> dict:
    """Writes the reference bundle and .keras file the loads read; reports their sizes."""
    import keras
    import numpy as np
    import tensorflow as tf

    import faithful_restore as fr

    model, probe = build_model(spec["params"])
    bundle, keras_file = os.path.join(spec["dir"], "ref_bundle"), os.path.join(spec["dir"], "ref.keras")
    fr.save_bundle(model, bundle, sample_inputs=probe, verbose=False)
    model.save(keras_file)
    (n, w), state = layout(spec["params"]), {id(v): v for v in [*model.weights, *model.optimizer.variables]}
    return {
        "layers": n,
        "width": w,
        "params_exact": int(model.count_params()),
        "state_bytes": int(sum(v.numpy().nbytes for v in state.values())),
        "bundle_bytes": sum(map(os.path.getsize, _files(bundle))),
        "keras_bytes": os.path.getsize(keras_file),
        "versions": {m.__name__: m.__version__ for m in (fr, tf, keras, np)},
    }


def child_measure(spec: dict) -> dict:
    import resource

    import keras

    import faithful_restore as fr

    op, size_dir = spec["op"], spec["dir"]
    bundle, keras_file = os.path.join(size_dir, "ref_bundle"), os.path.join(size_dir, "ref.keras")
    scratch = os.path.join(size_dir, f"scratch_{op}")
    tiny, x = build_model(1000)  # warm-up: a process's first training step and call are slow
    tiny.predict_on_batch(x)
    model, probe = (
        build_model(spec["params"]) if op in ("save_bundle", "assert_roundtrip", "keras_save") else (None, None)
    )
    if op in ("load_bundle", "keras_load"):
        read_into_page_cache(bundle if op == "load_bundle" else keras_file)  # every load equally warm
    os.sync()  # no earlier child's write-back lands in this op
    run = {
        "save_bundle": lambda: fr.save_bundle(model, scratch, sample_inputs=probe, verbose=False),
        "load_bundle": lambda: fr.load_bundle(bundle, verbose=False),
        "assert_roundtrip": lambda: fr.assert_roundtrip(model, probe, path=scratch),
        "keras_save": lambda: model.save(scratch + ".keras"),
        "keras_load": lambda: keras.models.load_model(keras_file),
    }[op]
    del tiny
    gc.collect()
    base, hwm_reset = _status("VmRSS"), _reset_hwm()
    sampler = None if hwm_reset else _Sampler()
    if sampler is not None:
        sampler.start()
    start = (io_counters(), resource.getrusage(resource.RUSAGE_SELF))
    t0 = time.perf_counter()
    result = run()
    seconds = time.perf_counter() - t0
    work = work_since(start)
    peak = _status("VmHWM") if sampler is None else sampler.stop()
    del result
    shutil.rmtree(scratch, ignore_errors=True)
    if os.path.exists(scratch + ".keras"):
        os.remove(scratch + ".keras")
    method = "VmHWM after clear_refs" if sampler is None else "5 ms VmRSS sampler"
    peak = None if peak is None or base is None else peak - base
    return {"seconds": seconds, "peak_above_baseline": peak, "peak_method": method, **work}


def child_main(spec_json: str) -> None:
    spec = json.loads(spec_json)
    try:
        result = child_setup(spec) if spec["op"] == "setup" else child_measure(spec)
        result.update(ok=True, library_sha256=library_fingerprint())
    except Exception as e:  # noqa: BLE001 - reported to the parent
        import traceback

        result = {"ok": False, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
    with open(spec["result_path"], "w") as f:
        json.dump(result, f)


# --------------------------------------------------------------------------- parent


def run_child(spec: dict, timeout: float) -> dict:
    fd, spec["result_path"] = tempfile.mkstemp(prefix="result-", suffix=".json", dir=spec["dir"])
    os.close(fd)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONHASHSEED="0")
    cmd = [sys.executable, os.path.abspath(__file__), "--_child", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        output, rc = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired:
        output, rc = "", "timeout"
    try:
        with open(spec["result_path"]) as f:
            result = json.load(f)
    except (OSError, ValueError):
        result = {"ok": False, "error": f"child exited with {rc} and wrote no result", "traceback": output[-3000:]}
    os.remove(spec["result_path"])
    return result


def run(args: argparse.Namespace, log=print) -> dict:
    """Measures every size (setup child, then interleaved repetitions) and returns the analysed results."""
    with open("/proc/cpuinfo") if os.path.exists("/proc/cpuinfo") else open(os.devnull) as f:
        cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), platform.processor())
    results = {
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H%M%SZ"),
        "command": [sys.executable, *sys.argv],
        "machine": {"cpu": cpu, "nproc": os.cpu_count(), "platform": platform.platform()},
        "python": platform.python_version(),
        "FAITHFUL_RESTORE_FAST": os.environ.get("FAITHFUL_RESTORE_FAST", "unset (patches on)"),
        "library_sha256": library_fingerprint(),
        "repeats": args.repeats,
        "sizes": [],
    }
    log(f"{results['machine']}; FAITHFUL_RESTORE_FAST {results['FAITHFUL_RESTORE_FAST']}")
    workdir = tempfile.mkdtemp(prefix="fr-bench-", dir=args.workdir)
    try:
        for params in args.params:
            size_dir = os.path.join(workdir, label(params))
            os.makedirs(size_dir)
            n, w = layout(params)
            log(f"\n--- {label(params)}: {n} x Dense({w}), {args.repeats} repetition(s) per op")
            setup = run_child({"op": "setup", "params": params, "dir": size_dir}, args.child_timeout)
            reps: dict[str, list[dict]] = {op: [] for op in OPS} if setup.get("ok") else {}
            if not setup.get("ok"):
                log(f"    setup failed, size skipped: {setup['error']}\n{setup.get('traceback', '')[-2000:]}")
            elif "versions" not in results:
                results["versions"] = setup["versions"]
                log(f"    versions {setup['versions']}")
            for rep in range(args.repeats if reps else 0):
                for op in OPS:
                    r = run_child({"op": op, "params": params, "dir": size_dir}, args.child_timeout)
                    reps[op].append(r)
                    if not r.get("ok"):
                        log(f"    rep {rep + 1} {op:<17} FAILED {r['error']}\n{r.get('traceback', '')[-2000:]}")
                        continue
                    if r["library_sha256"] != results["library_sha256"]:
                        log("    !! faithful_restore's source changed during the run: results mix versions")
                        results["library_changed_during_run"] = True
                    log(
                        f"    rep {rep + 1} {op:<17} {r['seconds']:8.3f} s  peak +{fmt_bytes(r['peak_above_baseline'])}"
                        f"  user CPU {r['cpu_user_seconds']:.2f} s  sys CPU {r['cpu_system_seconds']:.2f} s"
                    )
            results["sizes"].append(
                {"params": params, "setup": setup, "ops": {o: summarize_op(v) for o, v in reps.items()}}
            )
            shutil.rmtree(size_dir, ignore_errors=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return analyse(results)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument(
        "--params",
        nargs="+",
        type=parse_params,
        default=[10**7, 10**8, 3 * 10**8],
        help="model sizes (default: 10M 100M 300M, the issue's range)",
    )
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repetitions per op and size (default: 3)")
    ap.add_argument("--json-out", help=f"where to write the results (default: {RESULTS_DIR}/<UTC time>.json)")
    ap.add_argument("--workdir", help="where the scratch directory goes (default: the system's temp dir)")
    ap.add_argument("--child-timeout", type=float, default=3600.0, help="seconds per child (default: 3600)")
    ap.add_argument("--_child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._child is not None:
        child_main(args._child)
        return 0
    if args.repeats < 1:
        ap.error("--repeats must be at least 1")
    results = run(args)
    print("\n" + "\n".join(report_lines(results)))
    path = write_results(results, args.json_out or os.path.join(RESULTS_DIR, f"{results['created']}.json"))
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
