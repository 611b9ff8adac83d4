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


def _name_branches(names: set[str], allowed: Path) -> list[str]:
    """Places outside `allowed` that branch on one of `names`: a comparison with the name as a string, or a dict
    literal keyed by it (a table of per-name behaviour kept outside its registry)."""
    found = []
    for path in PACKAGE.rglob("*.py"):
        if path.is_relative_to(allowed):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            constants = []
            if isinstance(node, ast.Compare):
                for side in [node.left, *node.comparators]:
                    elements = side.elts if isinstance(side, (ast.Tuple, ast.List, ast.Set)) else [side]
                    constants += [e.value for e in elements if isinstance(e, ast.Constant)]
            elif isinstance(node, ast.Dict):
                constants += [k.value for k in node.keys if isinstance(k, ast.Constant)]
            hits = sorted(set(c for c in constants if isinstance(c, str)) & names)
            if hits:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {', '.join(hits)}")
    return found


def test_only_inputs_knows_formulations_by_name():
    """A formulation carries its own answers (fields and methods of Formulation); nothing else asks its name."""
    from hf_ft.inputs.formulations import FORMULATIONS

    assert not (found := _name_branches(set(FORMULATIONS), PACKAGE / "inputs")), "\n".join(found)


def test_only_retrieval_knows_retrievers_and_corpus_readers_by_name():
    from hf_ft.retrieval.registries import CORPUS_READERS, RETRIEVERS

    # the readers' generic names (hub, local) are also what a data source or a base model records: fenced are the
    # retrievers and the readers only retrieval has
    names = set(RETRIEVERS) | {name for name in CORPUS_READERS if name not in ("hub", "local")}
    assert not (found := _name_branches(names, PACKAGE / "retrieval")), "\n".join(found)


def test_the_fences_can_fail(tmp_path):
    """The fence sees a branch on a name: written into a module outside inputs/, it is found."""
    probe = PACKAGE / "evaluation" / "_fence_probe.py"
    probe.write_text('def f(x):\n    return x == "joint"\n')
    try:
        assert any("_fence_probe.py:2: joint" in f for f in _name_branches({"joint"}, PACKAGE / "inputs"))
    finally:
        probe.unlink()


def test_a_registry_names_what_it_has():
    from hf_ft.core.errors import UserError
    from hf_ft.evaluation.scoring import SCORERS
    from hf_ft.extra.adapters import ADAPTERS
    from hf_ft.inputs.formulations import FORMULATIONS
    from hf_ft.retrieval.registries import CORPUS_READERS, RETRIEVERS

    for registry in (FORMULATIONS, SCORERS, ADAPTERS, RETRIEVERS, CORPUS_READERS):
        try:
            registry["nonesuch"]
        except UserError as e:
            assert str(e).endswith("available: " + ", ".join(registry)) and "nonesuch" in str(e)
        else:
            raise AssertionError(f"{registry.kind}: an unknown name was served")
