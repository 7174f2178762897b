"""``python -m tools port --source DIR``: build MicroPython's unix port at the ESP32's word size.

The PyPI ``micropython`` is 64-bit: 8-byte pointers and 32-byte GC blocks, where an ESP32 has
4 and 16, so its heap figures are about 1.4 times a board's. This builds the same port for
32-bit x86 (``i686-linux-gnu-gcc``) from a MicroPython source tree, with mpy-cross next to it,
for the memory tests and the bench::

    MICROPYTHON=OUT/micropython MPY_CROSS=OUT/mpy-cross ./run tests host_tests/test_fota_memory.py

``--frozen`` freezes this project's package into it (``manifest.py``): the heap of a product
that freezes the client. Everything is built under OUT; the source tree is only read, so it
may be read-only.

Needs the source tree with ``lib/axtls`` (``hashlib.md5`` without mbedtls) and, with
``--frozen``, ``lib/micropython-lib`` (``git -C DIR submodule update --init lib/axtls
lib/micropython-lib``), and Debian's ``gcc-i686-linux-gnu``.

Exit status: 0 built (the last line names both binaries), 1 the build failed, 2 something it
needs is missing (the message says what).
"""
from __future__ import annotations

import argparse

REPO_MANIFEST = "manifest.py"
# a 32-bit unix port without the parts this project does not use and that need 32-bit
# system libraries (libffi, Berkeley DB); TLS from axtls, as the source ships it
PORT_FLAGS = ("CROSS_COMPILE=i686-linux-gnu-", "MICROPY_PY_FFI=0", "MICROPY_PY_BTREE=0", "MICROPY_PY_SSL=1",
              "MICROPY_SSL_AXTLS=1", "MICROPY_SSL_MBEDTLS=0")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", required=True, help="a MicroPython source tree (git clone of micropython)")
    parser.add_argument("--out", default=".port32", help="where to build and put the binaries (default .port32)")
    parser.add_argument("--frozen", action="store_true", help="freeze this project's package into the port")


def missing(src) -> str | None:
    """What the build needs and does not have, as a message; None when all is there."""
    import shutil

    if not (src / "py" / "mpconfig.h").is_file() or not (src / "ports" / "unix" / "Makefile").is_file():
        return "%s is not a MicroPython source tree (no py/mpconfig.h or ports/unix/Makefile)" % src
    if not any((src / "lib" / "axtls").glob("*")):
        return "lib/axtls is empty: git -C %s submodule update --init lib/axtls" % src
    if not shutil.which("i686-linux-gnu-gcc"):
        return "no i686-linux-gnu-gcc: apt-get install gcc-i686-linux-gnu"
    return None


def build(src, out, frozen: bool) -> list[str]:
    """The make commands, in order: mpy-cross, then the port; every output under `out`."""
    from tools.firmware import REPO

    cross = out / "build-mpy-cross"
    port = out / ("build-frozen" if frozen else "build-standard")
    if frozen:
        freeze = ["FROZEN_MANIFEST=%s" % (REPO / REPO_MANIFEST), "MPY_CROSS_FLAGS=-march=x86",
                  "MPY_LIB_DIR=%s" % (src / "lib" / "micropython-lib")]
    else:
        freeze = ["FROZEN_MANIFEST="]
    return [
        ["make", "-C", str(src / "mpy-cross"), "-j2", "BUILD=%s" % cross],
        ["make", "-C", str(src / "ports" / "unix"), "-j2", "BUILD=%s" % port, *PORT_FLAGS, *freeze,
         "MICROPY_MPYCROSS=%s" % (cross / "mpy-cross"), "MICROPY_MPYCROSS_DEPENDENCY="],
    ]


def main(args) -> int:
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    src = Path(args.source).resolve()
    out = Path(args.out).resolve()
    problem = missing(src)
    if not problem and args.frozen and not (src / "lib" / "micropython-lib" / "README.md").is_file():
        problem = "lib/micropython-lib is empty: git -C %s submodule update --init lib/micropython-lib" % src
    if problem:
        print("port: " + problem, file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    log = out / "build.log"
    with open(log, "w") as f:
        for cmd in build(src, out, args.frozen):
            print("port: " + " ".join(cmd), flush=True)
            if subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT).returncode:
                print("port: the build failed, see %s" % log, file=sys.stderr)
                return 1
    built = out / ("build-frozen" if args.frozen else "build-standard") / "micropython"
    micropython = out / ("micropython-frozen" if args.frozen else "micropython")
    mpy_cross = out / "mpy-cross"
    shutil.copy(built, micropython)
    shutil.copy(out / "build-mpy-cross" / "mpy-cross", mpy_cross)
    probe = subprocess.run([str(micropython), "-c", "import sys; print(sys.maxsize)"],
                           capture_output=True, text=True)
    if probe.stdout.strip() != str(2**31 - 1):
        print("port: %s is not a 32-bit micropython: %s" % (micropython, (probe.stdout + probe.stderr).strip()),
              file=sys.stderr)
        return 1
    print("MICROPYTHON=%s MPY_CROSS=%s" % (micropython, mpy_cross))
    return 0
