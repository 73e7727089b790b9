"""Every Python example in README.md and docs/ runs, so the documentation cannot rot."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def _blocks(path: pathlib.Path) -> list[str]:
    return _BLOCK.findall(path.read_text())


def test_docs_exist_and_have_examples():
    assert (ROOT / "docs" / "bundle-format.md").exists()
    assert sum(len(_blocks(p)) for p in DOCS) >= 4


def test_readme_quick_start_is_two_commands_and_matches_ci():
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quick start", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1).strip().splitlines()
    assert len(block) == 2
    assert "faithful-restore demo" in block[0]
    assert block[1] in (ROOT / ".ci" / "run").read_text()


@pytest.mark.parametrize("path", [p for p in DOCS if _blocks(p)], ids=lambda p: p.name)
def test_python_examples_run(path, tmp_path):
    """A page's examples run in order, as one script in a fresh interpreter, as a reader would."""
    script = tmp_path / f"{path.stem}_examples.py"
    script.write_text("\n\n".join(_blocks(path)))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env
    )
    assert out.returncode == 0, f"{path.name} examples failed:\n{out.stderr[-3000:]}"
