"""Every server-side fault switch of the mock platform against the device, end to end: real
micropython runs boot.py/main.py and firmware/ on the fake ESP32 against the mock.

Each fault ends as it must: the upgrade completes byte exact (drops, stalls, 5xx, errno 7,
ignored Range, endless headers on the download, chunked replies, redirects), or the task ends
with its report code, or the platform ends it (expired, cancelled: STOPPED, nothing
reported), or the cycle ends without touching anything and the next one carries on.
Report codes reached through faults that belong to a code (corrupt and wrong-md5: 205,
wrong-size: 102/107, stall-body: 104, drop: 107/207) are in test_fota_codes.py.
"""
from __future__ import annotations

import json
import re
import threading
import time

import pytest

from test_fota_codes import (COMPLETED, DOWNLOADING, SLOT_SECTOR, STOPPED, TBU, UPGRADING, assert_boot_untouched,
                             assert_failed, assert_no_journal, assert_upgraded, downloads, journal_exists,
                             ranges, result_of, run, slot_holds, JOURNAL)
from conftest import download_sequence, request_ranges
from sim.device import RESET_EXIT

SECTOR = 4096


def upgraded_in_one_boot(board, platform, task, package, result, token_checks=1):
    """The boot switched to the new image, which the next boot confirms."""
    assert result.returncode == RESET_EXIT, result.output
    assert platform.sequence().count("token_check") == token_checks
    assert task.reports == [(101, 0)]
    assert_upgraded(board, platform, task, package)
    assert task.history == [TBU, DOWNLOADING, UPGRADING, COMPLETED]


def erased_once(board, size):
    """Every sector of the package erased exactly once, however often the download resumed."""
    counts = board.device.erase_counts()
    return [counts.get(SLOT_SECTOR + i, 0) for i in range((size + SECTOR - 1) // SECTOR)] \
        == [1] * ((size + SECTOR - 1) // SECTOR)


def when(predicate, action, timeout=30.0):
    """Run action() from a thread as soon as predicate() holds (polled every 5 ms)."""
    def watch():
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                action()
                return
            time.sleep(0.005)
    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def cycle_ended(result, why):
    """The cycle ended on an error before any task outcome: main.py printed the reason and the
    application started (no reset, no result line)."""
    out = result.output
    assert result.returncode == 0, out
    assert result_of(out) == "none", out
    assert re.search(why, out), out


# ---- drops ----------------------------------------------------------------------------------------

def test_drops_resume_from_the_sector_boundary_below(board, platform):
    new = board.image("1.1")
    drops = [5000, 65536, 100001, 196000]
    task = board.add_task(new, target="1.1", retry=len(drops))  # exactly enough retries
    platform.set_fault("drop", drops)
    result = run(board)
    # each resume starts at the last sector boundary at or below the drop: < 4096 bytes again
    assert ranges(platform) == request_ranges(len(new), drops)
    starts = [start for start, _ in ranges(platform)]
    assert all(drop // SECTOR * SECTOR in starts for drop in drops)
    assert [r.note for r in downloads(platform)].count("fault drop") == len(drops)
    assert result.output.count("download interrupted") == len(drops)
    assert platform.connections == 1 + len(drops)  # a new connection after each drop
    assert erased_once(board, len(new))
    upgraded_in_one_boot(board, platform, task, new, result)


def test_drop_at_the_very_start_of_a_fragment(board, platform):
    new = board.image("1.1")
    task = board.add_task(new, target="1.1", retry=1)
    platform.set_fault("drop", 65536)  # the head of the second fragment, then nothing
    result = run(board)
    assert ranges(platform) == [(0, 65535), (65536, 131071), (65536, 131071), (131072, 196607)]
    upgraded_in_one_boot(board, platform, task, new, result)


# ---- stalls -------------------------------------------------------------------------------------

def test_stall_in_the_headers_resumes(board, platform):
    board.install(timeout=1)
    new = board.image("1.1")
    task = board.add_task(new, target="1.1", retry=1)
    platform.set_fault("stall", "download:3")
    result = run(board)
    assert re.search(r"download interrupted at 0 .*(too slow|timed out)", result.output), result.output
    assert ranges(platform)[:2] == [(0, 65535), (0, 65535)]
    upgraded_in_one_boot(board, platform, task, new, result)


def test_stall_in_the_headers_without_retry_is_104(board, platform):
    board.install(timeout=1)
    task = board.add_task(board.image("1.1"), target="1.1", retry=0)
    platform.set_fault("stall", "download:3")
    result = run(board)
    assert_failed(board, result, task, 104, "too slow|timed out", history=[TBU, DOWNLOADING, "failed"])
    assert len(downloads(platform)) == 1


def test_stall_in_the_body_resumes(board, platform):
    board.install(timeout=1)
    new = board.image("1.1")
    task = board.add_task(new, target="1.1", retry=1)
    platform.set_fault("stall-body", "100000:3")
    result = run(board)
    assert re.search(r"download interrupted at 98304 .*timed out", result.output), result.output
    assert ranges(platform) == request_ranges(len(new), [100000])
    assert erased_once(board, len(new))
    upgraded_in_one_boot(board, platform, task, new, result)


# ---- HTTP 5xx and errno 7 ---------------------------------------------------------------------------

def test_5xx_on_the_download_is_retried_like_a_drop(board, platform):
    new = board.image("1.1")
    task = board.add_task(new, target="1.1", retry=2)
    platform.set_fault("http-error", "download:503:2")
    result = run(board)
    assert [r.status for r in downloads(platform)] == [503, 503] + [206] * len(request_ranges(len(new)))
    assert result.output.count("HTTP status 503") == 2
    upgraded_in_one_boot(board, platform, task, new, result)


def test_5xx_on_the_download_without_retry_is_107(board, platform):
    task = board.add_task(board.image("1.1"), target="1.1", retry=0)
    platform.set_fault("http-error", "download:500")
    result = run(board)
    assert_failed(board, result, task, 107, "HTTP status 500", history=[TBU, DOWNLOADING, "failed"])


API = ["version_report", "check", "token_check", "progress", "report"]


@pytest.mark.parametrize("fault", ["http-error=%s:503", "errno=%s:7"])
@pytest.mark.parametrize("endpoint", API)
def test_api_trouble_once_is_retried_at_once(board, platform, endpoint, fault):
    """Decision: HTTP 5xx and errno 7 (internal error) are the platform's own trouble: an API
    call answered so is made once more, at once; the upgrade goes on in the same boot."""
    new = board.image("1.1")
    task = board.add_task(new, target="1.1", retry=0)  # not the download's retries
    name, arg = (fault % endpoint).split("=")
    platform.set_fault(name, arg)
    result = run(board)
    calls = [r for r in platform.requests if r.endpoint == endpoint]
    assert calls[0].status == 503 if name == "http-error" else calls[0].errno == 7
    assert calls[1].status == 200 and calls[1].errno == 0
    expected = ["version_report", "check", "token_check"] + download_sequence(len(new)) + ["report"]
    expected.insert(expected.index(endpoint), endpoint)
    assert platform.sequence() == expected
    upgraded_in_one_boot(board, platform, task, new, result, token_checks=2 if endpoint == "token_check" else 1)


@pytest.mark.parametrize("fault, arg, why", [
    ("http-error", "check:503:2", "ServerError: HTTP status 503"),
    ("errno", "check:7:2", "PlatformError: platform errno 7"),
    ("bad-json", "check", "ProtocolError: .*JSON"),
    ("endless-header", "check", "ProtocolError: .*line"),
    ("stall", "check:3", "Timeout"),
])
def test_check_that_fails_ends_the_cycle_and_the_next_one_upgrades(board, platform, fault, arg, why):
    """Decision: a check that fails (after the one retry for 5xx/errno 7) is not "no task": the
    cycle ends with the reason printed, nothing reported, nothing touched; the next cycle asks
    again."""
    board.install(timeout=1)
    new = board.image("1.1")
    task = board.add_task(new, target="1.1")
    platform.set_fault(fault, arg)
    result = run(board)
    cycle_ended(result, why)
    assert "download" not in platform.sequence() and "token_check" not in platform.sequence()
    assert task.reports == [] and task.history == [TBU]
    assert_boot_untouched(board)
    assert_no_journal(board)
    platform.requests.clear()
    second = run(board)
    assert platform.sequence()[0] == "check"  # the version was reported in the first boot
    upgraded_in_one_boot(board, platform, task, new, second)


def test_errno_7_on_check_keeps_the_journal_of_a_download_under_way(board, platform):
    """A platform in trouble has not said the task is gone: the bytes in flash are kept and
    the next cycle resumes where the power went."""
    new = board.image("1.1")
    task = board.add_task(new, target="1.1")
    platform.set_fault("stall-body", "140000:2")  # holds the device in the third fragment
    running = board.start()
    running.kill_when(r"progress 60%")  # a power cut: the journal holds two fragments
    written = json.loads((board.device.fs / JOURNAL).read_text())["written"]
    assert written == 131072
    platform.clear_faults()
    platform.set_fault("errno", "check:7:2")
    second = run(board)
    cycle_ended(second, "PlatformError: platform errno 7")
    assert journal_exists(board)
    assert json.loads((board.device.fs / JOURNAL).read_text())["written"] == written
    platform.requests.clear()
    third = run(board)
    assert ranges(platform)[0][0] == written  # resumed, not started over
    assert third.returncode == RESET_EXIT, third.output
    assert_upgraded(board, platform, task, new)


def test_token_check_that_fails_leaves_nothing_and_the_next_cycle_upgrades(board, platform):
    new = board.image("1.1")
    task = board.add_task(new, target="1.1")
    platform.set_fault("bad-json", "token_check")  # the platform took it; the answer is garbage
    result = run(board)
    cycle_ended(result, "ProtocolError: .*JSON")
    assert "download" not in platform.sequence() and task.reports == []
    assert task.state == DOWNLOADING
    assert_no_journal(board)
    assert_boot_untouched(board)
    second = run(board)
    assert second.returncode == RESET_EXIT, second.output
    assert_upgraded(board, platform, task, new)


def test_report_101_answered_with_garbage_is_finished_without_downloading_again(board, platform):
    """The platform took the 101 (the task is upgrading) but its answer was bad JSON: the
    cycle ends without a switch; the next one finds the whole package in flash, checks it
    again, sends 101 again (refused with 21: already upgrading) and switches."""
    new = board.image("1.1")
    task = board.add_task(new, target="1.1")
    platform.set_fault("bad-json", "report")
    result = run(board)
    cycle_ended(result, "ProtocolError: .*JSON")
    assert task.state == UPGRADING and task.reports == [(101, 0)]
    assert journal_exists(board)
    assert_boot_untouched(board)
    platform.requests.clear()
    second = run(board)
    assert second.returncode == RESET_EXIT, second.output
    assert downloads(platform) == []  # nothing downloaded again
    assert task.reports == [(101, 0), (101, 21)]
    assert_upgraded(board, platform, task, new)


def test_final_report_lost_twice_is_kept_and_sent_first_next_cycle(board, platform):
    """205 cannot reach the platform (5xx twice): the code stays in the journal and the slot
    is not touched again; the next cycle sends it before anything else and downloads
    nothing (the task is over)."""
    new = board.image("1.1")
    task = board.add_task(new, target="1.1")
    platform.set_fault("corrupt", 1000)
    platform.set_fault("http-error", "report:502:2")
    result = run(board)
    cycle_ended(result, "ServerError: HTTP status 502")
    assert task.reports == [] and task.state == DOWNLOADING
    kept = json.loads((board.device.fs / JOURNAL).read_text())
    assert (kept["phase"], kept["code"], kept["token"]) == ("report", 205, task.token)
    assert_boot_untouched(board)
    platform.requests.clear()
    second = run(board)
    assert second.returncode == 0, second.output
    assert platform.sequence()[0] == "report"  # before the version report and the check
    assert downloads(platform) == []
    assert task.reports == [(205, 0)] and task.state == "failed"
    assert_no_journal(board)
    assert_boot_untouched(board)


def test_package_that_failed_for_a_lasting_reason_is_not_downloaded_again(board, platform):
    """The platform refused the 205 (errno 4) and offers the same package again: the device
    remembers that this token and MD5 ended in 205 and reports it again at once instead of
    erasing and downloading the slot a second time."""
    new = board.image("1.1")
    task = board.add_task(new, target="1.1")
    platform.set_fault("corrupt", 1000)
    platform.set_fault("errno", "report:4:1")
    first = run(board)
    assert first.returncode == 0, first.output
    assert "not taken" in first.output and task.state == DOWNLOADING
    erases = sum(board.device.erase_counts().values())
    platform.clear_faults()
    platform.requests.clear()
    second = run(board)
    assert downloads(platform) == [] and "token_check" not in platform.sequence()
    assert task.reports[-1] == (205, 0) and task.state == "failed"
    assert sum(board.device.erase_counts().values()) == erases
    assert_no_journal(board)


# ---- the download's reply bent out of shape ----------------------------------------------------

def test_endless_header_on_the_download_resumes(board, platform):
    new = board.image("1.1")
    task = board.add_task(new, target="1.1", retry=1)
    platform.set_fault("endless-header", "download")
    result = run(board)
    assert re.search(r"download interrupted at 0 .*line", result.output), result.output
    assert ranges(platform)[:2] == [(0, 65535), (0, 65535)]
    upgraded_in_one_boot(board, platform, task, new, result)


def test_endless_header_on_an_api_call_after_the_download(board, platform):
    new = board.image("1.1")
    task = board.add_task(new, target="1.1")
    platform.set_fault("endless-header", "report")
    result = run(board)
    cycle_ended(result, "ProtocolError: .*line")
    assert task.reports == [] and journal_exists(board)  # the mock never read the report
    assert_boot_untouched(board)
    platform.requests.clear()
    second = run(board)
    assert downloads(platform) == []
    assert second.returncode == RESET_EXIT, second.output
    assert_upgraded(board, platform, task, new)


def test_ignore_range_whole_file_in_one_reply(board, platform):
    new = board.image("1.1")
    task = board.add_task(new, target="1.1")
    platform.set_fault("ignore-range")
    result = run(board)
    assert [r.status for r in downloads(platform)] == [200]
    # the reply keeps the connection busy to its end: every step is reported after it
    assert platform.sequence() == ["version_report", "check", "token_check", "download"] + ["progress"] * 9 \
        + ["report"]
    upgraded_in_one_boot(board, platform, task, new, result)


def test_ignore_range_with_a_resume_is_byte_exact(board, platform):
    new = board.image("1.1")
    task = board.add_task(new, target="1.1", retry=1)
    platform.set_fault("ignore-range")
    platform.set_fault("drop", 100000)
    result = run(board)
    assert [r.status for r in downloads(platform)] == [200, 200]
    assert [start for start, _ in ranges(platform)] == [0, 98304]  # asked for; got it all, skipped
    assert erased_once(board, len(new))
    upgraded_in_one_boot(board, platform, task, new, result)


def test_chunked_api_replies(board, platform):
    new = board.image("1.1")
    task = board.add_task(new, target="1.1")
    platform.set_fault("chunked")
    result = run(board)
    assert platform.connections == 1
    upgraded_in_one_boot(board, platform, task, new, result)


@pytest.mark.parametrize("kind", ["absolute", "relative"])
def test_redirected_download_is_byte_exact(board, platform, kind):
    new = board.image("1.1")
    task = board.add_task(new, target="1.1", retry=0)
    platform.set_fault("redirect", kind)
    result = run(board)
    got = downloads(platform)
    n = len(request_ranges(len(new)))
    assert [r.status for r in got] == [302, 206] * n
    assert [r.path.startswith("/mock/file/") for r in got] == [False, True] * n
    assert [r.headers["range"] for r in got[::2]] == [r.headers["range"] for r in got[1::2]]
    assert platform.connections == 1
    upgraded_in_one_boot(board, platform, task, new, result)


# ---- the platform ends the task ----------------------------------------------------------------

def assert_stopped(board, platform, task, result, state, errno_said):
    out = result.output
    assert result.returncode == 0, out
    assert result_of(out) == STOPPED, out
    assert re.search(r"^ota: task ended by the platform: platform errno %d" % errno_said, out, re.M), out
    assert task.state == state
    assert all(e == errno_said for _, e in task.reports)  # none was taken
    assert_boot_untouched(board)
    assert_no_journal(board)
    # nothing downloaded after the platform said so
    said = next(i for i, r in enumerate(platform.requests) if r.errno == errno_said)
    assert all(r.endpoint != "download" for r in platform.requests[said + 1:]), platform.sequence()


def test_expire_token_before_the_boot_means_no_task(board, platform):
    task = board.add_task(board.image("1.1"), target="1.1")
    platform.set_fault("expire-token")
    result = run(board)
    assert result.returncode == 0 and result_of(result.output) is None, result.output
    assert platform.sequence() == ["version_report", "check", "check"]
    assert task.state == "expired" and task.reports == []
    assert_boot_untouched(board)


def test_expire_token_mid_download_stops(board, platform):
    task = board.add_task(board.image("1.1"), target="1.1")
    platform.set_fault("stall-body", "70000:1")  # a window in the second fragment

    def second_fragment_asked():
        return any(r.headers.get("range", "").startswith("bytes=65536-") for r in downloads(platform))

    watcher = when(second_fragment_asked, lambda: platform.set_fault("expire-token"))
    result = run(board)
    watcher.join()
    assert_stopped(board, platform, task, result, "expired", 12)
    assert platform.sequence()[-1] == "progress"  # 40 %: refused with 12


def test_expire_token_before_the_first_fragment_stops(board, platform):
    """The download answers 404; the token check tells why (12): stop, report nothing."""
    task = board.add_task(board.image("1.1"), target="1.1")
    platform.set_fault("stall", "download:1")
    watcher = when(lambda: downloads(platform), lambda: platform.set_fault("expire-token"))
    result = run(board)
    watcher.join()
    assert platform.sequence() == ["version_report", "check", "token_check", "download", "token_check"]
    assert downloads(platform)[0].status == 404
    assert_stopped(board, platform, task, result, "expired", 12)


@pytest.mark.parametrize("offset", [30000, 100000, 150000])
def test_cancel_mid_download_stops(board, platform, offset):
    """The next progress report after the cancel is refused (22): the cycle ends as the
    platform ended it (0), with no traceback and nothing reported. (Every step is reported
    before the 101, so the refusal always comes to a progress report first.)"""
    task = board.add_task(board.image("1.1"), target="1.1")
    platform.set_fault("cancel-at", offset)
    result = run(board)
    assert_stopped(board, platform, task, result, "cancelled", 22)
    assert platform.sequence()[-1] == "progress" and platform.requests[-1].errno == 22
    assert "Traceback" not in result.output
    assert task.reports == []


# ---- connections --------------------------------------------------------------------------------

@pytest.mark.parametrize("ip_port", [None, "auto"])
def test_one_connection_for_the_whole_first_boot(board, platform, ip_port):
    """Without ipPort the download uses the API connection; with ipPort "auto" the mock
    advertises the very host:port the device already talks to, so the same holds."""
    new = board.image("1.1")
    task = board.add_task(new, target="1.1", ip_port=ip_port)
    result = run(board)
    assert platform.connections == 1
    assert len({r.connection for r in platform.requests}) == 1
    upgraded_in_one_boot(board, platform, task, new, result)


def test_ip_port_of_another_host_name_opens_a_download_connection(board, platform):
    """The config says "localhost", ipPort says 127.0.0.1: a second origin, so a second
    connection for the download, the API one kept alive for the reports."""
    board.install(host="localhost")
    new = board.image("1.1")
    task = board.add_task(new, target="1.1", ip_port="auto")
    result = run(board)
    assert platform.connections == 2
    api_conn = {r.connection for r in platform.requests if r.endpoint != "download"}
    dl_conn = {r.connection for r in downloads(platform)}
    assert len(api_conn) == 1 and len(dl_conn) == 1 and api_conn != dl_conn
    upgraded_in_one_boot(board, platform, task, new, result)


# ---- malformed task data after the switch -------------------------------------------------------

def test_malformed_tasking_answer_does_not_block_the_confirmation(board, platform):
    """After the reboot, endpoint 7 only proves the new image reaches the platform: an answer
    whose task data is malformed proves it as well, and the upgrade is confirmed."""
    new = board.image("1.1")
    task = board.add_task(new, target="1.1")
    first = run(board)
    assert first.returncode == RESET_EXIT, first.output
    platform.set_fault("task-data", {"md5": None})
    assert_upgraded(board, platform, task, new)
    assert board.device.running_slot() == "ota_1"


def test_confirmation_survives_a_garbled_reply_and_a_5xx_pair(board, platform):
    """The one call that proves the new image reaches the platform is asked again, with
    backoff, when its answer is garbage or two 5xx: a bad moment of the platform does not
    throw away a good upgrade (the image stays pending meanwhile)."""
    new = board.image("1.1")
    task = board.add_task(new, target="1.1")
    first = run(board)
    assert first.returncode == RESET_EXIT, first.output
    platform.set_fault("bad-json", "tasking:1")
    platform.set_fault("http-error", "tasking:503:2")
    platform.requests.clear()
    assert_upgraded(board, platform, task, new)
    asked = [r for r in platform.requests if r.endpoint == "tasking"]
    assert len(asked) == 4  # garbage; 503, 503 (asked again at once); the answer
    assert task.reports[-1] == (201, 0)
