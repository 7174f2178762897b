"""``python -m tools campaign``: randomised faults and power cuts, many upgrades, every invariant.

Each run is one FOTA upgrade (1.0 -> 1.1) of a fresh fake ESP32 against a fresh mock OneNET
platform, under a schedule drawn from ``random.Random("SEED:INDEX")`` (so one run replays
alone with ``--replay SEED:INDEX``). A schedule is a few boots; before each, network faults of
the mock are switched on (drops at random offsets, stalls past the device's timeout, 5xx,
errno 7, ignored Range, corrupted bytes, a task cancelled mid-download or its token expired)
and the power may die in that boot (a cut inside the Nth flash write or erase after K bytes,
inside set_boot / mark_valid, a kill -9 when the device prints a protocol step, or a kill -9
when the platform has served the package up to a random byte). Then the faults are cleared and
the device boots until it settles (a cycle that finds nothing to do).

Checked after every boot: the process ended normally, by the reset after a switch or by the
power cut; no exception but the flow's own (no MemoryError, TypeError, ...); the slot the
bootloader takes next holds exactly the old or the new image (never an unverified one).
Checked at the end: the device runs the confirmed target (201 accepted exactly once, the task
completed, the target's version reported) or the old image with one failure code accepted and
the task failed, or the old image with no failure code when the platform ended the task itself
(cancelled, expired); the running slot's otadata entry VALID; no NOR violation recorded by the
fake flash; the journal and its side file gone; no error inside the mock platform.

Exit status 0 when every run held every invariant.
"""
from __future__ import annotations

import argparse
import json

OLD, NEW = "1.0", "1.1"
DEV_ID = "20001"
UNIQUE_ID = "a0b1c2d3e4f5"
TIMEOUT = 1            # the device's socket timeout (s): stalls of STALL s make it time out
STALL = 1.3
SETTLE_BOOTS = 8       # boots after the schedule, without faults, to settle
STEP_PATTERNS = ("progress [0-9]+%", "downloaded", "reported 101", "switching to", "confirming",
                 "confirmed", "download interrupted", "failed")
# exceptions the flow may let out of a cycle (main.py prints them, the application starts)
FLOW_ERRORS = {"PlatformError", "ServerError", "TaskError", "HTTPError", "Timeout", "ConnectionLost",
               "ProtocolError", "TLSError", "OSError"}


def configure(parser: argparse.ArgumentParser):
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = __doc__.split("\n", 2)[2].strip()
    parser.add_argument("--runs", type=int, default=500, help="schedules to run (default %(default)s)")
    parser.add_argument("--seed", type=int, default=1, help="campaign seed (default %(default)s)")
    parser.add_argument("--jobs", type=int, default=None,
                        help="parallel worker processes (default: the number of cores)")
    parser.add_argument("--replay", metavar="SEED:INDEX",
                        help="run one schedule again, showing every boot's output")
    parser.add_argument("--json", metavar="PATH", help="write the summary and every run as JSON")
    parser.add_argument("--keep", metavar="DIR", help="work in DIR and keep the devices of failed runs")


# ---- schedules ---------------------------------------------------------------------------------

def schedule(seed: int, index: int) -> dict:
    """The schedule of run `index` of campaign `seed`: a plain dict (JSON), the same every time."""
    import random

    rng = random.Random("%d:%d" % (seed, index))
    sectors = rng.randint(8, 40)
    size = sectors * 4096 - rng.choice([0, rng.randint(1, 4000)])
    sched = {"seed": seed, "index": index, "size": size,
             "fragment_size": rng.choice([4096, 16384, 65536]),
             "progress_step": rng.choice([10, 25]),
             "retry": rng.choice([0, 1, 2, 3, 3]),
             "boots": []}
    sectors = -(-size // 4096)

    def offset():
        return rng.randint(1, size - 1)

    for _ in range(rng.randint(1, 4)):
        faults = []
        for _ in range(rng.choice([0, 1, 1, 2])):
            kind = rng.choice(["drop", "drop", "stall", "stall-body", "5xx", "5xx-api", "errno",
                               "ignore-range", "corrupt", "cancel-at", "expire-token"])
            if kind == "drop":
                faults.append(["drop", sorted(offset() for _ in range(rng.randint(1, 3)))])
            elif kind == "stall":
                endpoint = rng.choice(["download", "check", "token_check", "progress", "report", "tasking"])
                faults.append(["stall", "%s:%s" % (endpoint, STALL)])
            elif kind == "stall-body":
                faults.append(["stall-body", "%d:%s" % (offset(), STALL)])
            elif kind == "5xx":
                faults.append(["http-error", "download:%d:%d" % (rng.choice([500, 502, 503]), rng.randint(1, 3))])
            elif kind == "5xx-api":
                endpoint = rng.choice(["api", "check", "token_check", "progress", "report", "tasking",
                                       "version_report"])
                faults.append(["http-error", "%s:%d:%d" % (endpoint, rng.choice([500, 503]), rng.randint(1, 3))])
            elif kind == "errno":
                endpoint = rng.choice(["check", "token_check", "progress", "report", "tasking"])
                faults.append(["errno", "%s:7:%d" % (endpoint, rng.randint(1, 3))])
            elif kind == "ignore-range":
                faults.append(["ignore-range", None])
            elif kind == "corrupt":
                faults.append(["corrupt", [offset()]])
            elif kind == "cancel-at":
                faults.append(["cancel-at", offset()])
            else:
                faults.append(["expire-token", None])
        power = None
        if rng.random() < 0.6:
            kind = rng.choice(["writes", "writes", "erases", "set_boot", "mark_valid", "step", "step", "offset"])
            if kind in ("writes", "erases"):
                n = rng.randint(1, sectors + 2)
                k = rng.choice([None, rng.randint(0, 4095)])
                power = ["cut", "%s=%d%s" % (kind, n, "" if k is None else ":%d" % k)]
            elif kind in ("set_boot", "mark_valid"):
                power = ["cut", "%s=%s" % (kind, rng.choice(["before", "erased", "after"]))]
            elif kind == "step":
                power = ["kill-at-step", rng.choice(STEP_PATTERNS)]
            else:
                power = ["kill-at-byte", offset()]
        sched["boots"].append({"faults": faults, "power": power})
    return sched


# ---- one run -----------------------------------------------------------------------------------

class Violation(AssertionError):
    pass


def check(condition, text):
    if not condition:
        raise Violation(text)


def exceptions_in(output):
    """The exception class names of the tracebacks in a boot's output."""
    import re

    names = []
    lines = output.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("Traceback"):
            for follow in lines[i + 1:]:
                if not follow.startswith(" "):
                    m = re.match(r"([A-Za-z_][\w.]*)(:|$)", follow)
                    names.append(m[1].split(".")[-1] if m else follow)
                    break
    return names


def active_slot(device):
    valid = [e for e in device.boot_state() if e["valid"]]
    return max(valid, key=lambda e: e["seq"]) if valid else None


def run_one(seed, index, work, mpy, verbose=False):
    """Run schedule (seed, index) in work/run-INDEX; returns a result dict (outcome or violation)."""
    import shutil
    import time
    from pathlib import Path

    sched = schedule(seed, index)
    root = Path(work) / ("run-%d-%d" % (seed, index))
    shutil.rmtree(root, ignore_errors=True)
    started = time.monotonic()
    result = {"seed": seed, "index": index, "schedule": sched, "boots": 0}
    try:
        result.update(_run(sched, root, mpy, verbose))
    except Violation as v:
        result["violation"] = str(v)
    except Exception as e:  # noqa: BLE001 - the campaign itself failed on this run: report it
        import traceback

        result["violation"] = "campaign error: %s\n%s" % (e, traceback.format_exc())
    result["seconds"] = round(time.monotonic() - started, 2)
    if "violation" not in result:
        shutil.rmtree(root, ignore_errors=True)
    return result


def _run(sched, root, mpy, verbose):
    from tools import firmware
    from sim.device import Device
    from sim.esp_image import build_app_image
    from tools.mockplatform import MockPlatform

    old = build_app_image(OLD, 64 * 1024)
    new = build_app_image(NEW, sched["size"])
    device = Device(root, image=old)
    platform = MockPlatform().start()
    log = []
    try:
        platform.add_device(DEV_ID, unique_id=UNIQUE_ID, f_version=OLD)
        task = platform.add_task(DEV_ID, new, NEW, retry=sched["retry"], interval=0)
        firmware.install(device.fs, platform.device_config(  # "https": false: the plain mock
            DEV_ID, timeout=TIMEOUT, fragment_size=sched["fragment_size"], progress_step=sched["progress_step"]))
        killer = _Killer(platform)
        boots = 0
        for step in sched["boots"]:
            for name, arg in step["faults"]:
                platform.set_fault(name, arg)
            out = _boot(device, mpy, step["power"], killer, platform)
            boots += 1
            log.append(out)
            if verbose:
                _show(boots, step, out)
            _check_boot(device, old, new, out)
        platform.clear_faults()
        settled = False
        for _ in range(SETTLE_BOOTS):
            out = _boot(device, mpy, None, killer, platform)
            boots += 1
            log.append(out)
            if verbose:
                _show(boots, {"faults": [], "power": None}, out)
            _check_boot(device, old, new, out)
            if out["rc"] == 0 and "ota: result None" in out["output"]:
                settled = True
                break
        check(settled, "not settled after %d boots without faults" % SETTLE_BOOTS)
        outcome = _check_end(device, platform, task, old, new)
        from sim.device import CUT_EXIT

        return {"outcome": outcome, "boots": boots,
                "cuts": sum(1 for b in log if b["rc"] == CUT_EXIT), "kills": sum(1 for b in log if b["rc"] == -9)}
    except Violation as v:
        tail = "\n".join("--- boot %d (rc %s, power %s):\n%s" % (i + 1, b["rc"], b["power"], b["output"].strip())
                         for i, b in enumerate(log[-3:]))
        raise Violation("%s\n%s\nplatform: task %s, history %s, reports %s" % (
            v, tail, task.state, task.history, task.reports))
    finally:
        platform.stop()


def _show(number, step, out):
    print("=== boot %d: faults %s, power %s -> rc %s (%s)" % (
        number, step["faults"], step["power"], out["rc"], out["slot"]))
    print(out["output"].rstrip())


class _Killer:
    """kill -9 of the running device when the platform has served the package up to an
    offset: a stall-body fault at that offset, whose claim kills the device first."""

    def __init__(self, platform):
        self.proc = None
        self.offset = None
        self.fired = False
        faults = platform.faults
        claim = faults.claim_stall

        def claim_stall(offset):
            seconds = claim(offset)
            if seconds and offset == self.offset and self.proc is not None:
                self.fired = True
                self.proc.kill()
            return seconds

        faults.claim_stall = claim_stall

    def arm(self, platform, proc, offset):
        self.proc, self.offset, self.fired = proc, offset, False
        platform.set_fault("stall-body", (offset, 0.3))

    def disarm(self, platform):
        with platform.faults._lock:
            platform.faults.stall_body = [s for s in platform.faults.stall_body if s != (self.offset, 0.3)]
        self.proc = self.offset = None


def _boot(device, mpy, power, killer, platform):
    """One reset of the device, with its power event. Returns rc, output, slot, power."""
    import re
    import threading

    cut = power[1] if power and power[0] == "cut" else None
    running = device.start(extra_path=(mpy,), cut=cut)
    proc = running.proc
    hung = []

    def hang():  # a hang is a violation, not a stuck campaign
        hung.append(True)
        proc.kill()

    timer = threading.Timer(60, hang)
    timer.start()
    killed = False
    try:
        if power and power[0] == "kill-at-byte":
            killer.arm(platform, proc, power[1])
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if power and power[0] == "kill-at-step" and not killed and re.search(power[1], line):
                proc.kill()
                killed = True
        proc.wait()
        proc.stdout.close()
    finally:
        timer.cancel()
        if power and power[0] == "kill-at-byte":
            killer.disarm(platform)
    output = "".join(lines)
    return {"rc": proc.returncode, "output": output, "slot": running.result.slot, "power": power,
            "hung": bool(hung)}


def _check_boot(device, old, new, out):
    from sim.device import CUT_EXIT, RESET_EXIT

    check(out["slot"] is not None, "bricked: the bootloader found nothing to boot")
    check(not out["hung"], "the device hung (killed after 60 s)")
    check(out["rc"] in (0, RESET_EXIT, CUT_EXIT, -9), "the device exited with %s" % out["rc"])
    bad = [name for name in exceptions_in(out["output"]) if name not in FLOW_ERRORS]
    check(not bad, "exception out of the cycle: %s" % ", ".join(bad))
    entry = active_slot(device)
    slot = entry["slot"] if entry else "ota_0"
    try:
        image = device.slot_image(slot)
    except ValueError as e:
        raise Violation("the boot selection points at %s, which holds no valid image: %s" % (slot, e))
    check(image in (old, new), "the boot selection points at %s, which holds neither image" % slot)


def _check_end(device, platform, task, old, new):
    from sim.device import VALID

    check(not platform.errors, "the mock platform failed: %r" % platform.errors)
    check(device.corruptions() == [], "NOR violations: %s" % device.corruptions()[:5])
    check(not (device.fs / "ota_journal.json").exists(), "the journal is left: %s"
          % (device.fs / "ota_journal.json").read_text() if (device.fs / "ota_journal.json").exists() else "")
    check(not (device.fs / "ota_journal.json.new").exists(), "the journal's side file is left")
    slot = device.running_slot()
    running = device.slot_image(slot)
    entry = active_slot(device)
    check(entry is not None and entry["slot"] == slot and entry["state"] == VALID,
          "the running slot %s is not the VALID active one: %s" % (slot, device.boot_state()))
    accepted = [code for code, errno in task.reports if errno == 0]
    finals = [code for code in accepted if code != 101]
    check(accepted.count(101) <= 1, "101 accepted %d times" % accepted.count(101))
    reported = [json.loads(r.body).get("f_version") for r in platform.requests
                if r.endpoint == "version_report" and r.errno == 0]
    if running == new:
        check(slot == "ota_1", "the new image runs from %s" % slot)
        if task.state in ("cancelled", "expired") and finals == []:
            # the platform ended the task after the verified image was switched to: it keeps
            # running (it was verified), nothing final is accepted
            return "%s after the switch" % task.state
        check(task.state == "completed", "the target runs, but the task is %s" % task.state)
        check(finals == [201], "the target runs, the platform accepted %s" % task.reports)
        check(platform.devices[DEV_ID].f_version == NEW and reported and reported[-1] == NEW,
              "the target's version was not reported")
        return "upgraded"
    check(running == old and slot == "ota_0", "neither image runs")
    check(NEW not in reported, "the target's version was reported, the old image runs")
    if task.state == "failed":
        check(len(finals) == 1 and finals[0] != 201,
              "the old image runs, the task failed, the platform accepted %s" % task.reports)
        return "failed %d" % finals[0]
    check(task.state in ("cancelled", "expired"),
          "the old image runs, the task is %s (not final)" % task.state)
    check(finals == [], "the platform ended the task, yet it accepted %s" % task.reports)
    return task.state


# ---- the campaign ------------------------------------------------------------------------------

def _worker(job):
    seed, index, work, mpy = job
    return run_one(seed, index, work, mpy)


def campaign(runs, seed, work, jobs=None, progress=None):
    """Run `runs` schedules of campaign `seed`; returns the summary dict."""
    import concurrent.futures
    import os
    import time
    from collections import Counter

    from tools.firmware import compile_board

    mpy = compile_board(work / "mpy")
    jobs = jobs or os.cpu_count() or 1
    started = time.monotonic()
    results = []
    with concurrent.futures.ProcessPoolExecutor(max_workers=jobs) as pool:
        for result in pool.map(_worker, [(seed, i, str(work), str(mpy)) for i in range(runs)]):
            results.append(result)
            if progress:
                progress(result, len(results), runs)
    outcomes = Counter(r.get("outcome", "VIOLATION") for r in results)
    return {"runs": runs, "seed": seed, "jobs": jobs, "seconds": round(time.monotonic() - started, 1),
            "boots": sum(r["boots"] for r in results),
            "power_cuts": sum(r.get("cuts", 0) for r in results), "kills": sum(r.get("kills", 0) for r in results),
            "outcomes": dict(sorted(outcomes.items())),
            "failures": [r for r in results if "violation" in r], "results": results}


def main(args) -> int:
    import sys

    from tools import batch
    from tools.firmware import compile_board

    with batch.workdir(args.keep, "onenet-ota-campaign-") as work:
        if args.replay:
            try:
                seed, index = (int(v) for v in args.replay.split(":"))
            except ValueError:
                print("campaign: --replay SEED:INDEX", file=sys.stderr)
                return 2
            print("schedule:", json.dumps(schedule(seed, index)))
            result = run_one(seed, index, work, compile_board(work / "mpy"), verbose=True)
            print("=== %s" % (result.get("outcome") or "VIOLATION: " + result["violation"]))
            return 0 if "violation" not in result else 1

        def progress(result, done, total):
            if "violation" in result:
                print("VIOLATION in run %d:%d: %s" % (result["seed"], result["index"],
                                                      result["violation"].splitlines()[0]), flush=True)
            if done % 50 == 0 or done == total:
                print("%d/%d runs" % (done, total), file=sys.stderr, flush=True)

        summary = campaign(args.runs, args.seed, work, args.jobs, progress)
    return batch.finish(summary, print_summary, args.json, bool(summary["failures"]))


def print_summary(summary):
    print("campaign seed %d: %d runs, %d boots (%d power cuts and %d kill -9 landed), %.1f s on %d workers" % (
        summary["seed"], summary["runs"], summary["boots"], summary["power_cuts"], summary["kills"],
        summary["seconds"], summary["jobs"]))
    width = max(map(len, summary["outcomes"]), default=0)
    for outcome, count in summary["outcomes"].items():
        print("  %-*s %5d" % (width, outcome, count))
    if not summary["failures"]:
        print("every run held every invariant")
        return
    print("%d runs broke an invariant (replay one: python -m tools campaign --replay SEED:INDEX):"
          % len(summary["failures"]))
    for r in summary["failures"]:
        print("--- %d:%d schedule %s" % (r["seed"], r["index"], json.dumps(r["schedule"])))
        print(r["violation"])
