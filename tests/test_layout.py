"""The package's layout: its folders are its layers, dependencies point from the paper down to the method, no
module imports another that imports it back (imports inside functions count: that is where cycles hide), and no module
reaches into another's private names (a name another module needs is public)."""

import ast
from pathlib import Path

import pytest

from atlib.paths import REPO_ROOT

PACKAGE = REPO_ROOT / "atlib"

# layer rank: a module may import modules of its own rank or lower
METHOD, TRAINING, PAPER, ENTRY = 0, 1, 2, 3
LAYERS = {"attention": METHOD, "losses": METHOD, "objective": METHOD, "methods": METHOD, "models": METHOD,
          "data": METHOD,  # data sits beside the method: neither trains anything
          "paths": METHOD,  # where things are: imports nothing of the package, so every layer may use it
          "training": TRAINING, "paper": PAPER, "cli": ENTRY, "__main__": ENTRY}


def module_names() -> dict[str, Path]:
    """``training.engine`` -> its file, for every module of the package (``models`` for models/__init__.py)."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts:
            out[".".join(parts)] = path
    return out


def source_module(node: ast.ImportFrom, name: str, is_package: bool) -> str | None:
    """The package module a from-import of module ``name`` reads from (``""``: the package itself), or None where it
    reads from outside the package."""
    package = name.split(".") if is_package else name.split(".")[:-1]
    if node.level:  # relative: from the package, up level - 1 packages
        return ".".join(package[:len(package) - (node.level - 1)] + (node.module.split(".") if node.module else []))
    if node.module == "atlib" or (node.module or "").startswith("atlib."):
        return ".".join(node.module.split(".")[1:])
    return None


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that ``name`` imports, at the top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            module = source_module(node, name, path.name == "__init__.py")
            if module is None:
                continue
            for alias in node.names:  # `from . import engine` imports a module
                candidate = f"{module}.{alias.name}" if module else alias.name
                found.add(candidate if candidate in modules else module)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("atlib."):
                    found.add(alias.name[len("atlib."):])
    return {m for m in found if m and m != name and m in modules}


def is_private(attr: str) -> bool:
    return attr.startswith("_") and not attr.startswith("__")


def private_uses(name: str, source: str, modules, is_package: bool = False) -> list[str]:
    """Another module's private names that module ``name`` (its ``source``) takes: ``from X import _y`` (any X but
    ``__future__``; dunder names are not private) and ``X._y`` where ``X`` is a module of the package it imported
    (``from . import X``, ``import atlib.X as X``). Each as ``"name -> X._y"``."""
    found, bound = [], {}  # bound: local name -> the package module it stands for
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module != "__future__":
            module = source_module(node, name, is_package)
            where = node.module if module is None else module
            for alias in node.names:
                candidate = f"{module}.{alias.name}" if module else alias.name
                if module is not None and candidate in modules:
                    bound[alias.asname or alias.name] = candidate
                elif is_private(alias.name) and where != name:
                    found.append(f"{name} -> {where}.{alias.name}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname and alias.name.startswith("atlib."):
                    bound[alias.asname] = alias.name[len("atlib."):]
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in bound
                and bound[node.value.id] != name and is_private(node.attr)):
            found.append(f"{name} -> {bound[node.value.id]}.{node.attr}")
    return found


@pytest.fixture(scope="module")
def graph():
    modules = module_names()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def test_the_graph_sees_imports_inside_functions(graph):
    # checks the checker: the report imports the train command inside missing_runs only, the CLI the workers inside
    # cmd_work only
    assert "training.command" in graph["paper.report"] and "paper.workers" in graph["cli"]
    assert "training.engine" in graph["paper.schedule"] and "training.claims" in graph["training.loop"]


def test_every_module_belongs_to_a_layer(graph):
    assert sorted(n for n in graph if n.split(".")[0] not in LAYERS) == []


def test_imports_point_down_the_layers(graph):
    upward = sorted(f"{a} -> {b}" for a, deps in graph.items() for b in deps
                    if LAYERS[b.split(".")[0]] > LAYERS[a.split(".")[0]])
    assert upward == []


def test_no_import_cycles(graph):
    cycles, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        for dep in sorted(graph[node]):
            if state.get(dep) == "open":
                cycles.append(" -> ".join(stack[stack.index(dep):] + [dep]))
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def test_the_private_check_sees_imports_and_attributes():
    # checks the checker on a source of its own: what it must report, and what it must let pass
    modules = {"training.engine": None, "training.cohorts": None, "losses": None, "paper.grids": None}
    source = ("from __future__ import annotations\n"
              "from . import engine\n"
              "from .engine import _progress_bar, train\n"
              "from .. import losses as L\n"
              "from atlib.paper.grids import _cell, __doc__\n"
              "import torch._dynamo\n"
              "def f(self):\n"
              "    from torch import _C\n"
              "    return engine._autocast, L._check_weight, engine.train, self._private, torch._dynamo\n")
    assert sorted(private_uses("training.cohorts", source, modules)) == [
        "training.cohorts -> losses._check_weight", "training.cohorts -> paper.grids._cell",
        "training.cohorts -> torch._C", "training.cohorts -> training.engine._autocast",
        "training.cohorts -> training.engine._progress_bar"]
    assert private_uses("training.engine", "from . import _helpers\n", {"training._helpers": None}) == []


def test_no_module_takes_another_modules_private_names():
    modules = module_names()
    found = [use for name, path in modules.items()
             for use in private_uses(name, path.read_text(), modules, path.name == "__init__.py")]
    assert found == []


def test_the_names_users_reach_stay_where_they_were():
    from atlib.attention import attention_map
    from atlib.losses import at_loss, kd_loss
    from atlib.models import wrn
    assert all(callable(f) for f in (attention_map, at_loss, kd_loss, wrn))
