#!/usr/bin/env python
"""How much the first touch of fresh memory costs on this machine (context for bench_save_load).

Loading or round-tripping a model writes gigabytes into memory the process did not have before
(the page cache of the files and the restored arrays). On a bare machine, that costs about what
zeroing the pages does. On a VM whose host takes back memory the guest has freed, it can cost
much more, and how much depends on how long ago the memory was freed and on the page size.
This script times it, so that the save/load figures can be read against it:

* ``small pages``: ``bench_save_load.populated_buffer``, an anonymous mapping populated 4 KiB
  page by page with ``MADV_POPULATE_WRITE`` (how load_bundle and the raw floor get their read
  buffers);
* ``numpy``: ``np.ones`` of the same size; NumPy advises huge pages for large arrays, so with
  transparent huge pages in ``madvise`` mode the kernel faults in 2 MiB pages.

Each is timed right after an equal amount was freed (``recycled``) and after
``--settle`` seconds without touching it (``settled``). Run: ``python benchmarks/first_touch.py``.
Prints seconds per GB; ``--json-out`` also writes them.
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_save_load import populated_buffer  # noqa: E402 - the raw floor's own buffers


def _small_pages(nbytes: int) -> float:
    t0 = time.perf_counter()
    array = populated_buffer(nbytes)
    array[:: mmap.PAGESIZE] = 1  # costs nothing once populated; faults each page where the advice failed
    seconds = time.perf_counter() - t0
    del array
    return seconds


def _numpy(nbytes: int) -> float:
    t0 = time.perf_counter()
    array = np.ones(nbytes, np.uint8)
    seconds = time.perf_counter() - t0
    del array
    return seconds


def measure(gigabytes: float, settle: float, repeats: int) -> dict[str, list[float]]:
    """Seconds per GB for each (allocation, state) pair, ``repeats`` values each."""
    nbytes = int(gigabytes * 1e9)
    out: dict[str, list[float]] = {}
    for name, touch in (("small pages", _small_pages), ("numpy", _numpy)):
        for _ in range(repeats):
            time.sleep(settle)
            out.setdefault(f"{name}, settled", []).append(touch(nbytes) / gigabytes)
            # The memory just freed by the settled touch is what this one gets back.
            out.setdefault(f"{name}, recycled", []).append(touch(nbytes) / gigabytes)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--gigabytes", type=float, default=2.0, help="memory touched per measurement")
    parser.add_argument("--settle", type=float, default=6.0, help="seconds to wait before a settled touch")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json-out", help="also write the figures here")
    args = parser.parse_args(argv)
    if not sys.platform.startswith("linux"):
        print("first_touch.py measures Linux page faults; nothing to do on", sys.platform)
        return 0
    results = measure(args.gigabytes, args.settle, args.repeats)
    thp = open("/sys/kernel/mm/transparent_hugepage/enabled").read().strip()
    print(f"first touch of {args.gigabytes:g} GB, seconds per GB (transparent_hugepage: {thp})")
    for key, values in results.items():
        print(f"  {key:24s} " + " ".join(f"{v:6.2f}" for v in values))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"gigabytes": args.gigabytes, "settle": args.settle, "thp": thp, "seconds_per_gb": results}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
