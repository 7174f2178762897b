"""The house: sim/ (the simulated board) imports nothing from tools/, and tools/ takes
nothing from host_tests/. The tools and the tests both import the board from sim/."""
import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def imported(path: Path):
    """Every module name an import statement in the file names, at any depth (the lazy
    imports inside functions too)."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.module


def test_sim_imports_nothing_from_tools():
    found = {(str(p.relative_to(REPO)), name) for p in (REPO / "sim").rglob("*.py")
             for name in imported(p) if name == "tools" or name.startswith("tools.")}
    assert not found


def test_importing_sim_loads_no_tools_module():
    code = ("import sys, sim, sim.micropython, sim.esp_image, sim.device\n"
            "print(sorted(m for m in sys.modules if m == 'tools' or m.startswith('tools.')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_tools_take_nothing_from_host_tests():
    found = [str(p.relative_to(REPO)) for p in (REPO / "tools").rglob("*.py") if "host_tests" in p.read_text()]
    assert not found
