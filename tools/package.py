"""``python -m tools package <kind>``: make or check the packages a device gets.

Each kind is its own module, listed in SUBCOMMANDS (kind -> (module, one-line summary)); a
module exposes ``configure(parser)`` and ``main(args) -> int`` like a top-level command and
keeps its heavy imports inside ``main()``. To add one (e.g. ``app`` or ``delta``), write
``tools/package_<kind>.py`` and add a line here.

Exit status of every kind: 0 ok, 1 the package was refused (the reason is printed), 2 usage.
"""
import argparse
import importlib

SUBCOMMANDS = {
    "fota": ("tools.package_fota", "check an ESP32 app image for a firmware (FOTA) task; print its size and MD5"),
    "delta": ("tools.package_delta", "make a differential firmware package (detools patch) from OLD.bin to NEW.bin"),
    "app": ("tools.package_app", "make an application (SOTA) bundle from a folder: tar + manifest, optionally gzip/zlib"),
    "mip": ("tools.package_mip", "write (or --check) package.json, so `mpremote mip install` gets every module"),
}


def configure(parser: argparse.ArgumentParser):
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = __doc__.split("\n", 2)[2].strip()
    sub = parser.add_subparsers(dest="kind", metavar="<kind>", required=True)
    for name, (module, summary) in SUBCOMMANDS.items():
        cmd = sub.add_parser(name, help=summary, description=summary)
        cmd.set_defaults(_package_module=module)
        importlib.import_module(module).configure(cmd)


def main(args) -> int:
    return importlib.import_module(args._package_module).main(args)
