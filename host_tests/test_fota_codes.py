"""Every report code of the platform, end to end: real micropython runs boot.py/main.py and
firmware/ on the fake ESP32 against the mock platform, and each code is reached for the very
reason it names (docs/south-api.md, endpoint 6). Plus malformed task data from the check.

Every failure must end the same way: exactly the code expected in task.reports, the task
failed, nothing written to the boot selection (the board keeps running ota_0), no journal
left behind, a line saying why in the device output, and no traceback.

Battery, signal and MemoryError come from callbacks an application passes to onenet_ota.run():
those tests install their own main.py (``app_main``) that does so.
"""
from __future__ import annotations

import json
import random
import re

import pytest

from conftest import DEV_ID, UNIQUE_ID, download_sequence, request_ranges
from sim.device import RESET_EXIT
from sim.esp_image import build_app_image

JOURNAL = "ota_journal.json"
SLOT = "ota_1"
SLOT_SIZE = 0x180000
SLOT_SECTOR = 0x190000 // 4096  # first flash sector of ota_1
SEQ_ERASED = 0xFFFFFFFF
TBU, DOWNLOADING, UPGRADING, COMPLETED, FAILED = (
    "to-be-upgraded", "downloading", "upgrading", "completed", "failed")
STOPPED = 0  # codes.ENDED: the platform ended the task


# ---- helpers shared with test_fota_faults.py ------------------------------------------------------

def run(board, **kw):
    """One boot; the output is printed so a failing test shows it."""
    result = board.boot(**kw)
    print("---- boot of %s, rc %s\n%s" % (result.slot, result.returncode, result.output))
    return result


def result_of(output: str):
    """What main.py printed as the cycle's result: an int code, None (no task), or "none"
    when it printed no result (an exception ended the cycle)."""
    found = re.findall(r"^ota: result (\S+)$", output, re.M)
    if not found:
        return "none"
    assert len(found) == 1, output
    return None if found[0] == "None" else int(found[0])


def downloads(platform):
    """Every download request (redirect targets included), in order."""
    return [r for r in platform.requests if r.endpoint == "download"]


def ranges(platform):
    """(start, end) of the Range header of every download request."""
    out = []
    for r in downloads(platform):
        m = re.fullmatch(r"bytes=(\d+)-(\d+)", r.headers.get("range", ""))
        assert m, r.headers
        out.append((int(m[1]), int(m[2])))
    return out


def journal_exists(board) -> bool:
    return (board.device.fs / JOURNAL).exists()


def assert_no_journal(board):
    assert not journal_exists(board), (board.device.fs / JOURNAL).read_text()
    assert not (board.device.fs / (JOURNAL + ".new")).exists()


def assert_boot_untouched(board):
    """The boot selection is what the factory flash gave: ota_0, valid; otadata[1] never
    written (a set_boot would have written seq 2 there)."""
    assert board.device.running_slot() == "ota_0"
    first, second = board.device.boot_state()
    assert (first["seq"], first["slot"], first["state_name"]) == (1, "ota_0", "VALID"), first
    assert second["seq"] == SEQ_ERASED, second


def slot_erased(board) -> bool:
    return board.device.partition(SLOT) == b"\xff" * SLOT_SIZE


def slot_holds(board, package: bytes) -> bool:
    return board.device.partition(SLOT)[: len(package)] == package


def assert_failed(board, result, task, code, why, history=None, reports=None):
    """The cycle ended in `code` for reason `why` (a regex on the device output)."""
    out = result.output
    assert result.returncode == 0, out  # main.py ran to its end: no reset
    assert "Traceback" not in out, out
    assert result_of(out) == code, out
    assert re.search(r"^ota: failed %d .*%s" % (code, why), out, re.M), out
    assert task.reports == (reports if reports is not None else [(code, 0)])
    assert task.state == FAILED
    if history is not None:
        assert task.history == history
    assert_boot_untouched(board)
    assert_no_journal(board)


def assert_nothing_more(board, platform, task):
    """A later boot runs ota_0 as before; the failed task is not offered again."""
    before = len(platform.requests)
    again = run(board)
    assert again.returncode == 0 and again.slot == "ota_0", again.output
    assert result_of(again.output) is None, again.output
    assert platform.sequence()[before:] == ["check", "check"]  # firmware, then application
    assert_boot_untouched(board)
    assert task.state == FAILED


def assert_upgraded(board, platform, task, package):
    """After a boot that switched: the next boot runs the new image and confirms it."""
    assert slot_holds(board, package)
    second = run(board)
    assert second.slot == SLOT and second.returncode == 0, second.output
    assert result_of(second.output) == 201, second.output
    assert task.state == COMPLETED and task.reports[-1] == (201, 0)
    assert board.device.boot_state()[1]["state_name"] == "VALID"
    assert_no_journal(board)
    assert platform.devices[DEV_ID].f_version == task.target


APP_MAIN = '''\
# main.py of an application that passes its own battery/signal/progress callbacks
import onenet_ota


def callback(name, values):
    if values is None:
        return None
    calls = [0]

    def call(*args):
        calls[0] += 1
        value = values[min(calls[0], len(values)) - 1]
        print("app:", name, "call", calls[0], "->", value)
        if value == "MemoryError":
            raise MemoryError("app: out of memory")
        return value

    return call


print("ota: result", onenet_ota.run(battery=callback("battery", %r),
      signal=callback("signal", %r), progress=callback("progress", %r)))
'''


def app_main(board, battery=None, signal=None, progress=None):
    """Install a main.py whose callbacks return the listed values on successive calls (the
    last one repeats); the value "MemoryError" raises MemoryError instead."""
    (board.device.fs / "main.py").write_text(APP_MAIN % (battery, signal, progress))


def calls(output, name):
    return re.findall(r"^app: %s call \d+ -> (.*)$" % name, output, re.M)


# ---- 201 --------------------------------------------------------------------------------------------

def test_201_happy_path(board, platform):
    new = board.image("1.1")
    task = board.add_task(new, target="1.1")
    first = run(board)
    assert first.returncode == RESET_EXIT, first.output
    # every step is reported, at the end of the fragment that passed it; 70-90 % after the last
    assert platform.sequence() == ["version_report", "check", "token_check", "download"] + ["progress"] * 3 \
        + ["download"] + ["progress"] * 3 + ["download"] + ["progress"] * 3 + ["report"]
    assert platform.sequence()[2:-1] == ["token_check"] + download_sequence(len(new))
    assert ranges(platform) == [(0, 65535), (65536, 131071), (131072, 196607)]
    assert [r.status for r in downloads(platform)] == [206, 206, 206]
    assert task.progress == [(step, 0) for step in range(10, 100, 10)]
    assert task.reports == [(101, 0)] and task.state == UPGRADING
    assert platform.connections == 1  # API calls and the download share one connection
    assert slot_holds(board, new)
    # each sector of the package erased exactly once, nothing beyond it
    counts = board.device.erase_counts()
    assert {s: n for s, n in counts.items() if SLOT_SECTOR <= s < SLOT_SECTOR + SLOT_SIZE // 4096} \
        == {SLOT_SECTOR + i: 1 for i in range(len(new) // 4096)}
    assert board.device.boot_state()[1]["slot"] == SLOT  # switched: seq 2 -> ota_1
    assert board.device.boot_state()[1]["state_name"] == "NEW"
    assert journal_exists(board)  # "switched": the confirmation is still to come
    before = len(platform.requests)
    assert_upgraded(board, platform, task, new)
    assert platform.sequence()[before:] == ["tasking", "report", "version_report"]
    assert task.history == [TBU, DOWNLOADING, UPGRADING, COMPLETED]
    # and then: nothing to do, the platform holds the new version
    before = len(platform.requests)
    third = run(board)
    assert third.slot == SLOT and result_of(third.output) is None
    assert platform.sequence()[before:] == ["check", "check"]  # firmware, then application


# ---- 1xx: the download stage --------------------------------------------------------------------

def test_102_package_larger_than_the_slot(board, platform):
    big = build_app_image("1.1", SLOT_SIZE + 4096)
    assert len(big) > SLOT_SIZE
    task = board.add_task(big, target="1.1")
    result = run(board)
    assert_failed(board, result, task, 102, "package of %d bytes, slot of %d" % (len(big), SLOT_SIZE),
                  history=[TBU, FAILED])
    assert platform.sequence() == ["version_report", "check", "report"]  # refused before anything
    assert slot_erased(board)
    assert_nothing_more(board, platform, task)


def test_102_wrong_size_fault_beyond_the_slot(board, platform):
    """The platform advertises a size the slot cannot hold: refused up front, as a real one."""
    task = board.add_task(board.image("1.1"), target="1.1")
    platform.set_fault("wrong-size", SLOT_SIZE)
    result = run(board)
    assert_failed(board, result, task, 102, "slot of %d" % SLOT_SIZE, history=[TBU, FAILED])
    assert platform.sequence() == ["version_report", "check", "report"]
    assert slot_erased(board)


@pytest.mark.parametrize("delta", [1, -1, -4096])
def test_107_wrong_size_fault_detected_while_downloading(board, platform, delta):
    """Decision: the advertised size and the server's Content-Range total disagree. That is
    not a transient fault (no retry makes them agree) and not a space problem: the download
    ends at once with 107, without spending the task's retries."""
    new = board.image("1.1")
    task = board.add_task(new, target="1.1", retry=3)
    platform.set_fault("wrong-size", delta)
    result = run(board)
    assert_failed(board, result, task, 107, "server has %d bytes, the task says %d" % (len(new), len(new) + delta),
                  history=[TBU, DOWNLOADING, FAILED])
    assert len(downloads(platform)) == 1
    assert platform.sequence()[-1] == "report"
    assert_nothing_more(board, platform, task)


def test_103_memory_error_during_the_download(board, platform):
    app_main(board, progress=["MemoryError"])
    task = board.add_task(board.image("1.1"), target="1.1")
    result = run(board)
    assert_failed(board, result, task, 103, "out of memory", history=[TBU, DOWNLOADING, FAILED])
    assert calls(result.output, "progress") == ["MemoryError"]  # at 30 %, after one fragment
    assert platform.sequence() == ["version_report", "check", "token_check", "download", "report"]


def test_104_read_times_out_without_retry(board, platform):
    board.install(timeout=1)
    task = board.add_task(board.image("1.1"), target="1.1", retry=0)
    platform.set_fault("stall-body", (100000, 3))
    result = run(board)
    assert_failed(board, result, task, 104, "timed out", history=[TBU, DOWNLOADING, FAILED])
    assert ranges(platform) == [(0, 65535), (65536, 131071)]


def test_105_battery_at_power_level(board, platform):
    app_main(board, battery=[20], signal=[-40])
    task = board.add_task(board.image("1.1"), target="1.1", power=20)
    result = run(board)
    assert_failed(board, result, task, 105, "battery at or below 20", history=[TBU, FAILED])
    assert platform.sequence() == ["version_report", "check", "report"]  # no token check
    assert calls(result.output, "battery") == ["20"]
    assert slot_erased(board)


def test_106_signal_at_signal_level(board, platform):
    app_main(board, battery=[100], signal=[-80])
    task = board.add_task(board.image("1.1"), target="1.1", signal=-80, power=10)
    result = run(board)
    assert_failed(board, result, task, 106, "signal at or below -80", history=[TBU, FAILED])
    assert platform.sequence() == ["version_report", "check", "report"]
    assert calls(result.output, "signal") == ["-80"]
    assert slot_erased(board)


def test_gates_pass_just_above_the_levels(board, platform):
    app_main(board, battery=[21], signal=[-79], progress=[None])
    new = board.image("1.1")
    task = board.add_task(new, target="1.1", signal=-80, power=20)
    result = run(board)
    assert result.returncode == RESET_EXIT, result.output
    assert calls(result.output, "battery") == ["21", "21"]  # before and after the download
    assert calls(result.output, "signal") == ["-79"]
    assert calls(result.output, "progress") == ["None"] * 9  # every 10 %
    assert_upgraded(board, platform, task, new)


def test_107_dropped_connection_without_retry(board, platform):
    task = board.add_task(board.image("1.1"), target="1.1", retry=0)
    platform.set_fault("drop", 100000)
    result = run(board)
    assert_failed(board, result, task, 107, "connection|body ended|closed", history=[TBU, DOWNLOADING, FAILED])
    assert ranges(platform) == [(0, 65535), (65536, 131071)]


# ---- 2xx: after the download --------------------------------------------------------------------

def test_202_battery_low_after_the_download(board, platform):
    app_main(board, battery=[100, 50])
    new = board.image("1.1")
    task = board.add_task(new, target="1.1", power=50)
    result = run(board)
    assert_failed(board, result, task, 202, "battery at or below 50", reports=[(101, 0), (202, 0)],
                  history=[TBU, DOWNLOADING, UPGRADING, FAILED])
    assert calls(result.output, "battery") == ["100", "50"]
    assert slot_holds(board, new)  # downloaded and verified, but never switched to


def test_203_memory_error_after_the_download(board, platform):
    app_main(board, battery=[100, "MemoryError"])
    task = board.add_task(board.image("1.1"), target="1.1", power=50)
    result = run(board)
    assert_failed(board, result, task, 203, "out of memory after the download", reports=[(101, 0), (203, 0)],
                  history=[TBU, DOWNLOADING, UPGRADING, FAILED])


def test_204_image_of_another_version(board, platform):
    other = board.image("1.2")
    task = board.add_task(other, target="1.1")
    result = run(board)
    assert_failed(board, result, task, 204, "image is version '1.2', the task promised '1.1'",
                  history=[TBU, DOWNLOADING, FAILED])
    assert slot_holds(board, other)  # MD5 was right: the whole package came down
    assert_nothing_more(board, platform, task)


def test_204_image_for_another_chip(board, platform):
    s3 = board.image("1.1", chip="esp32s3")
    task = board.add_task(s3, target="1.1")
    result = run(board)
    assert_failed(board, result, task, 204, "image is for chip 9, this is chip 0", history=[TBU, DOWNLOADING, FAILED])


def test_205_corrupted_byte_on_the_wire(board, platform):
    new = board.image("1.1")
    task = board.add_task(new, target="1.1")
    platform.set_fault("corrupt", [5000, 150000])
    result = run(board)
    assert_failed(board, result, task, 205, "MD5 differs", history=[TBU, DOWNLOADING, FAILED])
    assert len(downloads(platform)) == 3  # the whole package, once
    assert "101" not in result.output
    assert_nothing_more(board, platform, task)


def test_205_wrong_md5_advertised(board, platform):
    new = board.image("1.1")
    task = board.add_task(new, target="1.1")
    platform.set_fault("wrong-md5")
    result = run(board)
    assert_failed(board, result, task, 205, "MD5 differs", history=[TBU, DOWNLOADING, FAILED])
    assert slot_holds(board, new)  # the bytes are right; the promise was wrong


def test_206_random_bytes(board, platform):
    junk = bytearray(random.Random(206).randbytes(100000))
    junk[0] = 0x00  # surely not the image magic 0xE9
    task = board.add_task(bytes(junk), target="1.1")
    result = run(board)
    assert_failed(board, result, task, 206, "not an ESP app image", history=[TBU, DOWNLOADING, FAILED])
    assert slot_holds(board, bytes(junk))


@pytest.mark.parametrize("where, why", [("middle", "segment checksum mismatch"),
                                        ("last", "appended SHA-256 mismatch")])
def test_206_image_with_one_byte_changed(board, platform, where, why):
    """The task's MD5 is computed over the changed bytes: only the image check can tell."""
    image = bytearray(board.image("1.1"))
    at = len(image) // 2 if where == "middle" else len(image) - 1
    image[at] ^= 0x01
    task = board.add_task(bytes(image), target="1.1")
    result = run(board)
    assert_failed(board, result, task, 206, why, history=[TBU, DOWNLOADING, FAILED])


def test_207_retries_exhausted(board, platform):
    new = board.image("1.1")
    task = board.add_task(new, target="1.1", retry=2)
    drops = [30000, 90000, 150000]
    platform.set_fault("drop", drops)
    result = run(board)
    assert_failed(board, result, task, 207, "2 retries exhausted", history=[TBU, DOWNLOADING, FAILED])
    # each resume at the sector boundary below the drop, to the end of its fragment; the third
    # drop is one too many
    assert ranges(platform) == request_ranges(len(new), drops)[:-1]
    assert platform.sequence().count("token_check") == 1


# ---- malformed task data from the check ---------------------------------------------------------

REPORTABLE = [
    ({"size": -1}, "size"),
    ({"size": 0}, "size"),
    ({"size": "196608"}, "size"),
    ({"size": None}, "size"),
    ({"md5": "z" * 32}, "md5"),
    ({"md5": "0" * 31}, "md5"),
    ({"md5": "0" * 33}, "md5"),
    ({"md5": "0x" + "0" * 30}, "md5"),
    ({"md5": "-" + "0" * 31}, "md5"),
    ({"md5": " " + "0" * 31}, "md5"),
    ({"md5": 0}, "md5"),
    ({"md5": None}, "md5"),
    ({"target": None}, "target"),
    ({"target": "1.1 beta"}, "target"),
    ({"target": "v" * 21}, "target"),
    ({"target": 11}, "target"),
    ({"retry": -1}, "retry"),
    ({"ipPort": "evil/host:80"}, "ip_port"),
    # each would have made a download URL that does not parse
    ({"ipPort": "host:port"}, "ip_port"),
    ({"ipPort": "host:0"}, "ip_port"),
    ({"ipPort": "host:65536"}, "ip_port"),
    ({"ipPort": "host:"}, "ip_port"),
    ({"ipPort": ":8080"}, "ip_port"),
    ({"ipPort": "a:1:2"}, "ip_port"),
    ({"ipPort": "host:+80"}, "ip_port"),
]


@pytest.mark.parametrize("fields, name", REPORTABLE, ids=[repr(f) for f, _ in REPORTABLE])
def test_malformed_task_data_is_107(board, platform, fields, name):
    """Decision: task data the device cannot act on, with a token it can name, fails the task
    with 107 (download failed, unknown error) before any token check or download."""
    task = board.add_task(board.image("1.1"), target="1.1")
    platform.set_fault("task-data", fields)
    result = run(board)
    assert_failed(board, result, task, 107, "task.*%s" % name, history=[TBU, FAILED])
    assert platform.sequence() == ["version_report", "check", "report"]
    assert slot_erased(board)


STATES = {
    "a list": [1, 2],
    "a string": "reported",
    "reported not text": {"reported": 5},
    "failed not a list": {"failed": "x"},
    "failed too short": {"failed": ["t"]},
    "failed with a code that is not lasting": {"failed": ["{token}", "{md5}", 107]},
    "failed with a code that is no code": {"failed": ["{token}", "{md5}", "206"]},
    "a dev_id that is no number": {"dev_id_tls": "../20001", "dev_id_http": 20001},  # looked up instead
}


@pytest.mark.parametrize("state", STATES.values(), ids=STATES.keys())
def test_a_state_file_of_another_shape_is_forgotten(board, platform, state):
    """ota_state.json damaged or written by something else: its fields of another shape are
    dropped, never acted on (before: an AttributeError out of the cycle, or the cycle failing
    the task with any code the file named)."""
    if "dev_id_tls" in state:
        board.install(device_id="", unique_id=UNIQUE_ID)
    new = board.image("1.1")
    task = board.add_task(new, target="1.1")
    text = json.dumps(state).replace("{token}", task.token).replace("{md5}", task.md5)
    (board.device.fs / "ota_state.json").write_text(text)
    first = run(board)
    assert first.returncode == RESET_EXIT and "Traceback" not in first.output, first.output
    assert task.reports == [(101, 0)]
    assert_upgraded(board, platform, task, new)


def test_huge_size_is_102(board, platform):
    task = board.add_task(board.image("1.1"), target="1.1")
    platform.set_fault("task-data", {"size": 10 ** 12})
    result = run(board)
    assert_failed(board, result, task, 102, "package of 1000000000000 bytes", history=[TBU, FAILED])
    assert platform.sequence() == ["version_report", "check", "report"]


BAD_TOKENS = [None, "", "a/b", "a b", "tok\r\nX-Evil: 1", "tok\n", "a?b=c", "t" * 129, 12345, ".", ".."]


@pytest.mark.parametrize("token", BAD_TOKENS, ids=[repr(t) for t in BAD_TOKENS])
def test_unusable_token_is_not_reported(board, platform, token):
    """Decision: a token that could break out of a URL cannot be reported against: nothing is
    reported, nothing downloaded, the cycle ends with a line naming the token."""
    task = board.add_task(board.image("1.1"), target="1.1")
    platform.set_fault("task-data", {"token": token})
    result = run(board)
    out = result.output
    assert result.returncode == 0, out
    assert re.search(r"task token", out), out
    assert platform.sequence() == ["version_report", "check"]  # the cycle ends at the FOTA check
    assert task.reports == [] and task.history == [TBU]
    assert_boot_untouched(board)
    assert_no_journal(board)
    assert slot_erased(board)
