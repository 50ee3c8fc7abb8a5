"""Unit: the core is pure (standard library only; no I/O, clock, environment)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

DOMAIN = Path(__file__).parents[2] / "crsmon" / "domain"
MODULES = sorted(DOMAIN.glob("*.py"))

FORBIDDEN_MODULES = {
    "os", "sys", "io", "pathlib", "time", "random", "socket", "subprocess",
    "logging", "tempfile", "shutil", "urllib", "http", "sqlite3", "threading",
    "asyncio", "secrets", "uuid", "glob",
}  # fmt: skip
FORBIDDEN_CALLS = {"open", "print", "input", "now", "utcnow", "today", "getenv"}


def _imports(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", MODULES, ids=[p.name for p in MODULES])
def test_core_imports_only_the_standard_library_and_itself(path: Path) -> None:
    """A core module imports nothing outside the stdlib and crsmon.domain."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for name in _imports(tree):
        assert name in sys.stdlib_module_names or name == "crsmon", name
        assert name not in FORBIDDEN_MODULES, f"{path.name} imports {name}"
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "crsmon":
            pytest.fail(f"{path.name} imports from the crsmon package root")
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
            "crsmon."
        ):
            assert (node.module or "").startswith("crsmon.domain"), node.module


@pytest.mark.parametrize("path", MODULES, ids=[p.name for p in MODULES])
def test_core_calls_no_io_or_clock(path: Path) -> None:
    """A core module calls no I/O, clock or environment function."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = (
                func.attr
                if isinstance(func, ast.Attribute)
                else getattr(func, "id", "")
            )
            assert name not in FORBIDDEN_CALLS, f"{path.name} calls {name}()"
