"""Run the unix port of MicroPython with the firmware and the board (sim/board/) on its path.

Used by the tests, the demo and the bench alike, so that every one of them runs the device
code the same way: ``MICROPYPATH`` replaces the whole path (frozen modules included), so
``.frozen`` is always kept last.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FIRMWARE = REPO / "firmware"
BOARD = Path(__file__).resolve().parent / "board"  # esp32, machine, network, _board, ...


def executable() -> str:
    """$MICROPYTHON if set (another build, e.g. a 32-bit one), else the `micropython` of the
    running venv, else whatever is on PATH."""
    chosen = os.environ.get("MICROPYTHON")
    if chosen:  # a path is made absolute: micropython runs in each device's directory
        return str(Path(chosen).resolve()) if os.sep in chosen else chosen
    here = Path(sys.executable).parent / "micropython"
    if here.exists():
        return str(here)
    found = shutil.which("micropython")
    if not found:
        raise FileNotFoundError("micropython not found: pip install -r requirements.txt")
    return found


# MP_NATIVE_ARCH_* (py/persistentcode.h): the arch bits of sys.implementation._mpy, by value
ARCHS = ("none", "x86", "x64", "armv6", "armv6m", "armv7m", "armv7em", "armv7emsp", "armv7emdp",
         "xtensa", "xtensawin", "rv32imc", "rv64imc")
_host = {}


_PROBE = """import sys
try:
    import onenet_ota
    frozen = True
except ImportError:
    frozen = False
print(sys.implementation._mpy >> 10, sys.maxsize > 2**32, frozen)"""


def host() -> dict:
    """The running micropython's native arch (an mpy-cross -march name), word size, and
    whether it has onenet_ota frozen in (a build with FROZEN_MANIFEST=manifest.py)."""
    key = executable()
    if key not in _host:
        out = subprocess.run([key, "-c", _PROBE], capture_output=True, text=True, timeout=30, cwd="/",
                             env=dict(os.environ, MICROPYPATH=".frozen")).stdout.split()
        _host[key] = {"arch": ARCHS[int(out[0])], "bits": 64 if out[1] == "True" else 32,
                      "frozen": out[2] == "True"}
    return _host[key]


def micropypath(*extra) -> str:
    """The device path: extra dirs first (e.g. compiled .mpy), then firmware/, sim/board/, frozen.
    A build with the package frozen in runs that: firmware/ is left out."""
    parts = [str(p) for p in extra] + [str(FIRMWARE)] * (not host()["frozen"]) + [str(BOARD), ".frozen"]
    return os.pathsep.join(parts)


def command(args, heapsize=None):
    cmd = [executable()]
    if heapsize:
        cmd += ["-X", "heapsize=%s" % heapsize]
    return cmd + list(args)


def environment(path=None, env=None) -> dict:
    full = dict(os.environ)
    full["MICROPYPATH"] = path or micropypath()
    if env:
        full.update({k: str(v) for k, v in env.items()})
    return full


def run(args, *, heapsize=None, path=None, env=None, cwd=None, timeout=60, input=None):
    """Run micropython to completion; returns subprocess.CompletedProcess (text output)."""
    return subprocess.run(
        command(args, heapsize), env=environment(path, env), cwd=cwd, timeout=timeout,
        input=input, capture_output=True, text=True, errors="backslashreplace",
    )


def start(args, *, heapsize=None, path=None, env=None, cwd=None):
    """Start micropython in the background (stdout and stderr merged, line by line)."""
    return subprocess.Popen(
        command(args, heapsize), env=environment(path, env), cwd=cwd,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="backslashreplace", bufsize=1,
    )
