"""`python -m tools port`: what it refuses before building, and that its build writes only
under --out (the source tree may be read-only). The build itself runs in CI when a
MicroPython source tree is at hand (.ci/run)."""
import subprocess
import sys

from conftest import REPO
from tools import port


def run_port(*args):
    return subprocess.run([sys.executable, "-m", "tools", "port", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def source_tree(root, axtls=True):
    (root / "py").mkdir(parents=True)
    (root / "py" / "mpconfig.h").write_text("")
    (root / "ports" / "unix").mkdir(parents=True)
    (root / "ports" / "unix" / "Makefile").write_text("")
    (root / "lib" / "axtls").mkdir(parents=True)
    if axtls:
        (root / "lib" / "axtls" / "Makefile").write_text("")
    return root


def test_not_a_source_tree(tmp_path):
    result = run_port("--source", str(tmp_path), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "is not a MicroPython source tree" in result.stderr
    assert not (tmp_path / "out").exists()


def test_empty_axtls_says_which_submodule(tmp_path):
    src = source_tree(tmp_path / "mp", axtls=False)
    result = run_port("--source", str(src))
    assert result.returncode == 2
    assert "submodule update --init lib/axtls" in result.stderr


def test_frozen_needs_micropython_lib(tmp_path, monkeypatch):
    src = source_tree(tmp_path / "mp")
    monkeypatch.setattr("shutil.which", lambda name: "/usr/bin/" + name)  # as if the compiler were there
    assert port.missing(src) is None

    class Args:
        source, out, frozen = str(src), str(tmp_path / "out"), True

    assert port.main(Args) == 2
    assert not (tmp_path / "out").exists()


def test_build_writes_only_under_out(tmp_path):
    src, out = tmp_path / "mp", tmp_path / "out"
    for frozen in (False, True):
        cross, unix = port.build(src, out, frozen)
        assert cross[:3] == ["make", "-C", str(src / "mpy-cross")]
        assert unix[:3] == ["make", "-C", str(src / "ports" / "unix")]
        builds = [arg.split("=", 1)[1] for arg in cross + unix if arg.startswith(("BUILD=", "MICROPY_MPYCROSS="))]
        assert len(builds) == 3 and all(path.startswith(str(out) + "/") for path in builds)
        assert "CROSS_COMPILE=i686-linux-gnu-" in unix
        assert ("FROZEN_MANIFEST=%s" % (REPO / "manifest.py") in unix) == frozen
        assert ("FROZEN_MANIFEST=" in unix) != frozen
