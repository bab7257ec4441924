"""The package's shape, enforced: one-way imports, no cycles, small modules, a pytest-free core.

Imports are read with ``ast`` at every depth (module level, inside functions, under
``if TYPE_CHECKING:``), so a cycle hidden in a deferred import counts as a cycle.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import pytest_quaero

PACKAGE = Path(pytest_quaero.__file__).parent
#: what each package may import from pytest_quaero (besides itself); the pipeline reads top to bottom
ALLOWED = {
    "core": {"core"},
    "session": {"core"},
    "report": {"core", "session", "report"},
    "xdist": {"core", "session", "items", "extension", "report", "xdist"},
}
MAX_LINES = 450


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _imports(path: Path, name: str, known: set[str]) -> list[tuple[str, int, bool]]:
    """(imported pytest_quaero module, line, function-local) for every import in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    local_lines = {
        node.lineno
        for function in ast.walk(tree) if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef))
        for node in ast.walk(function) if isinstance(node, (ast.Import, ast.ImportFrom))
    }
    found: list[tuple[str, int, bool]] = []
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.append((target, node.lineno, node.lineno in local_lines))
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: {t for t, _, _ in _imports(path, name, set(modules))} for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first repeated last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_deferred_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles() -> None:
    cycle = find_cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_packages_import_only_downwards(layer: str) -> None:
    wrong = [
        f"{module} imports {target}"
        for module, targets in _graph().items() if _layer(module) == layer
        for target in targets if target.startswith("pytest_quaero.") and _layer(target) not in ALLOWED[layer]
    ]
    assert wrong == []


def test_nothing_imports_the_plugin_module() -> None:
    assert [m for m, targets in _graph().items() if "pytest_quaero.plugin" in targets] == []


def test_every_module_is_small_enough_to_read_at_once() -> None:
    long = {name: n for name, path in _modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_every_deferred_import_says_why() -> None:
    """A function-local import is there to keep start-up cheap: a comment on it, or just above, says so."""
    missing = []
    modules = _modules()
    for name, path in modules.items():
        lines = path.read_text(encoding="utf-8").splitlines()
        for _target, lineno, local in _imports(path, name, set(modules)):
            if local and not _explained(lines, lineno - 1):
                missing.append(f"{path.relative_to(PACKAGE.parent)}:{lineno}")
    assert sorted(set(missing)) == []


def _explained(lines: list[str], index: int) -> bool:
    """A comment on the import's line, or above the run of import lines it belongs to."""
    if "#" in lines[index]:
        return True
    above = index - 1
    while above >= 0 and lines[above].strip().startswith(("from ", "import ")):
        if "#" in lines[above]:
            return True
        above -= 1
    return above >= 0 and lines[above].strip().startswith("#")


def test_core_never_imports_pytest() -> None:
    """Every core module imports with pytest blocked (run in a fresh interpreter)."""
    names = [name for name in _modules() if name == "pytest_quaero.core" or name.startswith("pytest_quaero.core.")]
    code = (
        "import importlib, sys\n"
        "sys.modules['pytest'] = None\nsys.modules['_pytest'] = None\n"
        f"for name in {names!r}:\n"
        "    try:\n        importlib.import_module(name)\n"
        "    except ImportError as exc:\n        print(f'{name}: {exc}')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout == "", out.stdout


def test_the_public_api_is_complete_and_lazy() -> None:
    code = (
        "import sys, pytest_quaero\n"
        "assert 'pytest_quaero.core.queue' not in sys.modules, 'importing the package loaded the queue'\n"
        "missing = [n for n in pytest_quaero.__all__ if getattr(pytest_quaero, n, None) is None]\n"
        "print(missing)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"


def test_old_import_paths_warn_and_still_work() -> None:
    with pytest.warns(DeprecationWarning, match=r"pytest_quaero\.queue\.Message moved: import it from pytest_quaero "):
        from pytest_quaero.queue import Message
    with pytest.warns(DeprecationWarning, match=r"from pytest_quaero\.core\.queue "):
        from pytest_quaero.queue import create_schema  # noqa: F401
    import pytest_quaero.core.queue as real

    assert Message is real.Message
