"""The package's modules import each other without cycles (type-only imports included)."""

from __future__ import annotations

import ast
from pathlib import Path

import aiothreads

PACKAGE = Path(aiothreads.__file__).parent


def module_name(path: Path) -> str:
    parts = ["aiothreads", *path.relative_to(PACKAGE).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """The package modules ``path`` imports, wherever the import statement is."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            target = node.module or ""
            if node.level:
                target = f"{base}.{target}" if target else base
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return {module for module in found if module in modules and module != name}


def import_graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(path) for path in paths}
    return {module_name(path): imported_modules(path, modules) for path in paths}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    visiting: list[str] = []
    done: set[str] = set()

    def visit(module: str) -> list[str] | None:
        if module in visiting:
            return [*visiting[visiting.index(module) :], module]
        if module in done:
            return None
        visiting.append(module)
        for target in sorted(graph[module]):
            cycle = visit(target)
            if cycle:
                return cycle
        visiting.pop()
        done.add(module)
        return None

    for module in sorted(graph):
        cycle = visit(module)
        if cycle:
            return cycle
    return None


def test_no_module_of_the_package_imports_itself_through_others() -> None:
    graph = {
        module: targets
        for module, targets in import_graph().items()
        # A package's __init__ re-exports its modules; they never import it back.
        if not module.endswith(("aiothreads", "instrumentation"))
    }
    graph = {module: targets & set(graph) for module, targets in graph.items()}
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def mutation_parts() -> dict[str, tuple[str, ...]]:
    """Read ``MUTATION_PARTS`` from the noxfile (without importing nox)."""
    noxfile = PACKAGE.parent / "noxfile.py"
    for node in ast.parse(noxfile.read_text()).body:
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", None) == "MUTATION_PARTS":
            assert node.value is not None
            parts: dict[str, tuple[str, ...]] = ast.literal_eval(node.value)
            return parts
    raise AssertionError("noxfile.py has no MUTATION_PARTS")


def test_the_mutation_parts_cover_every_module_but_the_demo_once() -> None:
    if not (PACKAGE.parent / "noxfile.py").exists():  # an installed wheel has no noxfile
        return
    modules = [
        module_name(path).removeprefix("aiothreads").removeprefix(".")
        for path in sorted(PACKAGE.rglob("*.py"))
        if "demo" not in path.relative_to(PACKAGE).parts
    ]
    listed = [module for part in mutation_parts().values() for module in part]
    assert sorted(listed) == sorted(modules)
