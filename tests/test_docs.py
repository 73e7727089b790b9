"""Every Python example in README.md and docs/ runs, so the documentation cannot rot.

The fast suite runs every page's examples in one interpreter (one TensorFlow import instead of
one per page), each page in its own working directory and namespace; the slow suite runs each
page in a fresh interpreter of its own, as a reader would, so that no page depends on another.
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PAGES = [p for p in DOCS if re.search(r"^```python\n", p.read_text(), re.M)]
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}

# Runs each page's script (argv: the scripts) with runpy in a fresh namespace and directory, with
# Keras' global state (layer name counters, the graph) cleared in between, and reports each
# failure with its traceback. Exit 1 when any page failed.
_ALL_PAGES = """\
import os, runpy, sys, traceback
failed = []
for script in sys.argv[1:]:
    page_dir = os.path.splitext(script)[0]
    os.makedirs(page_dir)
    os.chdir(page_dir)
    try:
        runpy.run_path(script, run_name="__main__")
    except BaseException:
        failed.append(os.path.basename(script))
        print(f"===== {os.path.basename(script)}\\n{traceback.format_exc()}", file=sys.stderr)
    if "keras" in sys.modules:
        sys.modules["keras"].backend.clear_session()
print("failed:", failed)
sys.exit(1 if failed else 0)
"""


def _blocks(path: pathlib.Path) -> list[str]:
    return _BLOCK.findall(path.read_text())


def _script(path: pathlib.Path, directory: pathlib.Path) -> pathlib.Path:
    script = directory / f"{path.stem}_examples.py"
    script.write_text("\n\n".join(_blocks(path)))
    return script


def test_docs_exist_and_have_examples():
    assert (ROOT / "docs" / "bundle-format.md").exists()
    assert sum(len(_blocks(p)) for p in DOCS) >= 4
    assert PAGES == [p for p in DOCS if _blocks(p)]


def test_readme_quick_start_is_two_commands_and_matches_ci():
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quick start", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1).strip().splitlines()
    assert len(block) == 2
    assert "faithful-restore demo" in block[0]
    assert block[1] in (ROOT / ".ci" / "run").read_text()


def test_python_examples_of_every_page_run(tmp_path):
    """Every page's examples run in order, as one script per page, all pages in one interpreter."""
    scripts = [str(_script(path, tmp_path)) for path in PAGES]
    runner = tmp_path / "run_all_pages.py"
    runner.write_text(_ALL_PAGES)
    out = subprocess.run(
        [sys.executable, str(runner), *scripts], cwd=tmp_path, capture_output=True, text=True, timeout=1200, env=ENV
    )
    assert out.returncode == 0, f"examples failed:\n{out.stdout[-500:]}\n{out.stderr[-6000:]}"
    assert out.stdout.strip().splitlines()[-1] == "failed: []"


@pytest.mark.slow
@pytest.mark.parametrize("path", PAGES, ids=lambda p: p.name)
def test_python_examples_run(path, tmp_path):
    """A page's examples run in order, as one script in a fresh interpreter, as a reader would."""
    script = _script(path, tmp_path)
    out = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600, env=ENV
    )
    assert out.returncode == 0, f"{path.name} examples failed:\n{out.stderr[-3000:]}"
