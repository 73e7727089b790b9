"""The benchmark harness keeps working (a tiny run; the real measurements live in docs/performance.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "bench_save_load.py")


@pytest.mark.slow
def test_benchmark_smoke(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [
            sys.executable,
            SCRIPT,
            "--params",
            "200000",
            "--repeats",
            "1",
            "--ops",
            "save_bundle,load_bundle,keras_save,keras_load",
            "--json-out",
            str(out),
            "--workdir",
            str(tmp_path / "work"),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data  # raw numbers were written
    assert "load_bundle" in proc.stdout and "keras_load" in proc.stdout
