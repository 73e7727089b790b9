"""The command line through its real entry point (subprocesses): output, --json and exit codes.

A subprocess that imports TensorFlow costs seconds before it does anything, so the fast suite runs
the TensorFlow-heavy commands through ``cli.main`` in this process (the same parser, commands,
output and exit codes) and the quick demo once, with its JSON, plot and text outputs drawn from
that one run; the slow suite (``-m slow``) repeats each of them through the real entry point.
The cheap commands (inspect, usage errors, check-inputs) and one TensorFlow-importing verify stay
subprocesses in the fast suite.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import make_xy, rewrite_manifest, sequential_model

import faithful_restore as fr
from faithful_restore import _demo, cli

# The entry point installed beside this interpreter (a venv's own, not whichever is first on PATH).
EXE = shutil.which("faithful-restore", path=os.path.dirname(sys.executable))


def run(*args: str, module: bool = False) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "faithful_restore", *args] if module or EXE is None else [EXE, *args]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)


def run_in_process(*args: str, module: bool = False) -> subprocess.CompletedProcess:
    """``cli.main(args)`` in this process, its output and exit code as ``run`` returns them."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(list(args))
        except SystemExit as e:  # argparse's usage errors
            code = e.code
    return subprocess.CompletedProcess(["faithful-restore", *args], code, out.getvalue(), err.getvalue())


@pytest.fixture(params=["in_process", pytest.param("subprocess", marks=pytest.mark.slow)])
def cli_run(request):
    """``run_in_process`` in the fast suite; the real entry point (``run``) in the slow one."""
    return run_in_process if request.param == "in_process" else run


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    model = sequential_model()
    good = str(root / "good")
    fr.save_bundle(model, good, sample_inputs=make_xy(8)[0], metadata={"run": "cli"})
    other = sequential_model(trained=False)
    fresh = str(root / "fresh")
    fr.save_bundle(other, fresh)
    return {"good": good, "fresh": fresh, "root": root}


def test_inspect_text_and_json(bundles):
    out = run("inspect", bundles["good"])
    assert out.returncode == 0, out.stderr
    assert "optimizer: Adam (model.optimizer), iterations 8" in out.stdout
    assert re.search(r"inputs: input_layer(_\d+)? \(None, 4\) float32", out.stdout), out.stdout
    out = run("inspect", bundles["good"], "--json")
    data = json.loads(out.stdout)
    # A small model has no dataset large enough to be hashed in segments: the bundle is 1.0.
    assert data["format_version"] == "1.0" and data["metadata"] == {"run": "cli"}


def test_verify_ok_and_json(bundles, cli_run):
    out = cli_run("verify", bundles["good"])
    assert out.returncode == 0, out.stderr
    assert "matches the original" in out.stdout
    out = cli_run("verify", bundles["good"], "--json", module=True)
    assert out.returncode == 0
    assert json.loads(out.stdout)["ok"] is True


def test_verify_tampered_exits_1(bundles):
    bad = str(bundles["root"] / "tampered")
    shutil.copytree(bundles["good"], bad)
    weights = os.path.join(bad, "model", "model.weights.h5")
    data = bytearray(open(weights, "rb").read())
    data[-100] ^= 1
    open(weights, "wb").write(bytes(data))
    out = run("verify", bad, "--json")
    assert out.returncode == 1
    report = json.loads(out.stdout)
    assert report["findings"][0]["cause"] == "integrity"


def test_unreadable_input_exits_2_with_one_line(tmp_path, cli_run):
    out = cli_run("verify", str(tmp_path / "nope"))
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].startswith("faithful-restore: error: no bundle at")
    assert "Traceback" not in out.stderr
    out = cli_run("--debug", "inspect", str(tmp_path / "nope"))
    assert out.returncode == 2 and "Traceback" in out.stderr


def test_usage_error_exits_2():
    out = run("frobnicate")
    assert out.returncode == 2
    assert "invalid choice" in out.stderr


def test_diff_two_bundles(bundles, tmp_path, cli_run):
    same = cli_run("diff", bundles["good"], bundles["good"], "--json")
    assert same.returncode == 0, same.stdout + same.stderr
    differ = cli_run("diff", bundles["good"], bundles["fresh"], "--json")
    assert differ.returncode == 1
    causes = [f["cause"] for f in json.loads(differ.stdout)["findings"] if f["severity"] == "error"]
    assert causes[0] == "weights"
    assert "optimizer_state" in causes


def test_diff_reports_version_skew(bundles, tmp_path, cli_run):
    skewed = str(tmp_path / "skewed")
    shutil.copytree(bundles["good"], skewed)
    rewrite_manifest(skewed, lambda d: d["environment"].update(numpy="1.24.0"))
    out = cli_run("diff", bundles["good"], skewed)
    assert out.returncode == 0  # skew alone is a warning
    assert "version_skew @ environment.numpy" in out.stdout


def test_check_inputs_command(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1000, 4)).astype("float32")
    path = str(tmp_path / "b")
    fr.save_bundle(sequential_model(), path, preprocessing=fr.PreprocessingStats.from_data(x))
    np.save(tmp_path / "good.npy", x[:200])
    np.save(tmp_path / "bad.npy", x[:200] * 255)
    np.savetxt(tmp_path / "good.csv", x[:50], delimiter=",", header="a,b,c,d", comments="")
    ok = run("check-inputs", path, str(tmp_path / "good.npy"))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert run("check-inputs", path, str(tmp_path / "good.csv")).returncode == 0
    bad = run("check-inputs", path, str(tmp_path / "bad.npy"), "--json")
    assert bad.returncode == 1
    assert json.loads(bad.stdout)["findings"][0]["cause"] == "preprocessing"
    missing = run("check-inputs", path, str(tmp_path / "nope.npy"))
    assert missing.returncode == 2 and "cannot read" in missing.stderr


def _check_demo_json(out: subprocess.CompletedProcess) -> None:
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout)
    rows = {r["scenario"]: r for r in result["rows"]}
    assert rows["bundle"]["ok"] and rows["bundle"]["max_weight_diff_after_training"] == 0.0
    assert rows["bundle"]["continued_loss"] == rows["original"]["continued_loss"]
    weights_only = rows["weights only"]
    assert weights_only["accuracy"] == rows["original"]["accuracy"]  # inference unaffected
    assert weights_only["max_weight_diff_after_training"] > 0  # continued training is not
    assert weights_only["diagnosis"].startswith("optimizer_state")
    assert rows["rebuilt, other regularization"]["diagnosis"].startswith("regularization")
    assert rows["rebuilt, other architecture"]["diagnosis"].startswith("architecture")
    assert rows["version skew (simulated)"]["diagnosis"].startswith("version_skew")
    forgot = rows["preprocessing forgotten"]
    assert forgot["diagnosis"].startswith("preprocessing") and forgot["accuracy"] < rows["original"]["accuracy"] - 0.2
    assert forgot["continued_loss"] is None  # not measured for this scenario, and said so
    assert len(result["curves"]["original"]) == result["steps"]
    assert result["curves"]["bundle"] == result["curves"]["original"]
    assert np.isfinite(result["test_accuracy"]) and result["test_accuracy"] > 0.8


def _check_demo_plot(out: subprocess.CompletedProcess, png) -> None:
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        assert out.returncode == 2 and "needs matplotlib" in out.stderr
        assert not png.exists()
    else:
        assert out.returncode == 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _check_demo_text(out: subprocess.CompletedProcess) -> None:
    assert out.returncode == 0, out.stderr[-2000:]
    assert "scenario" in out.stdout and "weights only" in out.stdout
    assert "What this run measured:" in out.stdout


def test_demo_json_plot_and_text_in_process(tmp_path, monkeypatch):
    """The fast twin of the three demo tests below: one quick demo run in this process, and its
    JSON, plot and text outputs through cli.main (the later two reuse the run's result)."""
    measured: list = []
    real_run = _demo.run

    def run_once(**kwargs):
        assert kwargs["quick"] is True
        if not measured:
            measured.append(real_run(**kwargs))
        return measured[0]

    monkeypatch.setattr(_demo, "run", run_once)
    _check_demo_json(run_in_process("demo", "--quick", "--json"))
    png = tmp_path / "curves.png"
    _check_demo_plot(run_in_process("demo", "--quick", "--plot", str(png)), png)
    _check_demo_text(run_in_process("demo", "--quick"))
    assert len(measured) == 1


@pytest.mark.slow
def test_demo_quick_json():
    _check_demo_json(run("demo", "--quick", "--json"))


@pytest.mark.slow
def test_demo_plot(tmp_path):
    png = tmp_path / "curves.png"
    _check_demo_plot(run("demo", "--quick", "--plot", str(png)), png)


@pytest.mark.slow
def test_demo_text_output():
    _check_demo_text(run("demo", "--quick"))
