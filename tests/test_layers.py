"""Layers point down: stratos/ (the library) <- tasks/ (the stages) <- flows/ <- the CLI and deployments/.

Read from the source with `ast`, so an import hidden inside a function body counts as much as one
at the top of a module (that is where upward imports used to hide). stratos/cli.py is the one
app-layer module inside the package: it may import everything.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
APP_LAYER = {ROOT / "stratos" / "cli.py"}
# package -> the top-level packages it must never import
FORBIDDEN = {
    "stratos": {"tasks", "flows", "deployments"},
    "tasks": {"flows", "deployments"},
}


def imported_modules(path: Path, root: Path = ROOT) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file, nested ones and import_module('x') too."""
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this file's package
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                found.append((node.lineno, ".".join([*base, *([node.module] if node.module else [])])))
            else:
                found.append((node.lineno, node.module or ""))
        elif isinstance(node, ast.Call) and _is_dynamic_import(node):
            found.append((node.lineno, node.args[0].value))
    return found


def _is_dynamic_import(node: ast.Call) -> bool:
    name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
    first = node.args[0] if node.args else None
    return (
        name in ("import_module", "__import__")
        and isinstance(first, ast.Constant)
        and isinstance(first.value, str)
    )


def violations(package: str, root: Path = ROOT, app_layer: set[Path] = APP_LAYER) -> list[str]:
    banned = FORBIDDEN[package]
    return [
        f"{path.relative_to(root)}:{line} imports {module}"
        for path in sorted((root / package).rglob("*.py"))
        if path not in app_layer
        for line, module in imported_modules(path, root)
        if module.split(".")[0] in banned
    ]


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_lower_layers_never_import_upper_ones(package):
    assert violations(package) == []


def test_the_check_sees_nested_relative_and_dynamic_imports(tmp_path):
    """The rule catches each way an upward import can hide, and spares the app layer (a test of the test)."""
    (tmp_path / "stratos" / "sub").mkdir(parents=True)
    (tmp_path / "stratos" / "sub" / "mod.py").write_text(
        "import os\n"
        "from . import sibling\n"  # stratos.sub.sibling: fine
        "def f():\n"
        "    from flows.distill import distill\n"
        "    import deployments.deploy\n"
        "    import importlib\n"
        "    importlib.import_module('tasks.train')\n"
    )
    (tmp_path / "stratos" / "cli.py").write_text("import flows\n")
    found = violations("stratos", tmp_path, {tmp_path / "stratos" / "cli.py"})
    assert found == [
        "stratos/sub/mod.py:4 imports flows.distill",
        "stratos/sub/mod.py:5 imports deployments.deploy",
        "stratos/sub/mod.py:7 imports tasks.train",
    ], found
    assert imported_modules(tmp_path / "stratos" / "sub" / "mod.py", tmp_path)[1] == (2, "stratos.sub")
