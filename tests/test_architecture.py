"""The shape of the house (docs/architecture.md), checked from the source: arrows point one way
(command line → analysis → experiments → balancers), no import circles, small modules and
functions. Reads the code with :mod:`ast`; imports nothing of the project."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: the layers, top first: a module may import its own layer and the layers below it
LAYERS = ["balancebench", "analysis", "experiments", "balancers"]
MAX_LINES, MAX_FUNCTION_LINES = 400, 60
#: ``"package.module:attribute"``: an import written as a string
_HIDDEN = re.compile(r"[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)+:[A-Za-z_][A-Za-z0-9_]*")

#: known offenders, to be emptied: (path, function or None for the file) -> why it is still here.
#: Empty when the house was built (issue 12); an entry needs a reason and is refused once stale.
ALLOWED_LONG: dict[tuple[str, str | None], str] = {
}


def _modules() -> dict[str, Path]:
    """Every project module by dotted name (packages by their name, ``__init__`` omitted)."""
    found = {}
    for top in LAYERS:
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imported_names(tree: ast.AST, module: str, is_package: bool) -> list[str]:
    """Dotted names this module imports (at any depth, lazily or not), minus ``TYPE_CHECKING``
    blocks; plus ``"pkg.module:attr"`` strings, a dependency hidden in a string (a lazy registry)."""
    names: list[str] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join(package + ([base] if base else []))
            names.extend(f"{base}.{alias.name}" for alias in node.names)
            names.append(base)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _HIDDEN.fullmatch(node.value):
            if node.value.split(".")[0] in LAYERS:
                names.append(node.value.split(":")[0])
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return names


def _resolve(name: str) -> str | None:
    """The project module a dotted import name lands in (``pkg.mod.attr`` -> ``pkg.mod``)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        targets = {_resolve(n) for n in _imported_names(tree, module, path.name == "__init__.py")}
        # importing a package's own submodule from its __init__ (or vice versa) is how packages
        # work; an edge to an enclosing package is not a dependency on its contents
        graph[module] = {t for t in targets if t and t != module and not module.startswith(t + ".")}
    return graph


GRAPH = _graph()


def _layer(module: str) -> int:
    return LAYERS.index(module.split(".")[0])


def test_the_walk_sees_the_house() -> None:
    """The checks below are only as good as the graph: it holds every room and real arrows."""
    for expected in ("balancebench.main", "experiments.training.trainer", "experiments.studies.driver",
                     "experiments.cost.timing", "experiments.benchmarks.qm9.benchmark", "analysis.report",
                     "balancers.famo"):
        assert expected in MODULES, expected
    assert "experiments.training.trainer" in GRAPH["experiments.studies.worker"]
    assert "balancers" in GRAPH["experiments.training.trainer"]
    assert "analysis.report" in GRAPH["balancebench.commands.demo"]
    assert "experiments.benchmarks.qm9" in GRAPH["experiments.benchmarks"]  # a registry string is an arrow


def test_arrows_point_one_way() -> None:
    """command line → analysis → experiments → balancers: never up; balancers import only
    themselves; nothing imports the command line."""
    upward = sorted(f"{m} -> {t}" for m, targets in GRAPH.items() for t in targets if _layer(t) < _layer(m))
    assert not upward, "imports against the arrows:\n" + "\n".join(upward)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
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
                    found.append(sorted(component))
    return found


def test_no_import_circles() -> None:
    """No two modules import each other, directly or round a longer circle (lazy imports count;
    ``if TYPE_CHECKING:`` imports do not)."""
    assert not _cycles(GRAPH), f"import circles: {_cycles(GRAPH)}"


def test_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def _too_long() -> dict[tuple[str, str | None], int]:
    long: dict[tuple[str, str | None], int] = {}
    for module, path in MODULES.items():
        rel = path.relative_to(ROOT).as_posix()
        text = path.read_text(encoding="utf-8")
        n_lines = len(text.splitlines())
        if n_lines > MAX_LINES:
            long[(rel, None)] = n_lines
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long[(rel, node.name)] = length
    return long


def test_modules_and_functions_are_small() -> None:
    """No module over MAX_LINES lines and no function over MAX_FUNCTION_LINES in any package of the
    house, except the listed allowances (which must still be needed)."""
    long = _too_long()
    new = {key: n for key, n in long.items() if key not in ALLOWED_LONG}
    assert not new, "split by responsibility (or, if it cannot wait, list in ALLOWED_LONG with why): " + str(new)
    stale = [key for key in ALLOWED_LONG if key not in long]
    assert not stale, f"these are small now: remove them from ALLOWED_LONG: {stale}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_module_says_what_it_is_for(module: str) -> None:
    """The first docstring line names the module's purpose."""
    path = MODULES[module]
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
    assert doc and doc.strip().splitlines()[0].strip(), f"{path.relative_to(ROOT)} has no module docstring"
