"""The package's shape: imports flow one way, modules stay readable (issue 20).

The import graph counts every import a module makes, at module level and inside functions
(a lazy import is still an arrow between two files), between modules of ``poisonlab``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "poisonlab"
MAX_LINES = 600


def module_names() -> dict[str, Path]:
    out = {}
    for p in ROOT.rglob("*.py"):
        parts = list(p.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def imported(mod: str, path: Path, mods: dict[str, Path]) -> set[str]:
    """The poisonlab modules ``mod`` imports anywhere in its source (not its own parents)."""
    pkg = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = pkg[: len(pkg) - node.level + 1] if node.level else []
            stem = ".".join(base + ([node.module] if node.module else []))
            names = [stem] + [f"{stem}.{a.name}" for a in node.names]
        else:
            continue
        out |= {t for t in names if t in mods and t != mod and not mod.startswith(t + ".")}
    return out


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path ``[a, b, ..., a]``, or None (iterative DFS)."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    for root in sorted(edges):
        if root in state:
            continue
        stack = [(root, iter(sorted(edges[root])))]
        path = [root]
        state[root] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                state[node] = 2
                stack.pop()
                path.pop()
            elif state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            elif nxt not in state:
                state[nxt] = 1
                stack.append((nxt, iter(sorted(edges.get(nxt, ())))))
                path.append(nxt)
    return None


def test_find_cycle_finds_a_planted_one_and_none_in_a_chain() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_the_import_graph_has_no_cycle() -> None:
    mods = module_names()
    assert "poisonlab.harness.gate" in mods and len(mods) > 40
    edges = {m: imported(m, p, mods) for m, p in mods.items()}
    assert "poisonlab.harness.schema" in edges["poisonlab.harness.gate"]
    cycle = find_cycle(edges)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize("path", sorted(ROOT.rglob("*.py")), ids=lambda p: p.name)
def test_no_module_grows_past_the_limit(path: Path) -> None:
    rel = path.relative_to(ROOT.parent).as_posix()
    n = len(path.read_text(encoding="utf-8").splitlines())
    assert n <= MAX_LINES, f"{rel} has {n} lines: at most {MAX_LINES} (split it along its nouns)"


def from_imports(path: Path, mod: str) -> list[tuple[int, str, str]]:
    """``(line, module, name)`` for every ``from poisonlab... import name`` in ``path``."""
    pkg = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level > len(pkg):  # "attempted relative import beyond top-level package"
                out += [(node.lineno, "." * node.level + (node.module or ""), a.name)
                        for a in node.names]
                continue
            base = pkg[: len(pkg) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            if target.split(".")[0] == "poisonlab":
                out += [(node.lineno, target, a.name) for a in node.names if a.name != "*"]
    return out


def test_every_lazy_import_names_something_that_exists() -> None:
    """A name moved between modules breaks a function-level import only when it runs:
    every ``from poisonlab.x import y`` anywhere in the package must resolve now."""
    import importlib

    mods = module_names()
    missing = []
    n = 0
    for mod, path in mods.items():
        for line, target, name in from_imports(path, mod):
            n += 1
            if f"{target}.{name}" in mods:
                continue
            if target.startswith("."):
                missing.append(f"{path.relative_to(ROOT.parent)}:{line}: {target} is beyond "
                               "the package")
                continue
            try:
                found = hasattr(importlib.import_module(target), name)
            except ImportError as e:  # an optional extra (torchvision, ray) is not a move
                found = "poisonlab" not in str(e)
            if not found:
                missing.append(f"{path.relative_to(ROOT.parent)}:{line}: {target}.{name}")
    assert n > 200
    assert not missing, "imports of names that do not exist:\n" + "\n".join(missing)


def reach(edges: dict[str, set[str]], start: str) -> set[str]:
    """Every module ``start`` imports, directly or through others."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        for nxt in edges.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


H = "poisonlab.harness."
#: The pipe's one direction (issue 20): measuring knows nothing of storing, reporting or
#: gating; the report and the gate read results and stats, never measure, each other or
#: the machinery that runs cells. (The spec declares the suite's expectations, so measure
#: reaches their dataclass through it; judging them is the gate's and the report's.)
FORBIDDEN = {
    H + "measure": {H + m for m in ("report", "gate", "store", "results", "runner",
                                    "executors", "schema")},
    H + "report": {H + m for m in ("measure", "gate", "executors", "runner", "pretrained")},
    H + "gate": {H + m for m in ("measure", "report", "executors", "runner", "pretrained")},
    H + "stats": {H + m for m in ("measure", "report", "gate", "executors", "runner")},
}


def test_reach_follows_imports_through_other_modules() -> None:
    assert reach({"a": {"b"}, "b": {"c"}, "c": set()}, "a") == {"b", "c"}


@pytest.mark.parametrize("mod", sorted(FORBIDDEN))
def test_the_pipe_flows_one_way(mod: str) -> None:
    mods = module_names()
    edges = {m: imported(m, p, mods) for m, p in mods.items()}
    assert mod in mods
    reached = reach(edges, mod)
    bad = sorted(t for t in reached if any(t == f or t.startswith(f + ".")
                                           for f in FORBIDDEN[mod]))
    assert not bad, f"{mod} reaches {bad}"


MAX_FUNCTION_LINES = 80


def code_lines(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines of a function's body after its docstring (comments and blank lines inside
    count: they are what a reader reads)."""
    body = fn.body
    if (isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)):
        body = body[1:]
    return body[-1].end_lineno - body[0].lineno + 1 if body else 0  # type: ignore[operator]


def test_code_lines_skip_the_docstring() -> None:
    fn = ast.parse('def f():\n    """Doc.\n\n    More."""\n    a = 1\n\n    return a\n').body[0]
    assert isinstance(fn, ast.FunctionDef) and code_lines(fn) == 3


@pytest.mark.parametrize("path", sorted(ROOT.rglob("*.py")), ids=lambda p: p.name)
def test_no_function_grows_past_the_limit(path: Path) -> None:
    long = [f"{fn.name} ({code_lines(fn)} lines from line {fn.lineno})"
            for fn in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef)
            and code_lines(fn) > MAX_FUNCTION_LINES]
    assert not long, (f"{path.name}: {', '.join(long)}: at most {MAX_FUNCTION_LINES} lines of "
                      "code per function (split it along its steps)")
