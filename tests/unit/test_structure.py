"""The package's shape: config is a leaf, no module imports another in a cycle (not even
through an import inside a function), and the faces stay apart from each other."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from fizzbuzz_cli.errors import brief

PACKAGE = Path(__file__).parents[2] / "fizzbuzz_cli"


def fizz_imports(path: Path) -> set[str]:
    """The fizzbuzz_cli modules a module imports, at its top or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[1] for alias in node.names
                         if alias.name.startswith("fizzbuzz_cli."))
        elif isinstance(node, ast.ImportFrom) and node.module == "fizzbuzz_cli":
            found.update(alias.name for alias in node.names
                         if (PACKAGE / f"{alias.name}.py").exists()
                         or (PACKAGE / alias.name).is_dir())
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("fizzbuzz_cli."):
            found.add(node.module.split(".")[1])  # type: ignore[union-attr]
    return found


def unit_imports(unit: Path) -> set[str]:
    """What a module, or a subpackage as a whole (all its files), imports of the others."""
    files = sorted(unit.rglob("*.py")) if unit.is_dir() else [unit]
    name = unit.stem if unit.is_file() else unit.name
    return set().union(*(fizz_imports(path) for path in files)) - {name}


GRAPH = {(path.stem if path.is_file() else path.name): unit_imports(path)
         for path in sorted(PACKAGE.iterdir())
         if (path.suffix == ".py" and path.stem not in ("__init__", "__main__"))
         or (path.is_dir() and (path / "__init__.py").exists())}


def test_config_is_a_leaf_holding_settings() -> None:
    assert GRAPH["config"] == set()


def test_no_import_cycles() -> None:
    def visit(module: str, path: list[str]) -> None:
        for imported in sorted(GRAPH.get(module, ())):
            assert imported not in path, " -> ".join([*path, imported])
            visit(imported, [*path, imported])

    for module in GRAPH:
        visit(module, [module])


@pytest.mark.parametrize(("module", "never"), [
    ("db", {"cli", "server", "worker", "database", "embedded"}),
    ("database", {"cli", "server", "worker"}),
    ("worker", {"cli", "server"}),
    ("server", {"cli", "worker"}),
    ("embedded", {"cli", "db", "database"}),
])
def test_faces_and_layers_stay_apart(module: str, never: set[str]) -> None:
    assert not GRAPH[module] & never


def test_one_helper_makes_an_exception_one_line() -> None:
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        assert "def _brief" not in text and "def _reason" not in text, path.name
        assert "splitlines()[0]" not in text, path.name
    assert brief(ValueError("first line\nsecond line")) == "first line"
    assert brief(ValueError("")) == "ValueError"
    assert brief(OSError('connection to server at "127.0.0.1", port 1 failed: Connection '
                         "refused\n\tIs the server running?")) == "Connection refused"
    assert brief(OSError("FATAL:  database \"x\" does not exist")) == 'database "x" does not exist'
