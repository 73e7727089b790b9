"""The package's layering (docs/architecture.md): dependencies point down, no cycles, small modules.

Pure source analysis (no TensorFlow): every ``faithful_restore`` import is counted, function-level
imports included, so a lazy import cannot hide an upward dependency or a cycle.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent / "faithful_restore"
# Bottom to top. A module may import its own layer's modules (acyclically) and lower layers.
LAYERS = {
    "errors": 0,
    "findings": 0,
    "_version": 0,
    "_deprecated": 0,
    "format": 1,
    "drift": 2,
    "runtime": 3,
    "fast": 4,
    "capture": 5,
    "bundle": 6,
    "diagnose": 7,
    # the front door
    "__init__": 8,
    "__main__": 9,
    "cli": 9,
    "_demo": 9,
    "keras": 9,
    "testing": 9,
}
MAX_LINES = 600


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 2:
        parts.pop()
    return ".".join(parts)


def _imports() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in ROOT.rglob("*.py")}
    deps: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("faithful_restore"):
                assert node.level == 0, f"{name}: relative import"
                for alias in node.names:
                    candidate = f"{node.module}.{alias.name}"
                    found.add(candidate if candidate in modules else node.module)
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("faithful_restore")}
        deps[name] = {d if d != "faithful_restore" else "faithful_restore.__init__" for d in found} - {name}
    return deps


def _layer(module: str) -> int:
    top = module.split(".")[1]
    assert top in LAYERS, f"{module} is in no layer; add it to LAYERS and docs/architecture.md"
    return LAYERS[top]


def test_every_dependency_points_down_or_sideways():
    upward = [
        (module, dep)
        for module, deps in _imports().items()
        for dep in deps
        if _layer(dep) > _layer(module)
        # the front door may use the package's public surface
        and not (dep == "faithful_restore.__init__" and _layer(module) == 9)
    ]
    assert upward == []


def test_no_import_cycles():
    deps = _imports()
    state: dict[str, int] = {}
    cycles = []

    def visit(module: str, stack: list[str]) -> None:
        state[module] = 1
        for dep in sorted(deps.get(module, ())):
            if state.get(dep) == 1:
                cycles.append(stack[stack.index(dep) :] + [dep])
            elif dep not in state:
                visit(dep, [*stack, dep])
        state[module] = 2

    for module in sorted(deps):
        if module not in state:
            visit(module, [module])
    assert cycles == []


@pytest.mark.parametrize("path", sorted(ROOT.rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_over_the_size_limit(path):
    assert len(path.read_text().splitlines()) <= MAX_LINES


def test_the_checks_can_fail(tmp_path, monkeypatch):
    # The analysis sees a function-level upward import and a cycle.
    pkg = tmp_path / "faithful_restore"
    (pkg / "format").mkdir(parents=True)
    (pkg / "bundle").mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "format" / "__init__.py").write_text("")
    (pkg / "bundle" / "__init__.py").write_text("")
    (pkg / "format" / "a.py").write_text("def f():\n    from faithful_restore.bundle import b\n")
    (pkg / "bundle" / "b.py").write_text("from faithful_restore.format import a\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", pkg)
    with pytest.raises(AssertionError):
        test_every_dependency_points_down_or_sideways()
    with pytest.raises(AssertionError):
        test_no_import_cycles()
