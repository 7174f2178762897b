"""MicroPython's conventions: package.json lists exactly the modules of firmware/onenet_ota, so
`mpremote mip install github:OWNER/REPO` gets all of them (checked here by installing from the
file through mpremote into the unix micropython on a pty), and manifest.py freezes the same
package."""
import json
import subprocess
import sys

from conftest import REPO
from ptyboard import PtyBoard

PACKAGE = REPO / "firmware" / "onenet_ota"
FIX = "run `python -m tools package mip` to rewrite package.json"


def modules():
    return sorted(p.name for p in PACKAGE.glob("*.py"))


def version():
    from tools.package_mip import version

    return version()


def test_package_json_lists_every_module_and_nothing_else():
    content = json.loads((REPO / "package.json").read_text())
    listed = {target: source for target, source in content["urls"]}
    assert len(listed) == len(content["urls"]), "a module listed twice"
    missing = sorted(set(modules()) - {t.split("/", 1)[1] for t in listed})
    extra = sorted({t.split("/", 1)[1] for t in listed} - set(modules()))
    assert not missing and not extra, "package.json: missing %s, not in firmware/ %s: %s" % (missing, extra, FIX)
    for target, source in listed.items():
        name = target.split("/", 1)[1]
        assert target == "onenet_ota/" + name, "installs to /lib/onenet_ota/<module>"
        assert source == "firmware/onenet_ota/" + name, "a URL relative to package.json"
        assert (REPO / source).is_file()
    assert content["version"] == version(), "package.json version is not onenet_ota.__version__: " + FIX
    assert content.get("deps", []) == []


def test_package_mip_check_agrees():
    result = subprocess.run([sys.executable, "-m", "tools", "package", "mip", "--check"], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_mip_install_from_package_json(tmp_path):
    board = PtyBoard(tmp_path / "board")
    try:
        result = subprocess.run(
            [sys.executable, "-m", "mpremote", "connect", board.port, "resume",
             "mip", "install", "--target", "lib", str(REPO / "package.json")],
            cwd=REPO, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
        installed = sorted(p.name for p in (board.fs / "lib" / "onenet_ota").iterdir())
        assert installed == modules()
        out = board.exec("import onenet_ota; print(onenet_ota.__file__, onenet_ota.__version__)")
        assert out.split() == ["lib/onenet_ota/__init__.py", version()]
    finally:
        board.close()


def test_manifest_freezes_the_package():
    """Run manifest.py as MicroPython's makemanifest does, with its functions recorded."""
    calls = []

    def record(name):
        return lambda *args, **kw: calls.append((name, args, kw))

    names = ("metadata", "package", "module", "require", "include", "freeze")
    exec((REPO / "manifest.py").read_text(), {n: record(n) for n in names})
    packages = [(args, kw) for name, args, kw in calls if name == "package"]
    assert packages == [(("onenet_ota",), {"base_path": "firmware"})]
    assert (REPO / "firmware" / "onenet_ota" / "__init__.py").is_file()
    meta = [kw for name, _, kw in calls if name == "metadata"]
    assert meta and meta[0]["version"] == version()
    assert not [name for name, _, _ in calls if name not in ("metadata", "package")]
