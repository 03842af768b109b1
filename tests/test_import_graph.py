"""The package's layers only point down: the import graph of src/ has no cycle.

Every module under src/hf_diffusionblocks is parsed with `ast` (nothing is imported), and every import of one
of the package's own modules becomes an arrow, whether it sits at module level or inside a function: an
import placed inside a function to break a cycle still closes the cycle here. Importing `a.b.c` also runs
`a/__init__.py` and `a/b/__init__.py`; those implicit parent imports are not arrows (every module would
depend on the package's `__init__`), only what a statement names is.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "hf_diffusionblocks"
SOURCE_ROOT = Path(__file__).resolve().parents[1] / "src"

# What the machinery every family uses may not reach: the layers built on top of it.
ABOVE_MODELING = ("hub", "families", "pipelines", "training", "pretrained", "model_card", "cli")

# The layers of docs/architecture.md, bottom first: a module may import its own layer and those below. A
# module is placed by its name or the folder it is in; "" is the package's __init__ (it exports every layer).
LAYERS: dict[int, tuple[str, ...]] = {
    1: ("partition", "preconditioning", "schedulers", "losses", "argument_checks", "atomic_io", "hub_download",
        "remote_code", "loader_keywords", "smoke", "data", "metrics", "tokenization_char", "tokenization_bpe", "utils"),
    2: ("modeling",),
    3: ("models", "pipelines"),
    4: ("families",),
    5: ("hub", "model_card", "training", "pretrained", "evaluation"),
    6: ("cli", "command_info", "command_assemble", ""),
}
# metrics/<name>/<name>.py are `evaluate` modules: scripts that `evaluate.load` runs over the whole library
EVALUATE_MODULES_LAYER = 6


def module_files(source_root: Path = SOURCE_ROOT) -> dict[str, Path]:
    """Dotted module name → file, for every `.py` file of the package (a package is its `__init__.py`)."""
    modules = {}
    for path in sorted((source_root / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(source_root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _imported_names(module: str, is_package: bool, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The dotted names an import statement may refer to (a module, or a name inside one)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        origin = ".".join(base + ([node.module] if node.module else []))
    else:
        origin = node.module or ""
    return [f"{origin}.{alias.name}" for alias in node.names] + [origin]


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The package module `name` is, or lies in (`a.b.func` → `a.b`); None outside the package."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def function_level_imports(modules: dict[str, Path]) -> list[str]:
    """`module:line` of every import of a package module placed inside a function."""
    found = []
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        functions = [node for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]
        for function in functions:
            for node in ast.walk(function):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    names = _imported_names(module, path.name == "__init__.py", node)
                    if any(name == PACKAGE or name.startswith(PACKAGE + ".") for name in names):
                        found.append(f"{module}:{node.lineno}")
    return sorted(set(found))


def import_graph(modules: dict[str, Path]) -> dict[str, dict[str, int]]:
    """module → {imported package module: line of the first import}, imports inside functions included."""
    graph: dict[str, dict[str, int]] = {}
    for module, path in modules.items():
        arrows: dict[str, int] = {}
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            names = _imported_names(module, path.name == "__init__.py", node)
            if not any(name == PACKAGE or name.startswith(PACKAGE + ".") for name in names):
                continue
            if isinstance(node, ast.ImportFrom):
                # `from pkg import sub` names the module `pkg.sub` when it is one, else a name defined in `pkg`
                names = [names[-1]] if all(name not in modules for name in names[:-1]) else names[:-1]
            for name in names:
                target = _resolve(name, modules)
                if target is not None and target != module:
                    arrows.setdefault(target, node.lineno)
        graph[module] = arrows
    return graph


def find_cycle(graph: dict[str, dict[str, int]]) -> list[str] | None:
    """One cycle of `graph` as `[a, b, ..., a]`, or None when it has none (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in sorted(graph):
        if start in state:
            continue
        path, iterators = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while path:
            successor = next(iterators[-1], None)
            if successor is None:
                state[path.pop()] = 2
                iterators.pop()
            elif state.get(successor) == 1:
                return path[path.index(successor) :] + [successor]
            elif successor not in state:
                state[successor] = 1
                path.append(successor)
                iterators.append(iter(sorted(graph[successor])))
    return None


def describe_cycle(cycle: list[str], graph: dict[str, dict[str, int]], modules: dict[str, Path]) -> str:
    arrows = [
        f"{source} ({modules[source].relative_to(SOURCE_ROOT)}:{graph[source][target]}) -> {target}"
        for source, target in zip(cycle, cycle[1:])
    ]
    return "import cycle:\n  " + "\n  ".join(arrows)


@pytest.fixture(scope="module")
def modules() -> dict[str, Path]:
    return module_files()


@pytest.fixture(scope="module")
def graph(modules) -> dict[str, dict[str, int]]:
    return import_graph(modules)


def test_the_graph_sees_every_kind_of_import(graph):
    # module-level relative, from-package-import-module, and absolute imports all become arrows
    assert "hf_diffusionblocks.modeling.configuration_blocks" in graph["hf_diffusionblocks.modeling.modeling_blocks"]
    assert "hf_diffusionblocks.models.dit" in graph["hf_diffusionblocks.families"]
    assert "hf_diffusionblocks.families" in graph["hf_diffusionblocks"]


def test_imports_inside_functions_are_arrows_too(tmp_path):
    package = tmp_path / PACKAGE
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "low.py").write_text("def load():\n    from .sub.high import thing\n    return thing\n")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "high.py").write_text("from ..low import load\nthing = 1\n")
    modules = module_files(tmp_path)
    cycle = find_cycle(import_graph(modules))
    assert cycle is not None and set(cycle) == {f"{PACKAGE}.low", f"{PACKAGE}.sub.high"}
    assert function_level_imports(modules) == [f"{PACKAGE}.low:2"]


def test_the_package_has_no_import_cycle(graph, modules):
    cycle = find_cycle(graph)
    assert cycle is None, describe_cycle(cycle, graph, modules)


def test_no_package_module_is_imported_inside_a_function(modules):
    # With the layers pointing down no such import is needed; it is how the old cycle was hidden. (Heavy
    # third-party libraries imported inside a function, for start-up time, are not the package's modules.)
    assert function_level_imports(modules) == []


def layer_of(module: str) -> int | None:
    relative = module[len(PACKAGE) + 1 :] if module != PACKAGE else ""
    if relative.startswith("metrics.") and relative.count(".") >= 2:
        return EVALUATE_MODULES_LAYER
    for layer, names in LAYERS.items():
        if any(relative == name or (name and relative.startswith(name + ".")) for name in names):
            return layer
    return None


def test_every_module_has_a_layer_and_every_arrow_points_down(graph):
    assert [module for module in graph if layer_of(module) is None] == [], "place these modules in LAYERS"
    upward = [
        f"{source} (layer {layer_of(source)}, line {line}) -> {target} (layer {layer_of(target)})"
        for source, arrows in graph.items()
        for target, line in arrows.items()
        if layer_of(target) > layer_of(source)
    ]
    assert upward == [], "imports pointing up:\n  " + "\n  ".join(upward)


def test_modeling_reaches_nothing_above_it(graph):
    upward = [
        f"{source} -> {target} (line {line})"
        for source, arrows in graph.items()
        if source.startswith(f"{PACKAGE}.modeling")
        for target, line in arrows.items()
        if any(target == f"{PACKAGE}.{layer}" or target.startswith(f"{PACKAGE}.{layer}.") for layer in ABOVE_MODELING)
    ]
    assert upward == [], "modeling/ imports from a layer above it: " + "; ".join(upward)


def test_the_registry_is_imported_only_from_above(graph):
    below = ("modeling", "models", "pipelines", "schedulers", "partition", "preconditioning", "atomic_io",
             "hub_download", "remote_code", "argument_checks", "losses", "data", "metrics")
    importers = [
        source for source, arrows in graph.items()
        if f"{PACKAGE}.families" in arrows
        and any(source == f"{PACKAGE}.{layer}" or source.startswith(f"{PACKAGE}.{layer}.") for layer in below)
    ]
    assert importers == [], f"modules below the registry import it: {importers}"
