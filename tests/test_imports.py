"""The package graph: ``megatron_ext`` (what runs inside the Megatron process) imports none of the
programs built on it, and no two modules or packages import each other, directly or in a circle.

Read from the sources (``ast``), every import counted, also those inside functions."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.helpers import REPO

PACKAGES = ("common", "megatron_ext", "recipes", "launcher", "data_prep", "eval", "study",
            "preflight", "bench")  # fmt: skip
PROGRAMS = ("launcher", "eval", "recipes", "study", "preflight", "bench", "data_prep", "tools")


def _module(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Project modules ``path`` imports (``from pkg import mod`` counts as ``pkg.mod`` when
    ``mod`` is a module, else ``pkg``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                as_file = REPO / Path(*sub.split("."))
                is_mod = as_file.with_suffix(".py").exists() or (as_file / "__init__.py").exists()
                found.add(sub if is_mod else node.module)
    return {m for m in found if m.split(".")[0] in PACKAGES}


def _graph() -> dict[str, set[str]]:
    files = [p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")]
    return {_module(p): _imports(p) for p in files}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt in graph and not state.get(nxt) and (found := visit(nxt)):
                return found
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(graph):
        if not state.get(node) and (found := visit(node)):
            return found
    return None


def test_megatron_ext_imports_no_program():
    bad = {
        (mod, dep)
        for mod, deps in _graph().items()
        if mod.split(".")[0] == "megatron_ext"
        for dep in deps
        if dep.split(".")[0] in PROGRAMS
    }
    assert not bad, f"megatron_ext imports programs built on it: {sorted(bad)}"


def test_no_module_circle():
    graph = _graph()
    # a package's __init__ re-exporting its modules is not a circle with them
    for mod, deps in graph.items():
        graph[mod] = {d for d in deps if not (d == mod.rsplit(".", 1)[0] and "." in mod)}
    assert _cycle(graph) is None, f"modules import each other: {' -> '.join(_cycle(graph))}"


def test_no_package_circle():
    top: dict[str, set[str]] = {}
    for mod, deps in _graph().items():
        top.setdefault(mod.split(".")[0], set()).update(
            d.split(".")[0] for d in deps if d.split(".")[0] != mod.split(".")[0]
        )
    assert _cycle(top) is None, f"packages import each other: {' -> '.join(_cycle(top))}"


def test_the_checker_sees_a_circle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
