"""Power cuts across the FOTA flow: the device loses power at a chosen point (a flash write or
erase by count, inside set_boot or mark-valid, or a SIGKILL when it prints a line), then boots
until it settles. Every scenario ends in the same invariants (``assert_settled``):

* the device runs the confirmed target (101 and 201 accepted once each, the target's version
  reported, the task completed) or the old image with a failure code accepted;
* never an image that was not verified: after every run the slot the bootloader would take
  holds exactly the old or the new image, and the running slot's otadata entry is VALID;
* no write that NOR flash cannot do; the journal and its side file gone;
* the platform's report record is the expected one, refusals (errno != 0) included: each one
  a scenario tolerates is listed there with the reason.

Download numbers with the default config: 192 KiB image = 48 sectors, 64 KiB Range fragments
(16 sectors), the journal saved after each fragment; flash writes of one run are numbered
from 1 (sector k of the run is write k; set_boot's otadata entry is the write after the last
sector).
"""
import json
import re

import pytest

from conftest import DEV_ID
from sim.device import RESET_EXIT, SECTOR, VALID

JOURNAL = "ota_journal.json"
OTA_1 = 0x190000
SECTORS = 48


# ---- helpers ---------------------------------------------------------------------------------

def journal(board):
    path = board.device.fs / JOURNAL
    return json.loads(path.read_text()) if path.exists() else None


def downloads(platform, since=0):
    """(first, last, connection, status) of every download request from request `since` on."""
    out = []
    for r in platform.requests[since:]:
        if r.endpoint == "download":
            m = re.fullmatch(r"bytes=(\d+)-(\d+)", r.headers.get("range", ""))
            assert m, r.headers
            out.append((int(m[1]), int(m[2]), r.connection, r.status))
    return out


def active_entry(device):
    """The otadata entry the bootloader takes (the valid one with the highest seq), or None."""
    valid = [e for e in device.boot_state() if e["valid"]]
    return max(valid, key=lambda e: e["seq"]) if valid else None


def check_selection(board, old, new):
    """Never an image that was not verified: whatever the bootloader would boot next holds
    exactly the old or the new image."""
    entry = active_entry(board.device)
    slot = entry["slot"] if entry else "ota_0"
    assert board.device.slot_image(slot) in (old, new), "the boot selection points at %s" % slot


def settle(board, old, new, limit=6):
    """Boot until a run finds nothing left to do ("ota: result None"); every run must end
    normally or in the reset after a switch, and print no traceback."""
    runs = []
    for _ in range(limit):
        result = board.boot()
        runs.append(result)
        check_selection(board, old, new)
        assert result.returncode in (0, RESET_EXIT), result.output
        assert "Traceback" not in result.output, result.output
        if result.returncode == 0 and "ota: result None" in result.output:
            return runs
    raise AssertionError("not settled after %d boots:\n%s" % (limit, "\n---\n".join(r.output for r in runs)))


def assert_settled(board, platform, task, old, new, accepted=(101, 201), refused=(), versions=1):
    """The invariants every scenario ends in. accepted: the report codes the platform took, in
    order; refused: the (code, errno) reports it answered with an error, in order; versions:
    how often the target's version was reported (endpoint 1) after the 201."""
    dev = board.device
    slot = dev.running_slot()
    running = dev.slot_image(slot)  # ValueError if the running slot holds no valid image
    entry = active_entry(dev)
    assert entry and entry["slot"] == slot and entry["state"] == VALID, dev.boot_state()
    assert dev.corruptions() == []
    assert not (dev.fs / JOURNAL).exists() and not (dev.fs / (JOURNAL + ".new")).exists()
    assert [code for code, errno in task.reports if errno == 0] == list(accepted), task.reports
    assert [(code, errno) for code, errno in task.reports if errno != 0] == list(refused), task.reports
    assert all(errno == 0 for _, errno in task.progress), task.progress
    reported = [json.loads(r.body).get("f_version") for r in platform.requests
                if r.endpoint == "version_report" and r.errno == 0]
    if 201 in accepted:
        assert running == new and slot == "ota_1"
        assert task.state == "completed", task.history
        assert platform.devices[DEV_ID].f_version == task.target
        assert reported[-1] == task.target and reported.count(task.target) == versions
    else:
        assert running == old and slot == "ota_0"
        assert task.state == "failed", task.history
        assert task.target not in reported


@pytest.fixture
def upgrade(board):
    """The images and the task of one upgrade 1.0 -> 1.1."""
    old = board.device.slot_image("ota_0")
    new = board.image("1.1")
    task = board.add_task(new, target="1.1")
    return old, new, task


def resume_after(board, platform, first, old, new):
    """After the cut run `first`: the next run asks for the rest from the journal's count on,
    and only for it (the first N bytes are hashed from flash, or the MD5 would fail)."""
    assert first.cut or first.returncode == -9, first.output
    check_selection(board, old, new)
    entry = journal(board)
    assert entry is not None and entry["phase"] == "download", entry
    written = entry["written"]
    assert written % SECTOR == 0
    since = len(platform.requests)
    runs = settle(board, old, new)
    ranges = downloads(platform, since)
    assert ranges[0][0] == written, (written, ranges)
    covered = written
    for start, end, _, status in ranges:
        assert (start, status) == (covered, 206)
        covered = end + 1
    assert covered == len(new)
    assert board.device.slot_image("ota_1") == new  # byte-exact
    return written, runs


# ---- mid-download ----------------------------------------------------------------------------

@pytest.mark.parametrize("cut", [
    "writes=1",          # the first sector: nothing durable yet, the journal says 0
    "writes=16",         # the last sector of the first fragment, before the journal save
    "writes=17",         # first sector of the second fragment: the journal says 65536
    "writes=20:100",     # a half-written sector (100 bytes programmed) in the second fragment
    "writes=40:4095",    # all but one byte of a sector in the third fragment
    "writes=48",         # the last sector of the package
    "erases=33",         # the erase of the first sector of the third fragment
    "erases=9:2048",     # a half-erased sector in the first fragment
])
def test_cut_mid_download_resumes_from_the_journal(board, platform, upgrade, cut):
    old, new, task = upgrade
    first = board.boot(cut=cut)
    assert first.cut, first.output
    n = int(re.search(r"=(\d+)", cut)[1])
    written, _ = resume_after(board, platform, first, old, new)
    assert written == (n - 1) // 16 * 65536  # the fragments saved before the cut one
    assert_settled(board, platform, task, old, new)
    assert task.history == ["to-be-upgraded", "downloading", "upgrading", "completed"]


@pytest.mark.parametrize("line, stall", [("progress 30%", 100000), ("progress 60%", 180000)])
def test_kill_on_progress_resumes_from_the_journal(board, platform, upgrade, line, stall):
    """A SIGKILL when the device prints a progress line lands somewhere after it (the
    progress report, the next fragment): wherever it landed, the next run resumes exactly
    from the journal's count. (The body stalls a while later, so that a slow host cannot let
    the download finish before the kill.)"""
    old, new, task = upgrade
    platform.set_fault("stall-body", (stall, 1))
    running = board.start()
    running.kill_when(line)
    first = running.wait()
    resume_after(board, platform, first, old, new)
    assert_settled(board, platform, task, old, new)


def test_the_journal_is_saved_before_the_progress_report(board, platform, upgrade):
    """The progress report is a round trip to the platform (seconds on a slow link): a cut
    while it waits for the answer loses nothing of the fragment already in flash."""
    old, new, task = upgrade
    platform.set_fault("stall", ("progress", 1))
    running = board.start()
    running.kill_when("progress 30%")  # the device now waits 1 s for the progress answer
    written, _ = resume_after(board, platform, running.wait(), old, new)
    assert written == 65536
    assert_settled(board, platform, task, old, new)


def test_cut_on_small_fragments_resumes_at_the_sector(board, platform, upgrade):
    """With one-sector fragments the journal follows every sector: the cut loses only the
    sector being written, which alone is erased a second time."""
    old, new, task = upgrade
    board.install(fragment_size=4096, progress_step=25)
    first = board.boot(cut="writes=30:1000")
    written, _ = resume_after(board, platform, first, old, new)
    assert written == 29 * SECTOR
    slot = OTA_1 // SECTOR
    counts = {s - slot: n for s, n in board.device.erase_counts().items() if slot <= s < slot + SECTORS}
    assert counts == {s: 2 if s == 29 else 1 for s in range(SECTORS)}
    assert_settled(board, platform, task, old, new)


def test_two_cuts_in_a_row(board, platform, upgrade):
    old, new, task = upgrade
    assert board.boot(cut="writes=20:10").cut
    assert journal(board)["written"] == 65536
    assert board.boot(cut="writes=20").cut  # 16 sectors of this run: up to 131072 in flash
    assert journal(board)["written"] == 131072
    resume_after(board, platform, board.boot(cut="erases=3:100"), old, new)
    assert_settled(board, platform, task, old, new)


# ---- between the download and the switch -------------------------------------------------------

@pytest.mark.parametrize("cut, then", [
    # 101 accepted, the journal VERIFIED, otadata untouched: the old image boots, finds the
    # VERIFIED journal and finishes the switch
    ("set_boot=before", "ota_0"),
    # the inactive otadata sector erased: the same
    ("set_boot=erased", "ota_0"),
    # the new entry programmed only in part (16 of 32 bytes: seq without the CRC): invalid,
    # the bootloader keeps the old entry
    ("writes=49:16", "ota_0"),
    # the new entry written (NEW) but the journal still VERIFIED: the new image boots pending,
    # is the target, confirms
    ("set_boot=after", "ota_1"),
])
def test_cut_inside_set_boot(board, platform, upgrade, cut, then):
    old, new, task = upgrade
    first = board.boot(cut=cut)
    assert first.cut and "reported 101" in first.output and "switching" not in first.output
    assert journal(board)["phase"] == "verified"
    assert task.reports == [(101, 0)]
    runs = settle(board, old, new)
    assert runs[0].slot == then
    assert_settled(board, platform, task, old, new)
    assert len(downloads(platform)) == 3  # nothing downloaded again


def test_kill_after_101_before_the_switch(board, platform, upgrade):
    """A SIGKILL on "reported 101" lands before or after the journal says VERIFIED, before or
    after set_boot, or after the reset: every one of those states settles on the target. A
    101 sent again (the journal still said DOWNLOAD: the usual case, the kill is quick) is
    refused with 21 while upgrading, as its token check is with 17."""
    old, new, task = upgrade
    running = board.start()
    running.kill_when("reported 101")
    running.wait()
    check_selection(board, old, new)
    settle(board, old, new)
    refused = [(101, 21)] if (101, 21) in task.reports else []
    assert_settled(board, platform, task, old, new, refused=refused)


def test_cut_after_101_before_the_journal_says_verified(board, platform, upgrade):
    """The state a cut leaves between the 101 report and the VERIFIED journal save (no flash
    write in that window to aim at, so it is made from the set_boot cut): the platform has the
    task upgrading, the journal says DOWNLOAD with every byte written. The next run hashes the
    slot from flash, checks the image and switches without downloading again; the platform
    refuses its token check with 17 (only to-be-upgraded or downloading may check) and its
    second 101 with 21 (already upgrading): both are expected there."""
    old, new, task = upgrade
    assert board.boot(cut="set_boot=before").cut
    entry = journal(board)
    entry["phase"] = "download"
    (board.device.fs / JOURNAL).write_text(json.dumps(entry))
    since = len(platform.requests)
    settle(board, old, new)
    assert downloads(platform, since) == []
    assert [r.errno for r in platform.requests[since:] if r.endpoint == "token_check"] == [17]
    assert_settled(board, platform, task, old, new, refused=[(101, 21)])


def test_kill_after_the_switch_before_the_reset(board, platform, upgrade):
    old, new, task = upgrade
    running = board.start()
    running.kill_when("switching to")  # the reset follows at once: killed or reset, the same
    running.wait()
    assert journal(board)["phase"] == "switched"
    runs = settle(board, old, new)
    assert runs[0].slot == "ota_1" and "ota: confirmed 1.1" in runs[0].output
    assert_settled(board, platform, task, old, new)


# ---- the first boot of the new image -----------------------------------------------------------

def switched(board, task):
    """Run the upgrade up to the reset after the switch."""
    assert board.boot().reset
    assert journal(board)["phase"] == "switched" and task.reports == [(101, 0)]


def test_cut_before_mark_valid_rolls_back_and_reports_204(board, platform, upgrade):
    """The new image boots pending-verify and loses power before it marked itself valid: the
    bootloader rolls back at the next reset, the old image finds the SWITCHED journal with
    another version running and reports 204. The task fails; the device keeps the old image."""
    old, new, task = upgrade
    switched(board, task)
    cut = board.boot(cut="mark_valid=before")
    assert cut.cut and cut.slot == "ota_1" and "confirming 1.1" in cut.output
    runs = settle(board, old, new)
    assert runs[0].rolled_back and runs[0].slot == "ota_0"
    assert "rolled back" in runs[0].output
    assert_settled(board, platform, task, old, new, accepted=(101, 204))


def test_cut_inside_mark_valid_after_the_erase(board, platform, upgrade):
    """mark-valid rewrites the active otadata entry in place (ESP-IDF's rewrite_ota_seq: erase
    the sector, write the entry). Cut between the two, the new image's entry is gone: the
    bootloader takes the other one, the old image (no ABORTED entry, no rollback flag), which
    reports 204 as after a rollback."""
    old, new, task = upgrade
    switched(board, task)
    assert board.boot(cut="mark_valid=erased").cut
    runs = settle(board, old, new)
    assert (runs[0].slot, runs[0].rolled_back) == ("ota_0", False)
    assert_settled(board, platform, task, old, new, accepted=(101, 204))


def test_cut_after_mark_valid_before_201(board, platform, upgrade):
    """Marked valid, then the power dies before the 201: the new image stays and confirms
    again at the next boot (mark-valid again is a no-op); 201 goes out once."""
    old, new, task = upgrade
    switched(board, task)
    assert board.boot(cut="mark_valid=after").cut
    assert task.reports == [(101, 0)]
    runs = settle(board, old, new)
    assert runs[0].slot == "ota_1" and not runs[0].rolled_back
    assert_settled(board, platform, task, old, new)


def test_cut_after_201_before_the_journal_is_gone(board, platform, upgrade):
    """The state a cut leaves after the 201 report and before the journal is discarded (made
    by putting the journal of the confirming run back): the next run confirms again; the
    platform answers its second 201 with 20 (task already completed), which the flow takes as
    done, and the target's version is reported a second time (harmless: it is the version)."""
    old, new, task = upgrade
    switched(board, task)
    saved = (board.device.fs / JOURNAL).read_text()
    settle(board, old, new)
    (board.device.fs / JOURNAL).write_text(saved)
    settle(board, old, new)
    assert_settled(board, platform, task, old, new, refused=[(201, 20)], versions=2)


def test_kill_while_confirming(board, platform, upgrade):
    """A SIGKILL when the new image prints "confirming" lands before mark-valid (rollback,
    204) or after it (201): either way one of the two consistent ends."""
    old, new, task = upgrade
    switched(board, task)
    running = board.start()
    running.kill_when("confirming")
    running.wait()
    runs = settle(board, old, new)
    if runs[0].slot == "ota_0":
        assert_settled(board, platform, task, old, new, accepted=(101, 204))
    else:
        assert_settled(board, platform, task, old, new)


# ---- without power cuts ------------------------------------------------------------------------

def test_clean_upgrade_erases_each_sector_once_on_one_connection(board, platform, upgrade):
    old, new, task = upgrade
    assert board.boot().reset
    slot = OTA_1 // SECTOR
    counts = {s: n for s, n in board.device.erase_counts().items() if s >= slot}
    assert counts == {slot + s: 1 for s in range(SECTORS)}
    assert platform.sequence().count("token_check") == 1
    ranges = downloads(platform)
    assert [(a, b) for a, b, _, _ in ranges] == [(0, 65535), (65536, 131071), (131072, 196607)]
    assert {conn for _, _, conn, _ in ranges} == {1} and platform.connections == 1
    settle(board, old, new)
    assert_settled(board, platform, task, old, new)


@pytest.mark.parametrize("drop", [100000, 65536 + 4096, 4095])
def test_dropped_connection_downloads_at_most_one_sector_again(board, platform, upgrade, drop):
    old, new, task = upgrade
    platform.faults.drop_at = [drop]
    assert board.boot().reset
    ranges = downloads(platform)
    resumed = [r for r in ranges if r[2] != ranges[0][2]]
    start = resumed[0][0]
    assert start == drop // SECTOR * SECTOR and drop - start < SECTOR
    slot = OTA_1 // SECTOR
    counts = {s: n for s, n in board.device.erase_counts().items() if s >= slot}
    assert counts == {slot + s: 1 for s in range(SECTORS)}  # the torn sector was never written
    settle(board, old, new)
    assert_settled(board, platform, task, old, new)


# ---- the journal file --------------------------------------------------------------------------
#
# The journal is replaced by writing ota_journal.json.new and renaming it over the journal
# (POSIX rename on the unix port, LittleFS rename on a board: both replace in one step). A cut
# can leave a partial side file, never a partial journal. A journal that is unreadable anyway
# (a damaged filesystem, another program's file, an older format) must be dropped, and the
# cycle must start over from the platform's view: download from byte 0, erasing again.

def cut_in_the_second_fragment(board, platform):
    assert board.boot(cut="writes=20").cut
    entry = journal(board)
    assert entry["written"] == 65536
    return entry


@pytest.mark.parametrize("damage", [
    "truncated", "garbage", "empty", "list", "other format", "written beyond size",
    "missing field", "bool size", "unknown phase", "written not sector-aligned",
])
def test_a_journal_that_cannot_be_trusted_is_dropped(board, platform, upgrade, damage):
    old, new, task = upgrade
    entry = cut_in_the_second_fragment(board, platform)
    text = json.dumps(entry)
    bad = {
        "truncated": text[: len(text) // 2],
        "garbage": "\x00\xff\x13 not json",
        "empty": "",
        "list": json.dumps([entry]),
        "other format": json.dumps(dict(entry, format=2)),
        "written beyond size": json.dumps(dict(entry, written=entry["size"] + SECTOR)),
        "missing field": json.dumps({k: v for k, v in entry.items() if k != "md5"}),
        "bool size": json.dumps(dict(entry, size=True)),
        "unknown phase": json.dumps(dict(entry, phase="applied")),
        # a resume from there would write package bytes shifted into the sector below it
        "written not sector-aligned": json.dumps(dict(entry, written=entry["written"] - 100)),
    }[damage]
    (board.device.fs / JOURNAL).write_text(bad, errors="surrogateescape")
    since = len(platform.requests)
    settle(board, old, new)
    assert downloads(platform, since)[0][0] == 0  # started over
    assert_settled(board, platform, task, old, new)


def test_a_journal_of_another_task_is_dropped(board, platform, upgrade):
    old, new, task = upgrade
    entry = cut_in_the_second_fragment(board, platform)
    (board.device.fs / JOURNAL).write_text(json.dumps(dict(entry, token="ota_someothertask")))
    since = len(platform.requests)
    settle(board, old, new)
    assert downloads(platform, since)[0][0] == 0
    assert_settled(board, platform, task, old, new)


@pytest.mark.parametrize("side", ["partial", "whole"])
def test_a_side_file_left_by_a_cut_is_ignored(board, platform, upgrade, side):
    """A cut while the side file was written (partial) or before the rename (whole, one
    fragment further): the journal still holds the previous state, and that one counts."""
    old, new, task = upgrade
    entry = cut_in_the_second_fragment(board, platform)
    ahead = json.dumps(dict(entry, written=131072))
    (board.device.fs / (JOURNAL + ".new")).write_text(ahead[:20] if side == "partial" else ahead)
    since = len(platform.requests)
    settle(board, old, new)
    assert downloads(platform, since)[0][0] == 65536
    assert_settled(board, platform, task, old, new)


def test_a_journal_without_a_task_is_dropped(board, platform, upgrade):
    """The task was cancelled on the platform while the device was off."""
    old, new, task = upgrade
    cut_in_the_second_fragment(board, platform)
    task.cancel()
    result = board.boot()
    assert "ota: result None" in result.output and journal(board) is None
    assert board.device.slot_image("ota_0") == old and board.device.running_slot() == "ota_0"
