"""``python -m tools package mip``: package.json for MicroPython's package manager.

`mpremote mip install github:OWNER/REPO` (or `mip.install(...)` on a board online) reads
package.json at the root of the repository and installs each file it lists into the board's
/lib: here every file of the OTA client (onenet_ota), as source (for compiled .mpy on a
board, use `python -m tools deploy`). This command writes package.json from the client's
files and its version (`__version__`); --check only says whether package.json is up to date.

Exit status: 0 written (or up to date), 1 package.json is out of date (--check), 2 usage.
"""
import argparse
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "firmware" / "onenet_ota"
PACKAGE_JSON = REPO / "package.json"


def configure(parser: argparse.ArgumentParser):
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = __doc__.split("\n", 2)[2].strip()
    parser.add_argument("--check", action="store_true", help="do not write: exit 1 if package.json is out of date")


def version() -> str:
    import re

    text = (PACKAGE / "__init__.py").read_text()
    found = re.search(r"^__version__\s*=\s*[\"']([^\"']+)[\"']", text, re.M)
    if not found:
        raise ValueError("firmware/onenet_ota/__init__.py has no __version__")
    return found.group(1)


def expected() -> dict:
    """package.json as it must be: every module, /lib/onenet_ota/<name> <- its path in the repo."""
    modules = sorted(p.name for p in PACKAGE.glob("*.py"))
    return {
        "urls": [["onenet_ota/%s" % name, "firmware/onenet_ota/%s" % name] for name in modules],
        "deps": [],
        "version": version(),
    }


def render(content: dict) -> str:
    import json

    lines = ",\n".join("    " + json.dumps(entry) for entry in content["urls"])
    return '{\n  "urls": [\n%s\n  ],\n  "deps": %s,\n  "version": %s\n}\n' % (
        lines, json.dumps(content["deps"]), json.dumps(content["version"]))


def main(args) -> int:
    import json
    import sys

    want = expected()
    try:
        have = json.loads(PACKAGE_JSON.read_text())
    except (OSError, ValueError):
        have = None
    if args.check:
        if have == want:
            print("package.json is up to date: %d modules, version %s" % (len(want["urls"]), want["version"]))
            return 0
        print("package.json is out of date: run `python -m tools package mip`", file=sys.stderr)
        return 1
    PACKAGE_JSON.write_text(render(want))
    print("wrote %s: %d modules, version %s" % (PACKAGE_JSON.name, len(want["urls"]), want["version"]))
    return 0
