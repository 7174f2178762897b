# A firmware task from the gates to the boot switch: the download stage (Range fragments
# straight into the slot, MD5 as the bytes pass, resume after a drop; failures are 1xx, 205
# for the MD5) then the upgrade stage (image checks, 101, battery, switch; failures are 2xx).
from micropython import const
import binascii
import hashlib
import time

from onenet_ota import journal, fota, http
from onenet_ota.api import PlatformError, ServerError, TaskError
from onenet_ota.updater import SWITCHING, STOPPED, log

_SECTOR = const(4096)
_DOWNLOADED = const(101)
_NO_SPACE = const(102)
_NO_MEMORY = const(103)
_TIMED_OUT = const(104)
_LOW_BATTERY = const(105)
_POOR_SIGNAL = const(106)
_DOWNLOAD_FAILED = const(107)
_UPGRADE_LOW_BATTERY = const(202)
_UPGRADE_NO_MEMORY = const(203)
_MD5_MISMATCH = const(205)
_UPGRADE_FAILED = const(206)
_RETRIES_EXHAUSTED = const(207)
_ENDED = (12, 20, 22)  # errno: expired, completed, cancelled: stop, report nothing


class Fail(Exception):
    """Ends the task with a report code."""

    def __init__(self, code, why):
        super().__init__(why)
        self.code = code


def upgrade(up, task, entry):
    """Returns the report code sent, STOPPED, or SWITCHING."""
    try:
        slot = fota.Slot()
        entry = _download_stage(up, task, entry, slot)
        try:
            return _upgrade_stage(up, task, entry, slot)
        except MemoryError:
            raise Fail(_UPGRADE_NO_MEMORY, "out of memory after the download")
    except Fail as e:
        code = e.code
        log("failed", code, e)
    except TaskError as e:
        code = _DOWNLOAD_FAILED
        log("failed", code, e)
    except MemoryError:
        code = _NO_MEMORY
        log("failed", code, "out of memory")
    except PlatformError as e:
        if e.errno not in _ENDED:
            raise
        log("task ended by the platform:", e)
        journal.discard()
        return STOPPED
    journal.discard()
    up.report_final(task.token, code)
    return code


def _gate(up, task, battery_code, signal_code):
    if up.battery and up.battery() <= task.power:
        raise Fail(battery_code, "battery at or below %d" % task.power)
    if signal_code and up.signal and up.signal() <= task.signal:
        raise Fail(signal_code, "signal at or below %d" % task.signal)


def _download_stage(up, task, entry, slot):
    if task.size > slot.size:
        raise Fail(_NO_SPACE, "package of %d bytes, slot of %d" % (task.size, slot.size))
    if task.delta:
        raise Fail(_UPGRADE_FAILED, "differential packages are not supported")
    _gate(up, task, _LOW_BATTERY, _POOR_SIGNAL)
    try:
        up.api.check_token(task.token)
    except PlatformError as e:
        # 17 for a task already upgrading: the whole package is in the slot and the 101 went
        # out before a power cut; checks and switch are left, and the 101 again answers 21
        if e.errno != 17 or not entry or entry["written"] != task.size:
            raise
    if entry is None:
        entry = {"kind": "fota", "phase": journal.DOWNLOAD, "token": task.token, "target": task.target,
                 "md5": task.md5, "size": task.size, "written": 0, "delta": task.delta}
        journal.save(entry)
    md5 = hashlib.md5()
    # MD5 state cannot be saved: after a reboot, hash again what is already in flash
    buf = up.buf
    written = entry["written"]
    for at in range(0, written, len(buf)):
        slot.read(at // _SECTOR, buf)
        md5.update(buf if written - at >= len(buf) else memoryview(buf)[: written - at])
    _download(up, task, slot, md5, entry)
    if binascii.hexlify(md5.digest()).decode() != task.md5:
        raise Fail(_MD5_MISMATCH, "package MD5 differs from the task's")
    return entry


def _upgrade_stage(up, task, entry, slot):
    log("downloaded", task.size, "bytes, MD5 ok; checking the image")
    try:
        slot.verify(task.size, up.chip, task.target, up.buf)
    except fota.ImageError as e:
        raise Fail(e.code, str(e))
    try:
        up.api.report(task.token, _DOWNLOADED)
    except PlatformError as e:
        if e.errno != 21:  # already upgrading: the 101 went out before a power cut
            raise
    log("reported 101")
    _gate(up, task, _UPGRADE_LOW_BATTERY, None)
    entry["phase"] = journal.VERIFIED
    journal.save(entry)
    return up.switch(slot, entry)


def _download(up, task, slot, md5, entry):
    """Range fragments until the slot holds the package. A dropped connection, a timeout or
    a 5xx resumes from the last chunk written, `interval` seconds later, `retry` times."""
    size = task.size
    step = up.cfg.progress_step
    reported = entry["written"] * 100 // size // step * step
    host = task.ip_port or up.host
    url = "%s://%s/ota/south/download/%s" % (up.scheme, host, task.token)
    # one connection for the API calls and the download when they share a host
    client = up.client if host == up.host else http.Client(up.cfg.timeout, cafile=up.cfg.ca_file or None)
    retries = 0
    while entry["written"] < size:
        try:
            _fetch(up, client, url, size, slot, md5, entry)
            journal.save(entry)  # before the progress report: a cut during it loses nothing
            percent = entry["written"] * 100 // size
            if percent - reported >= step and percent < 100:
                # step 100 would move the task to upgrading, where 101 is refused: the
                # verified 101 report ends the download instead
                reported = percent // step * step
                log("progress", "%d%%" % reported)
                if up.progress:
                    up.progress(reported)
                up.api.progress(task.token, reported)
        except ServerError as e:
            if e.status < 500:
                # the download is refused: the token check says why (expired, cancelled)
                up.api.check_token(task.token)
                raise Fail(_DOWNLOAD_FAILED, str(e))
            retries = _retry(client, task, entry, retries, e)
        except (http.HTTPError, OSError) as e:
            retries = _retry(client, task, entry, retries, e)
    if client is not up.client:
        client.close()


def _retry(client, task, entry, retries, error):
    log("download interrupted at", entry["written"], error)
    journal.save(entry)  # the chunks of the broken fragment are in flash
    client.close()
    if retries >= task.retry:
        if task.retry:
            raise Fail(_RETRIES_EXHAUSTED, "%d retries exhausted" % task.retry)
        raise Fail(_TIMED_OUT if isinstance(error, http.Timeout) else _DOWNLOAD_FAILED, str(error))
    time.sleep(task.interval)
    return retries + 1


def _fetch(up, client, url, size, slot, md5, entry):
    """One Range fragment into the slot; raises on anything the server gets wrong."""
    buf = up.buf
    chunk = len(buf)
    written = entry["written"]
    end = min(written + up.cfg.fragment_size, size) - 1
    resp = client.request("GET", url, headers={"Range": "bytes=%d-%d" % (written, end)})
    if resp.status == 200:
        # Range ignored: the whole file follows; skip what the slot already holds
        if resp.length is not None and resp.length != size:
            raise Fail(_DOWNLOAD_FAILED, "server sends %d bytes, the task says %d" % (resp.length, size))
        skip = written
        while skip:
            skip -= _read_exactly(resp, buf, min(chunk, skip))
        end = size - 1
    elif resp.status == 206:
        got = resp.range
        if got and got[2] is not None and got[2] != size:
            # the server's file is not the task's: no retry can mend that
            resp.close()
            raise Fail(_DOWNLOAD_FAILED, "server has %d bytes, the task says %d" % (got[2], size))
        if not got or got[0] != written or got[1] > end:
            raise http.ProtocolError("Content-Range %r for bytes=%d-%d" % (got, written, end))
        end = got[1]
    else:
        resp.close()
        raise ServerError(resp.status)
    while written <= end:
        want = min(chunk, end + 1 - written)
        _read_exactly(resp, buf, want)
        if want < chunk:  # the end of the package: the rest of the sector stays erased
            for i in range(want, chunk):
                buf[i] = 0xFF
            md5.update(memoryview(buf)[:want])
        else:
            md5.update(buf)
        slot.write(written // _SECTOR, buf)
        written += want
        entry["written"] = written


def _read_exactly(resp, buf, n):
    """Fill the first n bytes of buf; a body that ends early is a dropped connection."""
    got = resp.readinto(buf, n)
    if got == n:
        return n
    view = memoryview(buf)  # a short read: rare (chunk edges), so the slices here are fine
    while got < n:
        more = resp.readinto(view[got:], n - got)
        if not more:
            raise http.ConnectionLost("body ended after %d of %d bytes" % (got, n))
        got += more
    return n
