"""No downgrade (issue 14): a task whose target is not newer than what runs is refused in the
check phase with 204 - nothing downloaded, nothing erased, the boot selection untouched, the
refusal remembered - unless the config says "allow_downgrade": true. End to end with real
micropython on the fake ESP32 against the mock platform, for firmware and for applications;
and the comparison rule itself (onenet_ota.check.newer) on the unix port.

The board runs "1.0" (conftest.OLD_VERSION) unless a test builds it another image."""
from __future__ import annotations

import json

import pytest

from sim import micropython
from sim.device import RESET_EXIT, Device
from test_fota_codes import (DOWNLOADING, FAILED, SLOT_SECTOR, SLOT_SIZE, TBU, assert_failed, assert_nothing_more, assert_upgraded, result_of, run,
                             slot_erased)
from test_sota_flow import NEW_APP, OLD_APP, app_files, install_app, sota_task
from tools.package_app import build

STATE = "ota_state.json"


def assert_refused(board, platform, task, result, why):
    """204 from the check: reported once, nothing downloaded or erased, the package remembered."""
    assert_failed(board, result, task, 204, why, history=[TBU, DOWNLOADING, FAILED])
    seq = platform.sequence()
    assert "download" not in seq, seq
    assert seq[-2:] == ["token_check", "report"], seq  # a 2xx is taken only from a task downloading
    assert slot_erased(board)
    slot = range(SLOT_SECTOR, SLOT_SECTOR + SLOT_SIZE // 4096)
    assert [s for s in board.device.erase_counts() if s in slot] == []  # not one sector erased
    state = json.loads((board.device.fs / STATE).read_text())
    assert state["failed"] == [task.token, task.md5, 204], state


def running(board, version):
    """The board, re-made to run firmware `version` from the factory flash."""
    board.device = Device(board.device.root.parent / ("device-" + version), image=board.image(version))
    board.install()


def settled(board, platform):
    """A boot with no task: the versions are reported (a task created before that whose target
    is the running version would be completed by the report itself, on the platform)."""
    result = run(board)
    assert result_of(result.output) is None, result.output
    assert platform.sequence()[0] == "version_report"


# ---- firmware ---------------------------------------------------------------------------------------

def test_older_firmware_is_204_and_nothing_is_downloaded(board, platform):
    task = board.add_task(board.image("0.9"), target="0.9")
    result = run(board)
    assert_refused(board, platform, task, result, "target 0.9 is not newer than the running firmware 1.0")
    assert "allow_downgrade" in result.output
    assert platform.sequence() == ["version_report", "check", "token_check", "report"]
    assert_nothing_more(board, platform, task)


def test_same_firmware_is_a_reinstall_and_refused(board, platform):
    settled(board, platform)
    task = board.add_task(board.image("1.0"), target="1.0")
    result = run(board)
    assert_refused(board, platform, task, result, "target 1.0 re-installs the running firmware 1.0")


def test_same_firmware_with_a_trailing_zero_is_refused(board, platform):
    task = board.add_task(board.image("1.0.0"), target="1.0.0")
    result = run(board)
    assert_refused(board, platform, task, result, "target 1.0.0 re-installs the running firmware 1.0")


def test_unordered_firmware_version_is_refused(board, platform):
    """A version that is not dotted numbers cannot be ordered: never newer."""
    task = board.add_task(board.image("1.1-rc1"), target="1.1-rc1")
    result = run(board)
    assert_refused(board, platform, task, result, "target 1.1-rc1 is not newer than the running firmware 1.0")


def test_1_10_is_newer_than_1_9(board, platform):
    """Dotted numbers, not text: "1.10" < "1.9" as strings."""
    running(board, "1.9")
    new = board.image("1.10")
    task = board.add_task(new, target="1.10")
    first = run(board)
    assert first.returncode == RESET_EXIT, first.output
    assert task.reports == [(101, 0)]
    assert_upgraded(board, platform, task, new)


def test_1_9_is_older_than_1_10(board, platform):
    running(board, "1.10")
    task = board.add_task(board.image("1.9"), target="1.9")
    result = run(board)
    assert_refused(board, platform, task, result, "target 1.9 is not newer than the running firmware 1.10")


def test_allow_downgrade_takes_an_older_firmware(board, platform):
    board.install(allow_downgrade=True)
    old = board.image("0.9")
    task = board.add_task(old, target="0.9")
    first = run(board)
    assert first.returncode == RESET_EXIT, first.output
    assert task.reports == [(101, 0)]
    assert_upgraded(board, platform, task, old)


def test_allow_downgrade_takes_a_reinstall(board, platform):
    board.install(allow_downgrade=True)
    settled(board, platform)
    same = board.image("1.0")
    task = board.add_task(same, target="1.0")
    first = run(board)
    assert first.returncode == RESET_EXIT, first.output
    assert_upgraded(board, platform, task, same)


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_allow_downgrade_must_be_a_bool(board, platform, value):
    board.install(allow_downgrade=value)
    task = board.add_task(board.image("0.9"), target="0.9")
    result = run(board)
    assert "allow_downgrade" in result.output, result.output
    assert "download" not in platform.sequence() and task.reports == []
    assert slot_erased(board)


# ---- applications (SOTA) ------------------------------------------------------------------------------

def test_older_application_is_204_and_nothing_is_downloaded(board, platform):
    install_app(board, NEW_APP, "1.1")
    task = sota_task(board, build(OLD_APP, "1.0"), target="1.0")
    result = run(board)
    assert_refused(board, platform, task, result, "target 1.0 is not newer than the installed application 1.1")
    assert platform.sequence() == ["version_report", "check", "check", "token_check", "report"]
    assert app_files(board) == ["helper.py", "main.py", "manifest.json"]
    assert "app 1.1 running 2" in result.output  # the installed application still starts
    assert not (board.device.fs / "app.bundle").exists()


def test_same_application_is_refused(board, platform):
    install_app(board, OLD_APP, "1.0")
    settled(board, platform)
    task = sota_task(board, build(OLD_APP, "1.0"), target="1.0")
    result = run(board)
    assert_refused(board, platform, task, result, "target 1.0 re-installs the installed application 1.0")
    assert app_files(board) == ["main.py", "manifest.json", "util.py"]


def test_application_1_10_is_newer_than_1_9(board, platform):
    install_app(board, OLD_APP, "1.9")
    task = sota_task(board, build(NEW_APP, "1.10"), target="1.10")
    assert run(board).returncode == RESET_EXIT
    second = run(board)
    assert "app 1.1 running 2" in second.output, second.output
    assert task.reports == [(101, 0), (201, 0)] and task.state == "completed"


def test_allow_downgrade_takes_an_older_application(board, platform):
    board.install(allow_downgrade=True)
    install_app(board, NEW_APP, "1.1")
    task = sota_task(board, build(OLD_APP, "1.0"), target="1.0")
    assert run(board).returncode == RESET_EXIT
    second = run(board)
    assert "app 1.0 running" in second.output, second.output
    assert task.reports == [(101, 0), (201, 0)] and task.state == "completed"
    assert app_files(board) == ["main.py", "manifest.json", "util.py"]


def test_first_application_is_taken_whatever_its_version(board, platform):
    """No application installed (no manifest): nothing to go down from."""
    task = sota_task(board, build(OLD_APP, "0.1"), target="0.1")
    assert run(board).returncode == RESET_EXIT
    second = run(board)
    assert "app 1.0 running" in second.output, second.output
    assert task.reports == [(101, 0), (201, 0)]


# ---- the rule, on the unix port ----------------------------------------------------------------------

# (target, current, newer?)
CASES = [
    ("1.10", "1.9", True),
    ("1.9", "1.10", False),
    ("1.1", "1.0", True),
    ("1.0", "1.1", False),
    ("1.0", "1.0", False),       # a re-install
    ("1.0.0", "1.0", False),     # trailing zero parts do not count
    ("1.0", "1.0.0", False),
    ("1", "1.0", False),
    ("1.0.1", "1.0", True),
    ("1.01", "1.1", False),      # nor leading zeros
    ("1.02", "1.1", True),
    ("2", "1.99.99", True),
    ("10", "9", True),
    ("0.10", "0.9", True),
    ("1.0", "0", True),
    ("0", "0", False),
    ("12345678901234567890", "1", True),
    ("1.2", "1.1.99999999999999999999", True),
    ("v1.2", "1.1", True),       # a leading v is ignored, on either side
    ("1.2", "v1.1", True),
    ("V1.2", "v1.2", False),
    ("vv1.2", "1.1", False),
    # anything else cannot be ordered: never newer, on either side
    ("1.2-rc1", "1.1", False),
    ("1.2", "1.1-rc1", False),
    ("1.2b", "1.1", False),
    ("2.0-rc_1", "1.0", False),
    ("dev", "1.0", False),
    ("1.0", "dev", False),
    ("1..2", "1.0", False),
    ("1.", "1.0", False),
    (".1", "0", False),
    ("", "0", False),
    ("1.0", "", False),
    ("v", "0", False),
    ("1.2 ", "1.1", False),
    ("+2", "1", False),
    ("-2", "1", False),
    ("\u0662", "1", False),     # a digit, but not an ASCII one
    (None, "1.0", False),
    ("1.0", None, False),
    (2, "1.0", False),
]

RULE = r'''
import json, sys
from onenet_ota.check import newer, numbers
with open(sys.argv[1]) as f:
    cases = json.load(f)
print(json.dumps([newer(t, c) for t, c, _ in cases]))
print(json.dumps([numbers(v) for v in ("v1.10.0", "0.0", "1.01.0.0", "1.x", 1)]))
'''


def test_the_comparison_rule_on_the_unix_port(tmp_path):
    (tmp_path / "rule.py").write_text(RULE)
    (tmp_path / "cases.json").write_text(json.dumps(CASES))
    r = micropython.run([str(tmp_path / "rule.py"), str(tmp_path / "cases.json")], cwd=str(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    got = json.loads(lines[0])
    wrong = [(t, c, want) for (t, c, want), g in zip(CASES, got) if g is not want]
    assert not wrong, wrong
    assert json.loads(lines[1]) == [[1, 10], [0], [1, 1], None, None]


# ---- software anti-rollback: secure_version ---------------------------------------------------------

def on_secure_version(board, n):
    """The board, re-made to run 1.0 built with secure_version n."""
    board.device = Device(board.device.root.parent / ("device-sv%d" % n), image=board.image("1.0", secure_version=n))
    board.install()


@pytest.mark.parametrize("allow", [False, True])
def test_a_lower_secure_version_is_204_even_for_a_newer_version(board, platform, allow):
    """The image's secure_version is checked after the download with the rest of the image:
    below the running image's, 204 and the old image runs, whatever allow_downgrade says."""
    on_secure_version(board, 2)
    board.install(allow_downgrade=allow)
    task = board.add_task(board.image("1.1", secure_version=1), target="1.1")
    result = run(board)
    assert_failed(board, result, task, 204, "image has secure_version 1, the running one 2")
    assert "download" in platform.sequence()  # found in the image: after the download


@pytest.mark.parametrize("secure", [2, 3])
def test_an_equal_or_higher_secure_version_is_taken(board, platform, secure):
    on_secure_version(board, 2)
    new = board.image("1.1", secure_version=secure)
    task = board.add_task(new, target="1.1")
    first = run(board)
    assert first.returncode == RESET_EXIT, first.output
    assert_upgraded(board, platform, task, new)
