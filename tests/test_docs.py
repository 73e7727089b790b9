"""Every Python example in README.md and docs/ runs, so the documentation cannot rot."""

from __future__ import annotations

import pathlib
import re

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
def test_python_examples_run(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": f"docs_{path.stem}"}
    for i, block in enumerate(_blocks(path)):
        try:
            exec(compile(block, f"{path.name}[block {i}]", "exec"), namespace)
        except Exception as e:  # noqa: BLE001 - name the failing example
            pytest.fail(f"{path.name} example {i} failed: {type(e).__name__}: {e}\n{block}")
