"""TensorFlow-free test modules run without importing TensorFlow or Keras.

conftest.py and the ``faithful_restore.testing`` pytest plugin import neither, so these modules
(NumPy-only apart from their tests marked ``tensorflow``) run in seconds. The check runs them in a
fresh pytest process and then looks at that process's ``sys.modules``.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
TF_FREE = ["test_findings.py", "test_safety.py", "test_guard.py", "test_fileio.py", "test_stats.py"]
# The two longest (streaming ~0.5 GB through NumPy, ~9 s together) are left to the main run: they
# import nothing the other test_stats tests do not, and running them here would double their cost.
SKIPPED_HERE = [
    "tests/test_stats.py::test_memory_stays_bounded_on_data_larger_than_it_holds",
    "tests/test_stats.py::test_vocabulary_memory_is_bounded_by_capacity",
]

# pytest.main in this interpreter, then what it left in sys.modules: TensorFlow and Keras must be
# absent; NumPy and the plugin must be present (the probe sees what the tests imported).
_PROBE = """\
import json, sys
import pytest
code = pytest.main(sys.argv[1:])
watched = ("tensorflow", "keras", "numpy", "faithful_restore.testing")
print("imported: " + json.dumps({"exit": int(code), "modules": [m for m in watched if m in sys.modules]}))
"""


def test_tensorflow_free_modules_never_import_tensorflow():
    env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "PYTEST_ADDOPTS")}
    args = ["-q", "-p", "no:cacheprovider", "-m", "not slow and not tensorflow", *(f"tests/{m}" for m in TF_FREE)]
    args += [f"--deselect={node}" for node in SKIPPED_HERE]
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, *args], cwd=ROOT, capture_output=True, text=True, timeout=600, env=env
    )
    last = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
    assert last.startswith("imported: "), out.stdout[-3000:] + out.stderr[-3000:]
    result = json.loads(last.removeprefix("imported: "))
    assert result["exit"] == 0, out.stdout[-3000:]
    assert "numpy" in result["modules"] and "faithful_restore.testing" in result["modules"], result
    leaked = [m for m in ("tensorflow", "keras") if m in result["modules"]]
    assert leaked == [], (
        f"{leaked} imported while running {TF_FREE}: a test there needs @pytest.mark.tensorflow, or an "
        "import (conftest.py, faithful_restore, the faithful_restore.testing plugin) turned eager"
    )
