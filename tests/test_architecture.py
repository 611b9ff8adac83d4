"""The folders show the architecture, and the code keeps to it: stages import only from stages below them, no
module imports itself in a circle, no module grows past ~400 lines, and the registries are the only door to a
formulation (no module outside hf_ft/inputs compares formulation names)."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "hf_ft"
# Lowest first: a module may import from its own stage and the stages before it, never after.
STAGES = ["core", "task", "data", "retrieval", "extra", "inputs", "publish", "config", "training", "evaluation"]
MAX_LINES = 420


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def stage_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in STAGES else None  # None: the top (cli, demo, entry points)


def imports() -> list[tuple[str, str, bool, int]]:
    """(importer, imported module, inside a function, line) for every import of a package module."""
    found = []
    for path in PACKAGE.rglob("*.py"):
        module = module_name(path)
        package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif (node.module or "").startswith("hf_ft"):
                target = node.module
            else:
                continue
            for candidate in [target] + [f"{target}.{a.name}" for a in node.names]:
                file = ROOT / (candidate.replace(".", "/") + ".py")
                if file.is_file() or (ROOT / candidate.replace(".", "/") / "__init__.py").is_file():
                    found.append((module, candidate, node.col_offset > 0, node.lineno))
    return found


def test_every_module_lives_in_a_stage_folder():
    loose = sorted(p.name for p in PACKAGE.glob("*.py")) 
    assert loose == ["__init__.py", "cli.py", "demo.py", "evaluate.py", "launch.py", "predict.py"], loose
    for shim in ("evaluate.py", "launch.py", "predict.py"):  # `python -m hf_ft.X` entry points only
        assert len((PACKAGE / shim).read_text().splitlines()) <= 10


def test_no_stage_imports_from_a_stage_above_it():
    upward = [f"{a} → {b} (line {line}{', in a function' if lazy else ''})" for a, b, lazy, line in imports()
              if stage_of(a) and (stage_of(b) is None and b != "hf_ft" or
                                  stage_of(b) and STAGES.index(stage_of(b)) > STAGES.index(stage_of(a)))]
    assert not upward, "imports from a higher stage:\n" + "\n".join(upward)


def test_no_import_cycle():
    graph = defaultdict(set)
    for a, b, lazy, _ in imports():
        if not lazy and a != b and not b.startswith(a + "."):
            graph[a].add(b)
    state: dict[str, int] = {}

    def visit(node, path):
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " → ".join(path[path.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for node in list(graph):
        if node not in state:
            visit(node, [node])


def test_no_module_is_over_about_400_lines():
    long = {str(p.relative_to(ROOT)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, long
