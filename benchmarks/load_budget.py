#!/usr/bin/env python
"""Where load_bundle's time goes, counted in CPU seconds (context for the load target of issue 9).

``load_bundle`` with integrity checking must hash every byte of the bundle (SHA-256) and move
every byte into memory the process did not have before (the variables' own buffers). Both are
done on two threads while Keras rebuilds the model on the main one, so on a two-core machine the
load cannot take less than half of the CPU time it needs. This script measures that budget:

* ``sha256``: hashlib's SHA-256 throughput on one thread and on two at once (GB/s);
* ``fresh read``: reading the bundle's weight file from the page cache into fresh buffers
  populated 4 KiB at a time (``bench_save_load.populated_buffer``, as the raw floor and
  load_bundle obtain theirs), seconds per GB on one thread;
* ``load_bundle`` and ``keras_load``, each in a fresh child of ``bench_save_load.py`` (same
  preparation as there, interleaved), with the wall time and the child's user + system CPU time
  of the operation alone.

From these it prints the load's CPU split into the part that scales with the bundle's bytes
(hash + fresh read, at the rates measured here) and the rest (Keras' rebuild, compiling, assigning
the variables, the probe), and the two-core lower bound: CPU time / 2. Run::

    python benchmarks/load_budget.py --params 100M --repeats 5 --drop-caches
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_save_load as bench  # noqa: E402 - the benchmark's own children and buffers

_SEGMENT = 16 << 20


def sha256_rate(nbytes: int, threads: int) -> float:
    """GB/s of SHA-256 over ``nbytes`` per thread, summed over ``threads`` threads hashing at once."""
    buffers = [bench.populated_buffer(nbytes) for _ in range(threads)]
    for b in buffers:
        b[:] = 7  # hashing cost does not depend on the bytes; pages are touched before timing
    workers = [threading.Thread(target=lambda b=b: hashlib.sha256(b).digest()) for b in buffers]
    t0 = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return threads * nbytes / (time.perf_counter() - t0) / 1e9


def fresh_read_seconds_per_gb(path: str) -> float:
    """Seconds per GB to read ``path`` (warm) into fresh populated 16 MiB buffers on one thread."""
    with open(path, "rb") as f:
        while f.read(_SEGMENT):  # warm the page cache outside the timed region
            pass
    kept = []
    size = os.path.getsize(path)
    t0 = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        for offset in range(0, size, _SEGMENT):
            buf = bench.populated_buffer(min(_SEGMENT, size - offset))
            f.seek(offset)
            bench.read_fully(f, buf)
            kept.append(buf)
    seconds = time.perf_counter() - t0
    del kept
    return seconds / (size / 1e9)


def _median(reps: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in reps)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", type=bench.parse_params, default=100_000_000, help="e.g. 100M")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--drop-caches", action="store_true", help="as bench_save_load.py --drop-caches (root)")
    ap.add_argument("--workdir", default=None, help="scratch directory (default: a new temp dir); removed afterwards")
    ap.add_argument("--json-out", default=None)
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error("--repeats must be at least 1")

    def log(msg: str = "") -> None:
        print(msg, flush=True)

    workdir = args.workdir or tempfile.mkdtemp(prefix="fr-budget-")
    size_dir = os.path.join(workdir, f"p{bench.label(args.params)}")
    os.makedirs(size_dir, exist_ok=True)
    try:
        spec = {"params": args.params, "size_dir": size_dir, "drop_caches": args.drop_caches, "paired_floor": False}
        setup = bench.run_child({**spec, "op": "setup", "rep": 0}, 3600.0, log)
        if not setup.get("ok"):
            log("setup failed")
            return 1
        bundle = bench.artifact_paths(size_dir)["bundle"]
        bundle_bytes = setup["bundle_bytes"]
        weights = max(bench.files_under(bundle), key=os.path.getsize)
        sha1, sha2 = sha256_rate(256 << 20, 1), sha256_rate(256 << 20, 2)
        fresh = fresh_read_seconds_per_gb(weights)
        log(f"{bench.label(args.params)}: bundle {bench.fmt_b(bundle_bytes)}")
        if os.cpu_count() != 2:
            # load_bundle keeps at most three threads busy (two hashing, the main one), so the
            # CPU / 2 bound below is the two-core machine's, not necessarily this one's.
            log(f"note: this machine has {os.cpu_count()} cores; the lower bound below assumes two")
        log(f"sha256: {sha1:.2f} GB/s on one thread, {sha2:.2f} GB/s on two")
        log(f"fresh read (page cache -> new populated buffers, one thread): {fresh:.3f} s/GB")
        reps: dict[str, list[dict]] = {"load_bundle": [], "keras_load": []}
        for rep in range(args.repeats):
            for op in reps:
                r = bench.run_child({**spec, "op": op, "rep": rep}, 3600.0, log)
                if not r.get("ok"):
                    return 1
                reps[op].append(r)
                log(
                    f"  rep {rep + 1} {op:<11} {r['seconds']:.3f} s wall, cpu {r['cpu_user_seconds']:.3f} user "
                    f"+ {r['cpu_system_seconds']:.3f} system"
                )
        summary = {}
        for op, rs in reps.items():
            for r in rs:
                r["cpu_seconds"] = r["cpu_user_seconds"] + r["cpu_system_seconds"]
            summary[op] = {
                k: _median(rs, k) for k in ("seconds", "cpu_seconds", "cpu_user_seconds", "cpu_system_seconds")
            }
        gb = bundle_bytes / 1e9
        per_byte = gb / sha1 + gb * fresh
        load = summary["load_bundle"]
        rest = load["cpu_seconds"] - per_byte
        bound = load["cpu_seconds"] / 2
        keras = summary["keras_load"]["seconds"]
        log("")
        log(
            f"load_bundle, medians of {args.repeats}: {load['seconds']:.3f} s wall, {load['cpu_seconds']:.3f} s CPU "
            f"({load['cpu_seconds'] / load['seconds']:.2f} cores busy)"
        )
        log(f"  hashing + fresh read of {bench.fmt_b(bundle_bytes)} at the rates above: {per_byte:.3f} s CPU")
        log(f"  the rest (rebuild, compile, assignment, probe, overheads): {rest:.3f} s CPU")
        log(f"  two-core lower bound (CPU / 2): {bound:.3f} s; the load took {load['seconds'] / bound:.2f}x that")
        log(
            f"keras_load median {keras:.3f} s: load / keras_load {load['seconds'] / keras:.3f}x, "
            f"lower bound / keras_load {bound / keras:.3f}x (target 0.3x)"
        )
        if args.json_out:
            with open(args.json_out, "w") as f:
                json.dump(
                    {
                        "params": args.params,
                        "bundle_bytes": bundle_bytes,
                        "machine": bench.machine(),
                        "library": bench.library_fingerprint(),
                        "drop_caches": args.drop_caches,
                        "sha256_gb_per_s": {"one_thread": sha1, "two_threads": sha2},
                        "fresh_read_seconds_per_gb": fresh,
                        "summary": summary,
                        "bytes_cpu_seconds": per_byte,
                        "rest_cpu_seconds": rest,
                        "two_core_lower_bound_seconds": bound,
                        "reps": reps,
                    },
                    f,
                    indent=1,
                )
        return 0
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
