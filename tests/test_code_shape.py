"""The code's shape limits: no function over 60 lines and no module over 450 lines, in the packages and
the entry points (tests are exempt)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("actors", "learner", "common", "study")  # study/: once study.py is a package
ENTRY_POINTS = ("launch.py", "eval.py", "bench.py", "bench_parts.py")
MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 450


def checked_files() -> list[Path]:
    files = [REPO / name for name in ENTRY_POINTS]
    for pkg in PACKAGES:
        if (REPO / pkg).is_dir():
            files += sorted((REPO / pkg).rglob("*.py"))
    return files


def long_functions(path: Path, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """``name (N lines)`` of each function or method in ``path`` longer than ``limit`` lines, its
    decorators and docstring included."""
    tree = ast.parse(path.read_text(), filename=str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            n = node.end_lineno - first + 1
            if n > limit:
                out.append(f"{node.name} ({n} lines)")
    return out


def test_the_checked_files_exist() -> None:
    files = checked_files()
    assert all(f.is_file() for f in files), [str(f) for f in files if not f.is_file()]
    assert len(files) > len(ENTRY_POINTS) + len(PACKAGES)


@pytest.mark.parametrize("path", checked_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_no_module_over_the_limit(path: Path) -> None:
    n = len(path.read_text().splitlines())
    assert n <= MAX_MODULE_LINES, f"{path.relative_to(REPO)}: {n} lines (limit {MAX_MODULE_LINES})"


@pytest.mark.parametrize("path", checked_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_no_function_over_the_limit(path: Path) -> None:
    assert not long_functions(path), f"{path.relative_to(REPO)}: {long_functions(path)}"


def test_the_function_check_counts_lines(tmp_path: Path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(61))
    f = tmp_path / "m.py"
    f.write_text(f"@staticmethod\ndef long():\n{body}\n\n\ndef short():\n    return 1\n")
    assert long_functions(f) == ["long (63 lines)"]
    assert long_functions(f, limit=63) == []
