"""`python -m tools demo`: every scenario ends as it should, shows what a user wants to see, and
exits 0 only then."""
import subprocess
import sys

import pytest

from conftest import REPO


def demo(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "tools", "demo", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def in_order(text, *parts):
    at = 0
    for part in parts:
        found = text.find(part, at)
        assert found >= 0, "%r missing (after position %d) in:\n%s" % (part, at, text)
        at = found + len(part)


def verdict(result):
    lines = [line for line in result.stdout.splitlines() if line.startswith(("PASS ", "FAIL "))]
    assert len(lines) == 1, result.stdout
    return lines[0]


def test_upgrade():
    result = demo()
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    # device and platform lines come from two processes: their order is checked apart, and
    # across the boots
    first, second = out.split("boot 2 ─")
    in_order(first, "task 1 created: FOTA 1.0 -> 1.1", "boot 1", "running 1.0 from ota_0")
    in_order(first, "task 1: to-be-upgraded -> downloading", "progress 10% received -> errno 0",
             "progress 90% received -> errno 0", "task 1: downloading -> upgrading")
    in_order(first, "report 101 (downloaded) received -> errno 0")
    in_order(first, "ota: progress 10%", "ota: progress 90%", "ota: reported 101", "ota: switching to 1.1")
    in_order(first, "download", "100% 384.0/384.0 KiB", "machine.reset()")
    in_order(second, "PENDING_VERIFY", "running 1.1 from ota_1", "ota: confirming 1.1", "ota: confirmed 1.1",
             "ota: result 201", "the device runs firmware 1.1 from ota_1 (otadata: VALID)")
    in_order(second, "task 1: upgrading -> completed", "the device runs firmware 1.1")
    in_order(second, "report 201 (upgraded) received -> errno 0", "the device runs firmware 1.1")
    assert verdict(result).startswith("PASS upgrade: 1.0 -> 1.1")


def test_powercut_resumes():
    result = demo("--scenario", "powercut")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    in_order(out, "boot 1", "POWER CUT", "bytes are safely in flash", "boot 2", "running 1.0 from ota_0",
             "download resumes: Range: bytes=212992-", "report 101", "boot 3",
             "the device runs firmware 1.1 from ota_1")
    in_order(out, "boot 2", "ota: reported 101", "machine.reset()", "boot 3", "ota: confirmed 1.1")
    assert "resumed at byte 212992 of 393216" in verdict(result)


def test_powercut_elsewhere():
    result = demo("--scenario", "powercut", "--cut-at", "20", "--size", "128")
    assert result.returncode == 0, result.stdout + result.stderr
    assert verdict(result).startswith("PASS powercut")


def test_corrupt_package_is_refused():
    result = demo("--scenario", "corrupt")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    first, second = out.split("boot 2 ─")
    in_order(first, "fault switched on", "boot 1", "task 1: downloading -> failed")
    in_order(first, "boot 1", "report 205 (MD5 mismatch) received -> errno 0")
    in_order(first, "boot 1", "ota: failed 205", "ota: result 205", "1.0 still runs from ota_0")
    in_order(second, "running 1.0 from ota_0", "check: no task", "the device runs firmware 1.0 from ota_0")
    in_order(second, "ota: result None", "the device runs firmware 1.0 from ota_0")
    assert "switching" not in out and "PENDING_VERIFY" not in out
    assert verdict(result).startswith("PASS corrupt")


def test_sota_application_update():
    result = demo("--scenario", "sota")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    first, second = out.split("boot 2 ─")
    in_order(first, "task 1 created: SOTA 1.0 -> 1.1", "ota: reported 101", "ota: switching to 1.1")
    in_order(second, "application 1.1 not started yet", "application 1.1 running: hello from the new application",
             "sota: confirmed 1.1", "report 201 (upgraded) received -> errno 0")
    assert verdict(result).startswith("PASS sota")


def test_keep_leaves_the_device(tmp_path):
    keep = tmp_path / "dev"
    result = demo("--keep", str(keep))
    assert result.returncode == 0, result.stdout + result.stderr
    assert (keep / "flash.bin").exists() and (keep / "fs" / "ota_config.json").exists()
    assert "Loaded app from partition at offset 0x190000 (ota_1)" in (keep / "bootloader.log").read_text()
    again = demo("--keep", str(keep))  # not empty: refused
    assert again.returncode == 2 and "not empty" in again.stderr


@pytest.mark.parametrize("args", [["--scenario", "nope"], ["--size", "4"], ["--cut-at", "100"]])
def test_usage(args):
    assert demo(*args).returncode == 2


def test_faults_from_the_command_line():
    """A dropped connection is survived (PASS); a wrong MD5 advertised is not (FAIL, exit 1)."""
    survived = demo("--fault", "drop=100000")
    assert survived.returncode == 0, survived.stdout + survived.stderr
    assert "download interrupted at" in survived.stdout and "download resumes" in survived.stdout
    failed = demo("--fault", "wrong-md5")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    line = verdict(failed)
    assert line.startswith("FAIL upgrade") and "205" in failed.stdout
    assert demo("--fault", "no-such-fault").returncode == 2
