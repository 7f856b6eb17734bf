"""The package's architecture, checked on its source: every internal import names a module that exists,
no module imports from a layer above its own (nor from a sibling package of its layer), and the import
graph has no cycle (imports inside functions count too)."""

import ast
from pathlib import Path

import functional_heads

ROOT = Path(functional_heads.__file__).parent
PACKAGE = "functional_heads"
# bottom to top; packages of one layer do not import each other
LAYERS = [("utils",), ("models",), ("core",), ("evaluation", "testbed"), ("tuning",), ("apps", "integrations"),
          ("",)]  # "": the package root, the public face
RANK = {package: rank for rank, packages in enumerate(LAYERS) for package in packages}


def module_names() -> dict[str, Path]:
    names = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        parts = parts[:-1] if parts[-1] == "__init__" else parts
        names[".".join((PACKAGE,) + parts)] = path
    return names


def imports(name: str, path: Path, modules: dict) -> set[str]:
    """The internal modules `name` imports: `from a import b` counts as a.b when that is a module."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith(PACKAGE)}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith(PACKAGE):
                continue
            for alias in node.names:
                found.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in modules else target)
    return found


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def graph() -> dict[str, set[str]]:
    modules = module_names()
    return {name: imports(name, path, modules) for name, path in modules.items()}


def test_every_internal_import_names_an_existing_module():
    modules = module_names()
    missing = {(name, target) for name, targets in graph().items() for target in targets if target not in modules}
    assert not missing


def test_no_module_imports_from_a_layer_above_its_own_or_a_sibling_package():
    wrong = []
    for name, targets in graph().items():
        own = layer_of(name)
        for target in targets:
            other = layer_of(target)
            if other != own and RANK[other] >= RANK[own]:
                wrong.append(f"{name} -> {target}")
    assert not wrong, "imports against the layers:\n" + "\n".join(sorted(wrong))


def test_every_package_has_a_layer():
    assert {layer_of(name) for name in module_names()} <= set(RANK)


def test_the_import_graph_has_no_cycle():
    edges = graph()
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        stack.append(node)
        for target in sorted(edges.get(node, ())):
            if state.get(target) == "open":
                cycles.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target, stack)
        stack.pop()
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_checks_see_a_wrong_import(tmp_path):
    """The graph reader finds relative, absolute and in-function imports (a check that cannot fail is none)."""
    source = tmp_path / "probe.py"
    source.write_text("from ..apps import cli\ndef f():\n    from functional_heads.tuning import study\n")
    found = imports(f"{PACKAGE}.core.probe", source, module_names())
    assert found == {f"{PACKAGE}.apps.cli", f"{PACKAGE}.tuning.study"}


def test_every_public_name_of_a_lazy_package_resolves():
    """The packages' public names are imported when first used (utils/lazy.py): each must exist."""
    import functional_heads.evaluation

    for package in (functional_heads, functional_heads.evaluation):
        assert package.__all__ and all(getattr(package, name) is not None for name in package.__all__)
        assert set(package.__all__) <= set(dir(package))
