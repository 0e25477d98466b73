"""The package's layout: its folders are its layers, dependencies point from the paper down to the method, and no
module imports another that imports it back (imports inside functions count: that is where cycles hide)."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "atlib"

# layer rank: a module may import modules of its own rank or lower
METHOD, TRAINING, PAPER, ENTRY = 0, 1, 2, 3
LAYERS = {"attention": METHOD, "losses": METHOD, "objective": METHOD, "methods": METHOD, "models": METHOD,
          "data": METHOD,  # data sits beside the method: neither trains anything
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


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that ``name`` imports, at the top or inside functions."""
    is_package = path.name == "__init__.py"
    package = name.split(".") if is_package else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the package, up level - 1 packages
                parts = package[:len(package) - (node.level - 1)] + (node.module.split(".") if node.module else [])
            elif node.module == "atlib" or (node.module or "").startswith("atlib."):
                parts = node.module.split(".")[1:]
            else:
                continue
            module = ".".join(parts)
            for alias in node.names:  # `from . import engine` imports a module
                candidate = f"{module}.{alias.name}" if module else alias.name
                found.add(candidate if candidate in modules else module)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("atlib."):
                    found.add(alias.name[len("atlib."):])
    return {m for m in found if m and m != name and m in modules}


@pytest.fixture(scope="module")
def graph():
    modules = module_names()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def test_the_graph_sees_imports_inside_functions(graph):
    # checks the checker: the report imports the train command inside missing_runs only, the CLI the workers inside
    # cmd_work only
    assert "training.command" in graph["paper.report"] and "paper.workers" in graph["cli"]
    assert "training.engine" in graph["paper.schedule"] and "training.claims" in graph["training.engine"]


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


def test_the_names_users_reach_stay_where_they_were():
    from atlib.attention import attention_map
    from atlib.losses import at_loss, kd_loss
    from atlib.models import wrn
    assert all(callable(f) for f in (attention_map, at_loss, kd_loss, wrn))
