"""The package's shape, checked from its source: what docs/architecture.md promises a maintainer.

- no import circle between the package's modules (every import counts: at module level, inside a
  function, or only for type checkers);
- no module above 400 lines, except those docs/architecture.md lists under *Modules over 400 lines*
  with the reason;
- the run's lifecycle class (`run.Arena`) under 150 lines;
- report/ and rating/ import nothing from the run package (nor the `pipeline` alias): results are a
  function of the store, not of a run;
- Ray's vocabulary (leases, shards) stays in distributed/.
"""

from __future__ import annotations

import ast
import re
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "arena_engine"
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    mods = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The package modules ``name`` imports (``from pkg import sub`` names the submodule)."""
    found: set[str] = set()
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in MODULES else module for a in node.names]
        for target in targets:
            while target and target not in MODULES:  # `import a.b.c` of a name inside a module
                target = target.rpartition(".")[0]
            if target.startswith("arena_engine") and target != name:
                found.add(target)
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _circles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles = []
    for root in GRAPH:
        if root in index:
            continue
        work = [(root, iter(sorted(GRAPH[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(GRAPH[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        circles.append(sorted(component))
    return circles


def test_the_checker_sees_a_circle_when_there_is_one() -> None:
    GRAPH["arena_engine.store.keys"].add("arena_engine.run.arena")
    try:
        assert any("arena_engine.run.arena" in c and "arena_engine.store.keys" in c for c in _circles())
    finally:
        GRAPH["arena_engine.store.keys"].discard("arena_engine.run.arena")


def test_no_import_circle() -> None:
    assert _circles() == []


def _explained() -> dict[str, str]:
    """docs/architecture.md's *Modules over 400 lines*: `path`: reason, one per bullet."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    section = re.search(r"^## Modules over 400 lines\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    if section is None:
        return {}
    return dict(re.findall(r"^- `(arena_engine/[^`]+\.py)`: (.+)$", section.group(1), re.M))


def test_no_module_above_400_lines_unless_the_architecture_says_why() -> None:
    explained = _explained()
    long = {str(p.relative_to(ROOT)): len(p.read_text(encoding="utf-8").splitlines()) for p in MODULES.values()}
    unexplained = {p: n for p, n in long.items() if n > MAX_LINES and p not in explained}
    assert unexplained == {}
    stale = [p for p in explained if long.get(p, 0) <= MAX_LINES]
    assert stale == [], "docs/architecture.md explains modules that are no longer above 400 lines"


def test_the_arena_is_a_small_lifecycle() -> None:
    tree = ast.parse((PACKAGE / "run" / "arena.py").read_text(encoding="utf-8"))
    arena = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Arena")
    assert arena.end_lineno is not None
    assert arena.end_lineno - arena.lineno + 1 < 150


@pytest.mark.parametrize("package", ["report", "rating"])
def test_results_code_imports_nothing_of_the_run(package: str) -> None:
    below = {name: deps for name, deps in GRAPH.items() if name.startswith(f"arena_engine.{package}")}
    assert below
    run = {"arena_engine.run", "arena_engine.pipeline", "arena_engine.commands", "arena_engine.batch.session"}
    for name, deps in below.items():
        assert not {d for d in deps if d in run or d.startswith("arena_engine.run.")}, name


def test_rays_vocabulary_stays_in_distributed() -> None:
    """No identifier outside distributed/ speaks of leases or shards (prose in docstrings may)."""
    word = re.compile(r"(^|_)(lease|leases|leased|shard|shards)(_|$)|Lease|Shard", re.I)
    inside, outside = [], []
    for path in MODULES.values():
        rel = path.relative_to(ROOT)
        with path.open("rb") as f:
            for tok in tokenize.tokenize(f.readline):
                if tok.type == tokenize.NAME and word.search(tok.string) and "release" not in tok.string.lower():
                    (inside if rel.parts[1] == "distributed" else outside).append(f"{rel}:{tok.start[0]}: {tok.string}")
    assert inside, "the scan finds the names where they belong"
    assert outside == []
