"""The shape of firmware/onenet_ota, read from its import statements (the lazy ones inside
functions included): no circle, nothing imports upward, no module takes another's private
names. The floors are those of shared/DESIGN.md and README's module table: a module may
import from its own floor or any floor below it."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "firmware" / "onenet_ota"

# floor (higher imports lower) -> modules
FLOORS = {
    7: {"__init__", "config"},  # the entry points and the config they read
    6: {"cycle"},  # the one place that decides
    5: {"check", "confirm", "download", "image", "signature", "sota", "delta", "_deltav", "_xor"},  # phases
    4: {"south"},  # the platform object
    3: {"http", "_tls", "auth", "clock"},  # transport
    2: {"fota", "journal", "sota_boot"},  # storage
    1: {"codes"},  # facts
}
FLOOR = {name: floor for floor, names in FLOORS.items() for name in names}
MODULES = sorted(p.stem for p in PACKAGE.glob("*.py"))


def imports(name):
    """(module of the package it imports, names taken from it, line) for every import in
    module `name`. `from onenet_ota import x` takes module x when there is one."""
    tree = ast.parse((PACKAGE / (name + ".py")).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "onenet_ota":
                    yield (parts[1] if len(parts) > 1 else "__init__"), [], node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "onenet_ota":
            parts = node.module.split(".")
            if len(parts) > 1:
                yield parts[1], [a.name for a in node.names], node.lineno
            else:
                for alias in node.names:
                    if alias.name in MODULES:
                        yield alias.name, [], node.lineno
                    else:
                        yield "__init__", [alias.name], node.lineno


def graph():
    return {name: {target for target, _, _ in imports(name) if target != name} for name in MODULES}


def test_every_module_has_a_floor():
    assert sorted(FLOOR) == MODULES, "put a new module on its floor in FLOORS (and README's table)"


def test_no_circle():
    edges = graph()
    seen, path = set(), []

    def visit(name):
        if name in path:
            raise AssertionError("import circle: " + " -> ".join(path[path.index(name):] + [name]))
        if name in seen:
            return
        path.append(name)
        for target in sorted(edges[name]):
            visit(target)
        path.pop()
        seen.add(name)

    for name in MODULES:
        visit(name)


@pytest.mark.parametrize("name", MODULES)
def test_nothing_imports_upward(name):
    up = [(target, line) for target, _, line in imports(name) if FLOOR[target] > FLOOR[name]]
    assert not up, "%s (floor %d) imports from a floor above it: %s" % (name, FLOOR[name], up)


@pytest.mark.parametrize("name", MODULES)
def test_no_private_name_of_another_module(name):
    taken = [(target, n, line) for target, names, line in imports(name)
             for n in names if n.startswith("_") and target != name]
    tree = ast.parse((PACKAGE / (name + ".py")).read_text())
    reached = [(node.value.id, node.attr, node.lineno) for node in ast.walk(tree)
               if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
               and node.value.id in MODULES and node.attr.startswith("_") and not node.attr.startswith("__")]
    assert not taken and not reached, (taken, reached)


def test_the_check_finds_a_circle(tmp_path, monkeypatch):
    """The circle check itself: two modules that import each other fail it."""
    for n, other in (("a", "b"), ("b", "a")):
        (tmp_path / (n + ".py")).write_text("from onenet_ota import %s\n" % other)
    monkeypatch.setattr(__import__(__name__), "PACKAGE", tmp_path)
    monkeypatch.setattr(__import__(__name__), "MODULES", ["a", "b"])
    with pytest.raises(AssertionError, match="import circle: a -> b -> a"):
        test_no_circle()
