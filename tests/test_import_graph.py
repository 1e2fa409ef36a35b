"""No import cycle anywhere in the repository, counting imports inside functions too.

A lazy (function-level) import still ties two modules together: the cycle
``segcore.train -> segcore.train_distill -> segcore.cli.train -> segcore.train`` only ran because
each import sat inside a function. The graph below is built from the source with ``ast``, over
every module of ``segcore``, ``flows``, ``tasks`` and ``bench``; an edge goes from a module to each
repository module it imports (``from package import module`` counts as importing the module).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("segcore", "flows", "tasks", "bench")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def repository_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((REPO_ROOT / pkg).rglob("*.py"))}


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """Repository modules that ``name`` imports anywhere in its source (relative imports resolved)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        out |= {t for t in targets if t in known and t != name}
    return out


def import_graph() -> dict[str, set[str]]:
    modules = repository_modules()
    known = set(modules)
    return {name: imported_modules(name, path, known) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as ``[a, b, ..., a]``, or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for root in sorted(graph):
        if state.get(root):
            continue
        path, stack = [root], [iter(sorted(graph[root]))]
        state[root] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph[nxt])))
    return None


def test_find_cycle_finds_a_lazy_cycle_and_accepts_a_tree():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_graph_sees_function_level_and_from_package_imports(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from segcore.cli import train\n    import segcore.training\n")
    known = {"segcore.cli", "segcore.cli.train", "segcore.training"}
    assert imported_modules("x", src, known) == known


def test_repository_has_no_import_cycle():
    graph = import_graph()
    assert {"segcore.train", "segcore.training", "segcore.cli.train", "flows.full_pipeline"} <= set(graph)
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize("module", ["segcore.train", "segcore.train_distill", "segcore.eval"])
def test_module_entry_points_answer_help(module):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO_ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert f"python -m {module}" in out.stdout


def test_flows_and_tasks_import_from_anywhere_without_path_hacks(tmp_path):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code = "import flows.full_pipeline, flows.predict_flow, flows.build_shards_flow, tasks.train; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    sources = [p.read_text() for p in (REPO_ROOT / "flows").glob("*.py")]
    assert not any("sys.path.insert" in src for src in sources)
