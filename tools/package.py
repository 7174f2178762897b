"""``python -m tools package <kind>``: make or check the packages a device gets.

Makes or checks what you upload to OneNET (or publish) for the devices, and prints the size
and MD5 the platform will show for it, to compare with the console:

  fota   check an ESP32 app image (the .bin of a firmware build) for a firmware (FOTA) task
  delta  make a differential firmware package from the image the boards run to a new one
  app    make an application (SOTA) bundle from a folder, or check one made elsewhere
  mip    write or check package.json, for `mpremote mip install`

`python -m tools package <kind> --help` gives the options of each.

Exit status of every kind: 0 ok, 1 the package was refused (the reason is printed), 2 usage.
"""
# Each kind: tools/package_<kind>.py with configure(parser) and main(args) -> int, listed in
# SUBCOMMANDS below.
import argparse
import importlib

SUBCOMMANDS = {
    "fota": ("tools.package_fota", "check an ESP32 app image for a firmware (FOTA) task; print its size and MD5"),
    "delta": ("tools.package_delta", "make a differential firmware package (detools patch) from OLD.bin to NEW.bin"),
    "app": ("tools.package_app", "make an application (SOTA) bundle from a folder: tar + manifest, optionally gzip/zlib"),
    "mip": ("tools.package_mip", "write (or --check) package.json, so `mpremote mip install` gets the whole client"),
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
