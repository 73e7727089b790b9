"""The benchmark harness keeps working (a tiny run; the real measurements live in docs/performance.md)."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys

import pytest

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "bench_save_load.py")


def _run_tiny(script: str, tmp_path, *args: str) -> subprocess.CompletedProcess:
    """Runs a benchmark script at 200k parameters, one repetition, in a work dir under tmp_path."""
    return subprocess.run(
        [sys.executable, script, "--params", "200000", "--repeats", "1", *args, "--workdir", str(tmp_path / "work")],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )


@pytest.mark.slow
def test_benchmark_smoke(tmp_path):
    out = tmp_path / "bench.json"
    proc = _run_tiny(SCRIPT, tmp_path, "--ops", "save_bundle,load_bundle,keras_save,keras_load", "--json-out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data  # raw numbers were written
    assert "load_bundle" in proc.stdout and "keras_load" in proc.stdout
    (size,) = data["sizes"]
    for op, floor in (("save_bundle", "raw_write"), ("load_bundle", "raw_read")):
        rep = size["ops"][op]["reps"][0]
        assert rep["paired_floor"] == floor and rep["paired_floor_seconds"] > 0
        assert size["ops"][op]["paired_ratio"]["median"] == rep["seconds"] / rep["paired_floor_seconds"]
    assert "paired_ratio" not in size["ops"]["keras_save"] or size["ops"]["keras_save"]["paired_ratio"] is None
    for op in ("save_bundle", "load_bundle", "keras_save", "keras_load"):
        rep = size["ops"][op]["reps"][0]
        # CPU time of the operation alone (not the child's imports and build): positive, and at
        # most what every core could have done during the operation's wall time.
        cpu = rep["cpu_user_seconds"] + rep["cpu_system_seconds"]
        assert 0 < cpu <= (os.cpu_count() or 1) * rep["seconds"] + 0.05, (op, rep)
    # The work counters the linearity verdict judges. The save writes its bundle and reads the
    # large datasets back to hash them; the load reads it, at this size the small tensors twice
    # (hashed with the metadata, then parsed). A third pass over the bytes exceeds the bound.
    bundle = size["setup"]["bundle_bytes"]
    for op in ("save_bundle", "load_bundle"):
        rep = size["ops"][op]["reps"][0]
        assert bundle <= rep["io_bytes"] <= 2.5 * bundle, (op, rep["io_bytes"], bundle)
        assert rep["io_calls"] > 0 and rep["minor_faults"] >= 0
        assert size["ops"][op]["cpu_user_seconds"]["median"] == rep["cpu_user_seconds"]
        # The paired floor's own counters, information beside the op's.
        assert rep["paired_floor_cpu_system_seconds"] >= 0
        assert rep["paired_floor_io_bytes"] >= size["setup"]["raw_bytes"]
    assert data["linearity"]["rule"] == "work per GB"
    assert "judged on work per GB" in proc.stdout


@pytest.mark.slow
def test_load_budget_splits_the_load_cpu_and_skips_paired_floors(tmp_path):
    out = tmp_path / "budget.json"
    proc = _run_tiny(os.path.join(os.path.dirname(SCRIPT), "load_budget.py"), tmp_path, "--json-out", str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(out.read_text())
    load = data["summary"]["load_bundle"]
    assert load["cpu_seconds"] == load["cpu_user_seconds"] + load["cpu_system_seconds"] > 0
    assert data["two_core_lower_bound_seconds"] == load["cpu_seconds"] / 2
    assert data["bytes_cpu_seconds"] + data["rest_cpu_seconds"] == pytest.approx(load["cpu_seconds"])
    assert data["sha256_gb_per_s"]["one_thread"] > 0 and data["fresh_read_seconds_per_gb"] > 0
    for op in ("load_bundle", "keras_load"):
        (rep,) = data["reps"][op]
        assert "paired_floor_seconds" not in rep  # the budget times the operation alone
    assert "two-core lower bound" in proc.stdout


@functools.cache  # one copy of the script's module for every test
def _bench_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_save_load", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _size(params: int, gb: float, seconds: dict[str, float | list[float]]) -> dict:
    bench = _bench_module()
    reps = {op: v if isinstance(v, list) else [v, v, v] for op, v in seconds.items()}
    return {
        "params": params,
        "setup": {"bundle_bytes": gb * 1e9},
        "ops": {op: {"seconds": bench.summarize(values)} for op, values in reps.items()},
    }


def _with_paired(size: dict, op: str, ratios: list[float]) -> dict:
    size["ops"][op]["paired_ratio"] = _bench_module().summarize(ratios)
    return size


def _three_sizes(save_300m, raw_300m) -> list[dict]:
    return [
        _size(10_000_000, 0.12, {"save_bundle": 0.12, "raw_write": 0.12, "load_bundle": 0.2, "raw_read": 0.05}),
        _size(100_000_000, 1.2, {"save_bundle": 1.2, "raw_write": 1.2, "load_bundle": 1.5, "raw_read": 0.5}),
        _size(300_000_000, 3.6, {"save_bundle": save_300m, "raw_write": raw_300m, "load_bundle": 4.5, "raw_read": 1.5}),
    ]


@pytest.mark.parametrize(
    "save_300m, raw_300m, verdict",
    [
        (3.6, 3.6, "PASS"),  # constant seconds per GB
        (5.4, 7.2, "PASS (1 of"),  # grew 1.5x per GB while the disk floor itself grew 2x
        (5.4, 3.6, "FAIL"),  # grew 1.5x per GB on a floor that stayed linear: the library's own cost
    ],
)
def test_linearity_judges_growth_against_the_floor(save_300m, raw_300m, verdict):
    result = _bench_module().unpaired_linearity(_three_sizes(save_300m, raw_300m))
    assert result["verdict"].startswith(verdict), result["verdict"]


def test_a_slow_spell_in_most_repetitions_fails_the_median_and_so_the_verdict():
    # Two of three 300M saves hit a slow spell: the fastest one alone would pass, the medians do
    # not, and a step counts by the worse of the two.
    result = _bench_module().unpaired_linearity(_three_sizes([3.6, 7.0, 7.3], [3.6, 3.7, 3.6]))
    assert result["statistics"] == ["median", "min"]
    assert result["by_min"]["verdict"] == "PASS", result["by_min"]["verdict"]
    assert result["by_median"]["verdict"].startswith("FAIL"), result["by_median"]["verdict"]
    assert result["verdict"].startswith("FAIL"), result["verdict"]
    last = result["growth_per_GB_between_sizes"]["save_bundle"][-1]
    assert (last["rule_median"], last["rule_min"], last["rule"]) == ("super-linear", "linear", "super-linear")


def test_a_fast_outlier_in_the_floor_does_not_excuse_a_quadratic_step():
    # Every 300M save is 3x slower per GB than at 100M. One 100M raw write landed in a fast mode,
    # so the floor's fastest repetitions grew x7.2 and would call the step machine-bound.
    sizes = _three_sizes([10.8, 10.9, 11.0], [3.6, 3.6, 3.7])
    sizes[1] = _size(
        100_000_000, 1.2, {"save_bundle": 1.2, "raw_write": [0.45, 1.2, 1.25], "load_bundle": 1.5, "raw_read": 0.5}
    )
    result = _bench_module().unpaired_linearity(sizes)
    assert result["by_min"]["verdict"].startswith("PASS"), result["by_min"]["verdict"]
    assert result["verdict"].startswith("FAIL"), result["verdict"]
    assert result["growth_per_GB_between_sizes"]["save_bundle"][-1]["rule"] == "super-linear"


def test_linearity_fails_a_quadratic_step_that_every_repetition_shows():
    # Every 300M repetition is 1.5x slower per GB than at 100M while the floor stays linear.
    result = _bench_module().unpaired_linearity(_three_sizes([5.4, 5.5, 6.9], [3.6, 3.6, 5.0]))
    assert result["verdict"].startswith("FAIL"), result["verdict"]
    assert result["growth_per_GB_between_sizes"]["save_bundle"][-1]["rule"] == "super-linear"


def _paired_sizes(save_ratio_300m: list[float]) -> list[dict]:
    # The 300M saves ran at disk speed (3x slower per GB than at 100M) and so did the raw writes
    # in their own children: the unpaired floor was caught in a page-cache mode and stayed linear.
    sizes = _three_sizes([10.8, 10.9, 11.0], [3.6, 3.6, 3.7])
    ratios = {
        "save_bundle": [[1.6, 1.5, 1.7], [1.0, 1.05, 0.95], save_ratio_300m],
        "load_bundle": [[4.0, 4.1, 3.9], [3.0, 3.1, 2.9], [3.0, 3.0, 3.1]],
    }
    for op, per_size in ratios.items():
        for size, values in zip(sizes, per_size):
            _with_paired(size, op, values)
    return sizes


def test_paired_rule_passes_a_step_where_op_and_its_same_child_floor_slowed_alike():
    result = _bench_module().paired_linearity(_paired_sizes([1.05, 1.0, 1.1]))
    assert result["verdict"] == "PASS", result["verdict"]
    assert _bench_module().unpaired_linearity(_paired_sizes([1.05, 1.0, 1.1]))["verdict"].startswith("FAIL")
    last = result["growth_between_sizes"]["save_bundle"][-1]
    assert last["from"] == "100M" and last["to"] == "300M" and last["rule"] == "linear"


def test_paired_rule_fails_a_step_where_the_op_outgrew_its_same_child_floor():
    # The op took 1.5x its floor's time at 300M against 1.0x at 100M, in the median repetition.
    result = _bench_module().paired_linearity(_paired_sizes([1.0, 1.5, 1.6]))
    assert result["verdict"].startswith("FAIL"), result["verdict"]
    last = result["growth_between_sizes"]["save_bundle"][-1]
    assert last["rule"] == "super-linear" and abs(last["growth"] - 1.5) < 1e-9


def test_paired_rule_is_not_measured_without_paired_floors():
    # Results from before the paired floor existed (runs 1-4) get no paired verdict.
    result = _bench_module().linearity(_three_sizes(3.6, 3.6))
    assert result["paired"]["verdict"].startswith("NOT MEASURED"), result["paired"]["verdict"]
    assert result["unpaired"]["verdict"] == "PASS"


_GB_AT = {10_000_000: 0.12, 100_000_000: 1.2, 300_000_000: 3.6}


def _with_work(sizes: list[dict], op: str, **per_gb: list[list[float]]) -> list[dict]:
    """Gives ``op`` work counters: per counter, per size, each repetition's value per GB."""
    bench = _bench_module()
    for metric, per_size in per_gb.items():
        for size, values in zip(sizes, per_size):
            gb = _GB_AT[size["params"]]
            size["ops"][op][metric] = bench.summarize([v * gb for v in values])
    return sizes


def _working_sizes(user_300m: list[float], io_300m: list[float], system_300m: list[float]) -> list[dict]:
    # Wall time as in _paired_sizes with a failing paired step: the 300M saves ran 1.5x their
    # floors. The work counters decide; each op gets flat ones unless a test says otherwise.
    sizes = _paired_sizes([1.0, 1.5, 1.6])
    _with_work(sizes, "load_bundle", cpu_user_seconds=[[3.0] * 3, [0.8] * 3, [0.7] * 3], io_bytes=[[1.0e9] * 3] * 3)
    return _with_work(
        sizes,
        "save_bundle",
        cpu_user_seconds=[[2.0, 2.1, 1.9], [0.9, 0.8, 0.85], user_300m],
        io_bytes=[[1.0e9] * 3, [1.0e9] * 3, io_300m],
        cpu_system_seconds=[[0.7] * 3, [0.7] * 3, system_300m],
    )


def test_work_rule_decides_and_passes_flat_user_cpu_and_bytes_whatever_the_wall_time_did():
    result = _bench_module().linearity(_working_sizes([0.8, 0.85, 0.9], [1.0e9] * 3, [1.4, 1.5, 1.3]))
    assert result["rule"] == "work per GB"
    assert result["verdict"] == "PASS", result["verdict"]
    assert result["paired"]["verdict"].startswith("FAIL")  # the wall-time rule is information now
    last = result["work"]["growth_between_sizes"]["save_bundle"][-1]
    assert (last["from"], last["to"], last["rule"]) == ("100M", "300M", "linear")
    # System CPU doubled per GB (the VM's slow mode): tabulated, not judged.
    assert last["growth"]["cpu_system_seconds"] == pytest.approx(2.0)


def test_work_rule_fails_a_quadratic_share_of_user_cpu():
    # The 300M saves spent 1.5x the user CPU per GB of the 100M ones (a quadratic share of ~25%).
    result = _bench_module().linearity(_working_sizes([1.275, 1.3, 1.25], [1.0e9] * 3, [0.7] * 3))
    assert result["verdict"].startswith("FAIL"), result["verdict"]
    last = result["work"]["growth_between_sizes"]["save_bundle"][-1]
    assert last["rule"] == "super-linear" and last["growth"]["cpu_user_seconds"] == pytest.approx(1.5)
    assert result["work"]["worst_growth_between_sizes"] == pytest.approx(1.5)


def test_work_rule_fails_an_op_that_moves_its_bytes_twice_at_the_larger_size():
    # Same user CPU per GB, but at 300M every byte went through the kernel twice (a re-read).
    result = _bench_module().linearity(_working_sizes([0.8, 0.85, 0.9], [2.0e9] * 3, [0.7] * 3))
    assert result["verdict"].startswith("FAIL"), result["verdict"]
    last = result["work"]["growth_between_sizes"]["save_bundle"][-1]
    assert last["growth"]["io_bytes"] == pytest.approx(2.0) and last["rule"] == "super-linear"


@pytest.mark.parametrize("growth, rule", [(1.19, "linear"), (1.21, "super-linear")])
def test_work_rule_limit_is_twenty_percent_per_step(growth, rule):
    result = _bench_module().linearity(_working_sizes([0.85 * growth] * 3, [1.0e9] * 3, [0.7] * 3))
    last = result["work"]["growth_between_sizes"]["save_bundle"][-1]
    assert last["rule"] == rule and last["growth"]["cpu_user_seconds"] == pytest.approx(growth)
    assert result["verdict"].startswith("PASS" if rule == "linear" else "FAIL"), result["verdict"]


def test_work_rule_fails_the_load_alone_on_its_first_step():
    # The save is flat; at 100M the load read every byte twice (2 GB per GB against 1 at 10M).
    sizes = _working_sizes([0.8, 0.85, 0.9], [1.0e9] * 3, [0.7] * 3)
    _with_work(sizes, "load_bundle", io_bytes=[[1.0e9] * 3, [2.0e9] * 3, [2.0e9] * 3])
    result = _bench_module().linearity(sizes)
    assert result["verdict"].startswith("FAIL"), result["verdict"]
    first, last = result["work"]["growth_between_sizes"]["load_bundle"]
    assert (first["from"], first["to"], first["rule"]) == ("10M", "100M", "super-linear")
    assert last["rule"] == "linear"
    assert all(st["rule"] == "linear" for st in result["work"]["growth_between_sizes"]["save_bundle"])


def test_a_size_where_every_repetition_failed_leaves_the_rules_unmeasured():
    # Out of memory at 300M, say: the 100M -> 300M steps must not just disappear from the verdict.
    sizes = _working_sizes([0.8, 0.85, 0.9], [1.0e9] * 3, [0.7] * 3)
    sizes[2]["ops"]["save_bundle"] = {"seconds": None, "paired_ratio": None, "failures": 5}
    result = _bench_module().linearity(sizes)
    assert result["verdict"].startswith("NOT MEASURED") and "save_bundle@300M" in result["verdict"]
    assert result["paired"]["verdict"].startswith("NOT MEASURED"), result["paired"]["verdict"]


def test_work_rule_is_not_measured_without_user_cpu():
    sizes = _working_sizes([0.8, 0.85, 0.9], [1.0e9] * 3, [0.7] * 3)
    sizes[1]["ops"]["load_bundle"]["cpu_user_seconds"] = None
    result = _bench_module().linearity(sizes)
    assert result["verdict"].startswith("NOT MEASURED") and "load_bundle@100M" in result["verdict"]


def test_work_rule_is_not_measured_without_the_counters():
    # Runs 1-12 recorded no I/O counters: they keep their wall-time verdicts and get none here.
    sizes = _paired_sizes([1.0, 1.0, 1.0])
    _with_work(sizes, "save_bundle", cpu_user_seconds=[[1.0] * 3] * 3)
    result = _bench_module().linearity(sizes)
    assert result["verdict"].startswith("NOT MEASURED"), result["verdict"]
    assert "save_bundle@10M" in result["verdict"] and result["paired"]["verdict"] == "PASS"


def test_work_counters_are_summarized_only_when_every_good_repetition_has_them():
    bench = _bench_module()
    base = {"ok": True, "seconds": 1.0, "peak_above_baseline": 1, "sampled_peak_above_baseline": 1}
    base["retained_above_baseline"] = 0
    reps = [{**base, "cpu_user_seconds": 0.5, "io_bytes": 100}, {**base, "cpu_user_seconds": 0.7, "io_bytes": 300}]
    summary = bench.summarize_op([*reps, {"ok": False, "error": "child died"}])
    assert summary["cpu_user_seconds"]["median"] == 0.6 and summary["io_bytes"]["median"] == 200
    summary = bench.summarize_op([*reps, {**base, "cpu_user_seconds": 0.6}])  # a result without /proc/self/io
    assert summary["io_bytes"] is None and summary["cpu_user_seconds"]["n"] == 3


def test_io_counters_count_the_bytes_a_write_and_a_read_move(tmp_path):
    bench = _bench_module()
    path = tmp_path / "blob"
    before = bench._io_counters()
    if before is None:
        pytest.skip("no /proc/self/io on this system")
    with open(path, "wb") as f:
        f.write(b"x" * 3_000_000)
    with open(path, "rb") as f:
        assert len(f.read()) == 3_000_000
    after = bench._io_counters()
    assert after["wchar"] - before["wchar"] >= 3_000_000
    assert 3_000_000 <= after["rchar"] - before["rchar"] < 3_100_000


def test_a_repetition_without_its_paired_floor_leaves_the_op_unmeasured_for_the_paired_rule():
    bench = _bench_module()
    base = {"ok": True, "peak_above_baseline": 1, "sampled_peak_above_baseline": 1, "retained_above_baseline": 0}
    reps = [
        {**base, "seconds": 2.0, "paired_floor": "raw_write", "paired_floor_seconds": 1.0},
        {**base, "seconds": 3.0, "paired_floor": "raw_write", "paired_floor_seconds": 2.0},
        {"ok": False, "error": "child died"},
    ]
    summary = bench.summarize_op(reps)
    assert summary["failures"] == 1 and summary["seconds"]["median"] == 2.5
    assert summary["paired_ratio"]["median"] == 1.75
    reps[1] = {**base, "seconds": 3.0, "paired_floor": "raw_write", "paired_floor_error": "OSError: no space"}
    summary = bench.summarize_op(reps)
    assert summary["paired_ratio"] is None and summary["paired_floor_seconds"]["n"] == 1


def test_raw_floor_reads_back_exactly_the_bytes_it_wrote(tmp_path):
    import keras
    import numpy as np

    bench = _bench_module()
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(7), keras.layers.Dense(3)])
    model.compile(optimizer="adam", loss="mse")
    model.train_on_batch(np.ones((4, 5), "float32"), np.zeros((4, 3), "float32"))
    written = bench.raw_write(model, str(tmp_path / "raw"), fsync=False)
    arrays = bench.raw_read(str(tmp_path / "raw"))
    expected = [np.asarray(v) for v in bench.all_state_variables(model)]
    assert written == sum(a.nbytes for a in expected)
    assert len(arrays) == len(expected)
    for got, want in zip(arrays, expected):
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)
        assert got.flags.writeable  # new arrays, not views of a read-only mapping


def test_raw_read_names_a_truncated_floor_file(tmp_path):
    bench = _bench_module()
    (tmp_path / "index.json").write_text(json.dumps([{"shape": [4], "dtype": "<f4"}]))
    (tmp_path / "state.bin").write_bytes(b"\0" * 10)
    with pytest.raises(OSError, match="ended after 10 of 16 bytes"):
        bench.raw_read(str(tmp_path))


@pytest.mark.parametrize("nbytes", [0, 1, 4096, 3 << 20])
def test_populated_buffer_is_writable_memory_of_the_requested_size(nbytes):
    buf = _bench_module().populated_buffer(nbytes)
    assert buf.nbytes == nbytes and buf.dtype.name == "uint8"
    buf[:] = 7
    assert int(buf.sum()) == 7 * nbytes


@pytest.mark.parametrize("fsync", [True, False])
def test_raw_write_works_without_sync_file_range(tmp_path, monkeypatch, fsync):
    import keras
    import numpy as np

    bench = _bench_module()
    monkeypatch.setattr(bench, "_sync_file_range", lambda: None)  # macOS, or a libc without it
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    model.train_on_batch(np.ones((2, 3), "float32"), np.zeros((2, 2), "float32"))
    expected = [np.asarray(v) for v in bench.all_state_variables(model)]
    assert bench.raw_write(model, str(tmp_path / "raw"), fsync=fsync) == sum(a.nbytes for a in expected)
    for got, want in zip(bench.raw_read(str(tmp_path / "raw")), expected, strict=True):
        np.testing.assert_array_equal(got, want)
