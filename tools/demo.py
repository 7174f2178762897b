"""``python -m tools demo``: a whole firmware upgrade on this machine, as a user would watch it.

A freshly built ESP32 app image (version 1.1) is put on a mock OneNET platform as an upgrade
task for a fake ESP32 (4 MiB flash, OTA partitions, ESP-IDF's bootloader with rollback) that
runs 1.0. The fake device runs this project's boot.py/main.py and firmware/ (compiled to .mpy)
on the unix port of MicroPython. The demo shows the download progress, the platform's view
of the task (states, progress steps, reports and the errno it answered), the reset into the
new firmware, the confirmation, and the version that runs at the end.

Scenarios:
  upgrade   download, switch, reboot, confirm: the device ends on 1.1, the task completed
  powercut  the power dies in the middle of the download; after the reboot the download
            resumes where the flash journal says the bytes are safe, then the upgrade ends
            as above
  corrupt   the platform flips one byte of the package: the device reports 205 (MD5),
            never switches, and keeps running 1.0
  sota      an application (SOTA) upgrade instead: the bundle is staged, unpacked,
            swapped in, started on trial and confirmed (201)

Exit status: 0 when the scenario ended as expected, 1 when it did not, 2 for a usage error.
"""
from __future__ import annotations

import argparse

DEV_ID = "20001"
UNIQUE_ID = "a0b1c2d3e4f5"
OLD, NEW = "1.0", "1.1"
FRAGMENT = 16 * 1024
SCENARIOS = ("upgrade", "powercut", "corrupt", "sota")


def configure(parser: argparse.ArgumentParser):
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = __doc__.split("\n", 2)[2].strip()
    parser.add_argument("--scenario", choices=SCENARIOS, default="upgrade",
                        help="what to show (default: %(default)s)")
    parser.add_argument("--size", type=int, default=384, metavar="KIB",
                        help="size of the new firmware image in KiB (default %(default)s)")
    parser.add_argument("--cut-at", type=int, default=55, metavar="PERCENT",
                        help="powercut: where in the download the power dies (default %(default)s%%)")
    parser.add_argument("--pace", type=float, default=None, metavar="SECONDS",
                        help="spread the download over about this long, so the bar can be watched "
                             "(default: 2 on a terminal, 0 otherwise)")
    parser.add_argument("--keep", metavar="DIR",
                        help="build the fake device in DIR (new or empty) and leave it there: "
                             "flash.bin, bootloader.log, fs/ with boot.py, main.py, ota_config.json")
    parser.add_argument("--fault", action="append", default=[], metavar="NAME[=ARGS]",
                        help="switch a fault of the mock platform on, as `python -m tools serve --fault` "
                             "(repeatable): e.g. drop=100000 (the upgrade still completes) or wrong-md5 "
                             "(it does not, and the demo says FAIL)")
    parser.add_argument("--verbose", "-v", action="store_true",
                        help="also show every request the platform answers")


def main(args) -> int:
    import sys

    if not 16 <= args.size <= 1536:
        print("demo: --size must be 16..1536 KiB (an OTA slot holds 1.5 MiB)", file=sys.stderr)
        return 2
    if not 1 <= args.cut_at <= 99:
        print("demo: --cut-at must be 1..99 (percent of the download)", file=sys.stderr)
        return 2
    from tools.mockplatform import Faults

    for fault in args.fault:
        name, _, arg = fault.partition("=")
        try:
            if name != "expire-token":
                Faults().set(name, arg or None)
        except (ValueError, IndexError) as error:
            print("demo: --fault %s: %s" % (fault, error), file=sys.stderr)
            return 2
    return Demo(args).run()


class Demo:
    def __init__(self, args):
        import threading

        from rich.console import Console

        self.args = args
        self.console = Console(highlight=False)
        self.lock = threading.RLock()
        self.task = None
        self.platform = None
        self.bar = None          # rich Progress of the download in the current boot
        self.bar_id = None
        self.position = 0        # end of the last download request answered
        self.resumes = []        # Range starts below what had been served (after a cut)
        self.downloads = []      # (connection, start, end, status, note) of every download answered
        self.boot_number = 0
        self._seen_requests = set()
        self._seen_log = 0

    # ---- output -----------------------------------------------------------------------------

    def say(self, who, text, style=""):
        from rich.markup import escape

        label = {"platform": "cyan", "device": "green", "boot": "magenta", "demo": "bold"}.get(who, "")
        line = "[%s]%-8s[/]│ %s" % (label, who, ("[%s]%s[/]" % (style, escape(text))) if style else escape(text))
        self.console.print(line, soft_wrap=True)

    def header(self, text):
        self.console.rule("[bold]%s" % text, align="left")

    # ---- the platform's view, from its log callback (server thread) --------------------------

    def on_platform(self, line):
        with self.lock:
            if line.startswith("[conn "):
                self._answered(int(line[6:line.index("]")]))
            elif line.startswith("task ") and "->" in line and self.task is not None:
                self._new_states()

    def _new_states(self):
        log = self.task.log
        while self._seen_log < len(log):
            _, state, reason = log[self._seen_log]
            before = log[self._seen_log - 1][1] if self._seen_log else None
            self._seen_log += 1
            if before is None:
                continue
            self.say("platform", "task %d: %s -> %s (%s)" % (self.task.id, before, state, reason), "bold cyan")

    def _answered(self, connection):
        """The request on `connection` that was just answered: the oldest one not yet shown."""
        for index, request in enumerate(self.platform.requests):
            if index not in self._seen_requests and request.connection == connection:
                self._seen_requests.add(index)
                self._show(request)
                return

    def _show(self, request):
        import json

        from tools.mockplatform.download import parse_range

        errno = request.errno
        answer = "" if errno is None else " -> errno %d%s" % (errno, " (ok)" if errno == 0 else "")
        if request.note:
            answer += " [%s]" % request.note
        if request.endpoint == "download":
            self._download(request, parse_range(request.headers.get("range"), self.task.size))
        elif request.endpoint in ("progress", "report"):
            try:
                body = json.loads(request.body or b"{}")
                value = body.get("step", body.get("result"))
            except ValueError:
                value = None
            if request.endpoint == "progress" and isinstance(value, int) and value <= 100:
                self.say("platform", "progress %d%% received%s" % (value, answer), "cyan")
            else:
                self.say("platform", "report %s (%s) received%s" % (value, REPORT_CODES.get(value, "?"), answer),
                         "bold cyan" if errno == 0 else "bold red")
        elif request.endpoint == "check" and errno == 4:
            self.say("platform", "check: no task for this device%s" % answer.split(" [")[0], "dim")
        elif self.args.verbose or (errno not in (None, 0)):
            self.say("platform", "%s %s -> %s%s" % (request.method, request.path, request.status, answer), "dim")
        elif request.endpoint == "check":
            self.say("platform", "check: task %d offered (%s -> %s, %d bytes)%s" % (
                self.task.id, request.query.get("version", "?"), self.task.target, self.task.size, answer), "dim")
        elif request.endpoint in ("version_report", "tasking", "token_check"):
            what = {"version_report": "version report", "tasking": "task in progress asked",
                    "token_check": "token checked"}[request.endpoint]
            self.say("platform", "%s%s" % (what, answer), "dim")

    def _download(self, request, byte_range):
        start, end = byte_range if byte_range else (0, self.task.size - 1)
        self.downloads.append((request.connection, start, end, request.status, request.note))
        if self.args.verbose:
            self.say("platform", "download Range %s -> %s" % (request.headers.get("range"), request.status), "dim")
        if self.bar is None:
            self._start_bar(start)
        if start < self.position:
            self.resumes.append(start)
            if start:
                self.say("platform", "download resumes: Range: %s (the first %d bytes are in the device's "
                         "flash already and are not fetched again)" % (request.headers.get("range"), start),
                         "bold yellow")
            else:
                self.say("platform", "download starts over: Range: %s (no fragment was safely in flash)"
                         % request.headers.get("range"), "bold yellow")
        self.position = end + 1
        self.bar.update(self.bar_id, completed=self.position)

    def _start_bar(self, start):
        from rich.progress import (BarColumn, DownloadColumn, Progress, TaskProgressColumn,
                                   TextColumn, TransferSpeedColumn)

        self.bar = Progress(TextColumn("[bold blue]download"), BarColumn(), TaskProgressColumn(),
                            DownloadColumn(binary_units=True), TransferSpeedColumn(),
                            console=self.console)
        self.bar_id = self.bar.add_task("download", total=self.task.size, completed=start)
        self.bar.start()

    def _stop_bar(self):
        with self.lock:
            if self.bar is not None:
                self.bar.stop()
                self.bar = None

    # ---- the run -----------------------------------------------------------------------------

    def run(self) -> int:
        import shutil
        import sys
        import tempfile
        from pathlib import Path

        args = self.args
        if args.keep:
            root = Path(args.keep)
            if root.exists() and any(root.iterdir()):
                print("demo: --keep %s: the directory is not empty" % root, file=sys.stderr)
                return 2
            return self._run(root)
        root = Path(tempfile.mkdtemp(prefix="onenet-ota-demo-"))
        try:
            return self._run(root / "device")
        finally:
            shutil.rmtree(root, ignore_errors=True)

    def _run(self, root) -> int:
        import sys
        import time

        from tools import firmware
        from sim.device import Device
        from sim.esp_image import build_app_image
        from tools.mockplatform import DEFAULT_ACCESS_KEY, DEFAULT_PRODUCT_ID, MockPlatform

        args = self.args
        started = time.monotonic()
        self.header("OneNET OTA demo: scenario %s" % args.scenario)
        old = build_app_image(OLD, 256 * 1024)
        new = build_app_image(NEW, args.size * 1024)
        device = Device(root, image=old)
        self.device = device
        self.say("demo", "fake ESP32 in %s: 4 MiB flash, ota_0 holds firmware %s (%d bytes)" % (root, OLD, len(old)))
        mpy = root / "mpy"
        firmware.compile_package(mpy)
        self.say("demo", "firmware/ compiled to .mpy (mpy-cross), as a board gets it")

        self.platform = MockPlatform(DEFAULT_PRODUCT_ID, DEFAULT_ACCESS_KEY, log=self.on_platform)
        self.platform.start()
        try:
            self.platform.add_device(DEV_ID, unique_id=UNIQUE_ID, f_version=OLD)
            if args.scenario == "sota":
                new = self._application(device)
                self.task = self.platform.add_task(DEV_ID, new, NEW, ota_type=2, retry=3, interval=0)
            else:
                self.task = self.platform.add_task(DEV_ID, new, NEW, retry=3, interval=0)
            self._seen_log = len(self.task.log)
            self.say("platform", "mock OneNET on %s: product %s, device %s" % (
                self.platform.url, self.platform.product_id, DEV_ID))
            self.say("platform", "task %d created: %s %s -> %s, package %d bytes, md5 %s" % (
                self.task.id, "SOTA" if args.scenario == "sota" else "FOTA", OLD, NEW, self.task.size,
                self.task.md5), "bold cyan")
            self._faults(len(new))
            firmware.install(device.fs, self.platform.device_config(  # "https": false: the plain mock
                DEV_ID, timeout=5, fragment_size=FRAGMENT, progress_step=10))
            ok, verdict = getattr(self, "scenario_" + args.scenario)(mpy, old, new)
        except Exception as error:  # noqa: BLE001 - the verdict line must always come
            import traceback

            traceback.print_exc()
            ok, verdict = False, "the demo itself failed: %s: %s" % (type(error).__name__, error)
        finally:
            self._stop_bar()
            self.platform.stop()
        if self.platform.errors:
            ok, verdict = False, "the mock platform failed: %r" % (self.platform.errors,)
        if args.keep:
            self.say("demo", "the device is kept in %s" % root)
        self.header("verdict")
        self.console.print("%s %s: %s (%.1f s)" % ("PASS" if ok else "FAIL", args.scenario, verdict,
                                                   time.monotonic() - started),
                           style="bold green" if ok else "bold red", soft_wrap=True, markup=False)
        sys.stdout.flush()
        return 0 if ok else 1

    def _faults(self, size):
        pace = self.args.pace
        if pace is None:
            pace = 2.0 if self.console.is_terminal else 0.0
        if pace > 0:
            offsets = list(range(FRAGMENT, size, FRAGMENT))
            for offset in offsets:
                self.platform.set_fault("stall-body", (offset, pace / max(1, len(offsets))))
        for fault in self.args.fault:
            name, _, arg = fault.partition("=")
            self.platform.set_fault(name, arg or None)
            self.say("platform", "fault switched on: %s" % fault, "yellow")
        if self.args.scenario == "corrupt":
            offset = size // 2 + 1234
            self.platform.set_fault("corrupt", [offset])
            self.say("platform", "fault switched on: the byte at offset %d of the package is flipped "
                     "in everything served" % offset, "yellow")

    def boot(self, mpy, cut=None):
        """One reset of the device: bootloader, boot.py, main.py. Returns the BootResult and
        the device's output lines."""
        self.boot_number += 1
        self.first_connection = self.platform.connections + 1
        self.header("boot %d" % self.boot_number)
        running = self.device.start(extra_path=(mpy,), cut=cut)
        for line in running.result.bootlog:
            self.say("boot", "bootloader: " + line, "magenta")
        slot = running.result.slot
        pending = [e for e in self.device.boot_state() if e["slot"] == slot and e["state_name"] == "PENDING_VERIFY"]
        self.say("boot", "running %s from %s%s" % (
            self.version_in(slot), slot, " (PENDING_VERIFY: it must confirm itself before the next reset,"
            " or the bootloader rolls back)" if pending else ""), "bold magenta")
        lines = []
        for line in running.proc.stdout:
            line = line.rstrip("\n")
            if not line:
                continue
            lines.append(line)
            self.say("device", line, "green" if not line.startswith("ota: failed") else "bold red")
        result = running.wait(timeout=60)
        self._stop_bar()
        return result, lines

    def version_in(self, slot):
        from sim.esp_image import app_version

        try:
            return app_version(self.device.slot_image(slot))
        except (ValueError, KeyError):
            return "nothing bootable"

    def ending(self, result):
        """What runs now, as the bootloader and otadata say."""
        from sim.device import RESET_EXIT

        if result.returncode == RESET_EXIT:
            self.say("boot", "machine.reset(): the bootloader takes over", "bold magenta")
        slot = self.device.running_slot()
        state = [e for e in self.device.boot_state() if e["slot"] == slot and e["valid"]]
        return slot, self.version_in(slot), state[0]["state_name"] if state else "none"

    def final(self):
        slot = self.device.running_slot()
        version = self.version_in(slot)
        entries = [e for e in self.device.boot_state() if e["valid"] and e["slot"] == slot]
        state = entries[0]["state_name"] if entries else "factory (no otadata entry)"
        self.header("end")
        self.say("demo", "the device runs firmware %s from %s (otadata: %s)" % (version, slot, state), "bold")
        self.say("platform", "task %d: %s; states %s; reports %s" % (
            self.task.id, self.task.state, " -> ".join(self.task.history),
            ", ".join("%d (errno %d)" % r for r in self.task.reports) or "none"), "bold cyan")
        return slot, version, state

    def _application(self, device):
        """Install application 1.0 in the device's app/ and return the bundle of 1.1."""
        from tools.package_app import build, manifest

        old = {"main.py": b'print("application %s running")\n' % OLD.encode()}
        app = device.fs / "app"
        app.mkdir(parents=True, exist_ok=True)
        (app / "main.py").write_bytes(old["main.py"])
        (app / "manifest.json").write_bytes(manifest(old, OLD))
        new = {"main.py": b'import screen\nprint("application %s running:", screen.GREETING)\n' % NEW.encode(),
               "screen.py": b'GREETING = "hello from the new application"\n'}
        self.say("demo", "app/ holds application %s; the platform gets a gzip bundle of %s (%s)" % (
            OLD, NEW, ", ".join(sorted(new))))
        return build(new, NEW, how="gzip")

    # ---- scenarios: each returns (ok, one-line verdict) ----------------------------------------

    def scenario_sota(self, mpy, old, new):
        from sim.device import RESET_EXIT

        first, _ = self.boot(mpy)
        if first.returncode != RESET_EXIT:
            return False, "the first boot did not swap in the new application (exit %s)" % first.returncode
        self.say("boot", "machine.reset(): the new application starts on trial", "bold magenta")
        second, lines = self.boot(mpy)
        self.final()
        problems = []
        if not any(line.startswith("application %s running" % NEW) for line in lines):
            problems.append("application %s did not start" % NEW)
        if self.task.state != "completed" or [c for c, e in self.task.reports if e == 0] != [101, 201]:
            problems.append("the task is %s with reports %s, not completed with 101, 201" % (
                self.task.state, self.task.reports))
        if (self.device.fs / "app.old").exists():
            problems.append("the previous application was not cleaned up")
        if problems:
            return False, "; ".join(problems)
        return True, "application %s -> %s staged, unpacked, swapped, started and confirmed" % (OLD, NEW)

    def scenario_upgrade(self, mpy, old, new):
        from sim.device import RESET_EXIT

        first, _ = self.boot(mpy)
        if first.returncode != RESET_EXIT:
            return False, "the first boot did not switch to the new firmware (exit %s)" % first.returncode
        self.ending(first)
        return self._confirmed(mpy, "downloaded, switched, rebooted and confirmed")

    def _confirmed(self, mpy, how):
        second, lines = self.boot(mpy)
        slot, version, state = self.final()
        problems = []
        if "ota: result 201" not in lines:
            problems.append("the device did not confirm (no 'ota: result 201')")
        if version != NEW:
            problems.append("the device runs %s, not %s" % (version, NEW))
        if state != "VALID":
            problems.append("the running slot is %s, not VALID" % state)
        if self.task.state != "completed":
            problems.append("the task is %s, not completed" % self.task.state)
        if [code for code, errno in self.task.reports if errno == 0] != [101, 201]:
            problems.append("the platform took reports %s, not 101 then 201" % self.task.reports)
        if problems:
            return False, "; ".join(problems)
        return True, "%s -> %s %s; the device runs %s from %s" % (OLD, NEW, how, version, slot)

    def scenario_powercut(self, mpy, old, new):
        import json

        size = len(new)
        sector = -(-size * self.args.cut_at // 100 // 4096) or 1
        cut = "writes=%d:1000" % sector
        self.say("demo", "the power will die inside flash write %d (sector %d of %d), 1000 bytes into it"
                 % (sector, sector, -(-size // 4096)), "yellow")
        first, _ = self.boot(mpy, cut=cut)
        if not first.cut:
            return False, "the power cut did not happen (exit %s)" % first.returncode
        self.say("boot", "POWER CUT: the device died in the middle of a flash write", "bold red")
        journal = self.device.fs / "ota_journal.json"
        durable = json.loads(journal.read_text()).get("written") if journal.exists() else None
        self.say("demo", "the journal on the device's filesystem says %s bytes are safely in flash; "
                 "the boot selection was never touched" % durable, "yellow")
        second, _ = self.boot(mpy)
        resumed_from = self.first_connection
        from sim.device import RESET_EXIT

        if second.returncode != RESET_EXIT:
            return False, "the boot after the cut did not finish the download and switch (exit %s)" % second.returncode
        self.ending(second)
        ranges = [start for connection, start, *_ in self.downloads if connection >= resumed_from]
        ok, verdict = self._confirmed(mpy, "with a power cut at %d%% of the download" % self.args.cut_at)
        if not ranges or ranges[0] != (durable or 0):
            return False, "the download after the cut did not resume at byte %s (first Range start %s)" % (
                durable, ranges[0] if ranges else None)
        if ok:
            verdict += "; the download resumed at byte %d of %d" % (ranges[0], size)
        return ok, verdict

    def scenario_corrupt(self, mpy, old, new):
        first, lines = self.boot(mpy)
        slot, version, _ = self.ending(first)
        self.say("demo", "after the failed upgrade: %s still runs from %s" % (version, slot), "bold")
        self.say("demo", "reset once more: the old firmware keeps running, no task is offered", "yellow")
        second, again = self.boot(mpy)
        slot, version, state = self.final()
        problems = []
        if not any(line.startswith("ota: failed 205") for line in lines):
            problems.append("the device did not fail the task with 205")
        if self.task.reports != [(205, 0)]:
            problems.append("the platform took reports %s, not 205" % self.task.reports)
        if self.task.state != "failed":
            problems.append("the task is %s, not failed" % self.task.state)
        if version != OLD or slot != "ota_0":
            problems.append("the device runs %s from %s, not %s from ota_0" % (version, slot, OLD))
        if first.returncode != 0 or second.returncode != 0:
            problems.append("a boot ended with exit %s/%s, not 0" % (first.returncode, second.returncode))
        if problems:
            return False, "; ".join(problems)
        return True, "a corrupt package was refused with 205 (MD5 mismatch), never booted; the device runs %s from %s" % (
            version, slot)


REPORT_CODES = {
    101: "downloaded", 102: "no space", 103: "no memory", 104: "timeout", 105: "low battery",
    106: "poor signal", 107: "download failed", 201: "upgraded", 202: "low battery",
    203: "no memory", 204: "version unchanged", 205: "MD5 mismatch", 206: "upgrade failed",
    207: "retries exhausted", 208: "expired",
}
