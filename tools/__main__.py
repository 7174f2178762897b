"""``python -m tools <command>``: the one entry point of the host tools.

Each command lives in its own module exposing ``configure(parser)`` and ``main(args) -> int``;
command modules keep heavy imports inside ``main()``, so ``--help`` stays fast.
"""
import argparse
import importlib
import sys

# command -> (module, one-line summary)
COMMANDS = {
    "serve": ("tools.serve", "run the mock OneNET platform standalone (a board on the LAN can upgrade from it)"),
    "demo": ("tools.demo", "watch a whole firmware upgrade on this machine: mock platform, fake ESP32, unix MicroPython"),
    "deploy": ("tools.deploy", "put the OTA client on a board through mpremote (compiled .mpy, boot.py, main.py, config)"),
    "package": ("tools.package", "check and describe packages for OneNET (size and MD5 as the platform shows them)"),
    "token": ("tools.token", "print an Authorization header for OneNET, to try the real platform with curl"),
    "bench": ("tools.bench", "measure download throughput against a raw-socket baseline, the heap floor, per-download counts"),
    "campaign": ("tools.campaign", "randomised fault and power-cut campaign: many upgrades, every invariant checked"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tools",
        description="Host tools for the OneNET OTA client for MicroPython: a mock OneNET platform, "
                    "packaging, deploy to a board, a demo, a benchmark and a fault campaign.",
        epilog="`python -m tools <command> --help` gives the options of each command. Exit status: "
               "the command's own (0 success; see its --help), 2 for a usage error.",
    )
    sub = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    for name, (module, summary) in COMMANDS.items():
        cmd = sub.add_parser(name, help=summary, description=summary)
        cmd.set_defaults(_module=module)
        importlib.import_module(module).configure(cmd)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return importlib.import_module(args._module).main(args)


if __name__ == "__main__":
    sys.exit(main())
