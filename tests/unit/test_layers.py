"""The package's import graph, read from the source: no cycle, and no import against the layer order."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest
import tomllib

PACKAGE = Path(__file__).resolve().parents[2] / "clipsearch"
LAYERS = [
    layer.split()
    for layer in tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["tool"]["clipsearch"]["layers"]
]


def _modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every package module `name` imports, at the top or inside functions alike."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")[: len(name.split(".")) - node.level + (path.name == "__init__.py")]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [module] + [f"{module}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(t for t in targets if t in modules and t != name and not name.startswith(t + "."))
    return found


def _layer(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1 or parts[1] == "__main__":
        return len(LAYERS)  # the package root stands above every layer
    top = parts[1]
    for rank, layer in enumerate(LAYERS):
        if top in layer:
            return rank
    raise AssertionError(f"{module} is in no layer: add '{top}' to [tool.clipsearch] layers in pyproject.toml")


GRAPH = {name: _imports(name, path, modules) for modules in [_modules()] for name, path in modules.items()}


def test_every_module_has_a_layer() -> None:
    for module in GRAPH:
        _layer(module)


def test_no_import_cycle() -> None:
    try:
        list(graphlib.TopologicalSorter(GRAPH).static_order())
    except graphlib.CycleError as cycle:
        pytest.fail(f"import cycle: {' -> '.join(cycle.args[1])}")


def test_imports_run_down_the_layers() -> None:
    upward = sorted(
        f"{module} ({LAYERS[_layer(module)][0]}) imports {target} ({LAYERS[_layer(target)][0]})"
        for module, targets in GRAPH.items()
        for target in targets
        if _layer(target) > _layer(module)
    )
    assert not upward, "imports against the layer order:\n" + "\n".join(upward)


def test_the_checker_sees_a_cycle_and_an_upward_import() -> None:
    # The oracle itself: a made-up graph with both faults is caught.
    with pytest.raises(graphlib.CycleError):
        list(graphlib.TopologicalSorter({"a": {"b"}, "b": {"a"}}).static_order())
    assert _layer("clipsearch.index.store") < _layer("clipsearch.tasks.zeroshot") < _layer("clipsearch.cli.app")


def test_imports_inside_the_package_are_relative() -> None:
    absolute = [
        f"{path.relative_to(PACKAGE.parent)}:{node.lineno}"
        for path in PACKAGE.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if (isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "clipsearch")
        or (isinstance(node, ast.Import) and any(alias.name.split(".")[0] == "clipsearch" for alias in node.names))
    ]
    assert not absolute, "absolute imports of the package itself: " + ", ".join(absolute)
