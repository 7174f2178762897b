# A firmware task from the gates to the boot switch: the download stage (Range fragments
# straight into the slot, MD5 as the bytes pass, resume after a drop; failures are 1xx, 205
# for the MD5) then the upgrade stage (image checks, 101, battery, switch; failures are 2xx).
from micropython import const
import binascii
import hashlib
import time

from onenet_ota import journal, fota, http, drop, log
from onenet_ota.api import PlatformError, ServerError
from onenet_ota.updater import STOPPED

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
    """Returns the report code sent, STOPPED, or (switch, journal entry) for a package that
    passed every check and was reported (101): Updater.switch() does the rest. task: the dict
    of check.task(); its kind "fota" writes the package into the next OTA slot, "sota" stages
    an application bundle in a file."""
    app = None
    try:
        if task["kind"] == "sota":
            from onenet_ota import sota as app

            if task["delta"]:
                raise Fail(_UPGRADE_FAILED, "differential application packages are not supported")
            if not app.space_ok(task["size"]):
                raise Fail(_NO_SPACE, "no room for a bundle of %d bytes and its files" % task["size"])
            slot = app.Stage(task["size"])
        else:
            slot = fota.Slot()
        entry, size = _download_stage(up, task, entry, slot)
        try:
            return _upgrade_stage(up, task, entry, slot, size, app)
        except MemoryError:
            raise Fail(_UPGRADE_NO_MEMORY, "out of memory after the download")
    except Fail as e:
        code = e.code
        log("failed", code, e)
    except MemoryError:
        code = _NO_MEMORY
        log("failed", code, "out of memory")
    except PlatformError as e:
        if e.errno not in _ENDED:
            raise
        log("task ended by the platform:", e)
        code = STOPPED
    if app:
        app.discard()  # the staged bundle and a half unpacked application
    journal.discard()
    if code != STOPPED:
        up.report_final(task["token"], code)
    return code


def _gate(up, task, battery_code, signal_code):
    if up.battery and up.battery() <= task["power"]:
        raise Fail(battery_code, "battery at or below %d" % task["power"])
    if signal_code and up.signal and up.signal() <= task["signal"]:
        raise Fail(signal_code, "signal at or below %d" % task["signal"])


def _download_stage(up, task, entry, slot):
    if task["size"] > slot.size:
        raise Fail(_NO_SPACE, "package of %d bytes, slot of %d" % (task["size"], slot.size))
    _gate(up, task, _LOW_BATTERY, _POOR_SIGNAL)
    try:
        up.api.check_token(task["token"])
    except PlatformError as e:
        # 17 for a task already upgrading: the whole package is in the slot and the 101 went
        # out before a power cut; checks and switch are left, and the 101 again answers 21
        if e.errno != 17 or not entry or entry["written"] != task["size"]:
            raise
    if entry is None or task["delta"]:
        # a delta restarts from its first byte: the decoder's state is not saved
        entry = {"kind": task["kind"], "phase": journal.DOWNLOAD, "token": task["token"], "target": task["target"],
                 "md5": task["md5"], "size": task["size"], "written": 0, "delta": task["delta"]}
        journal.save(entry)
    buf = up.buf
    chunk = len(buf)
    written = entry["written"]
    src = _Source(up, task, entry, _rehash(slot, buf, written))
    try:
        if task["delta"]:
            size = _apply_delta(src, slot, buf)
        else:
            size = task["size"]
            while written < size:
                n = src.read_into(buf, min(chunk, size - written))
                if n < chunk:  # the end of the package: the rest of the sector stays erased
                    for i in range(n, chunk):
                        buf[i] = 0xFF
                slot.write(written // _SECTOR, buf)
                written += n
            entry["written"] = written
            journal.save(entry)  # all in flash: a cut from here on never downloads again
    finally:
        src.close()
    if binascii.hexlify(src.md5.digest()).decode() != task["md5"]:
        raise Fail(_MD5_MISMATCH, "package MD5 differs from the task's")
    return entry, size


def _rehash(slot, buf, written):
    """MD5 of the first `written` bytes in the slot: the hash's state cannot be saved, so after
    a reboot what is already in flash is hashed again."""
    md5 = hashlib.md5()
    chunk = len(buf)
    for at in range(0, written, chunk):
        slot.read(at // _SECTOR, buf)
        md5.update(buf if written - at >= chunk else memoryview(buf)[: written - at])
    return md5


def _apply_delta(src, slot, buf):
    """A differential package: the new image is made from the running one while the patch
    streams in. Returns the new image's size."""
    from onenet_ota import delta

    base = fota.running_partition()
    try:
        patch = delta.Patch(src.read_into, base, base.info()[3], slot.size)
        sector = 0
        while patch.fill(buf):
            slot.write(sector, buf)
            sector += 1
        return patch.size
    except delta.DeltaError as e:
        raise Fail(e.code, str(e))
    finally:
        patch = delta = None
        drop("delta")  # the decoder's code and buffers go before the image check
        drop("_deltav")


def _upgrade_stage(up, task, entry, slot, size, app):
    if app:
        log("downloaded", task["size"], "bytes, MD5 ok; unpacking the application")
        slot.close()
        try:
            app.unpack(up.buf, task["target"])
        except app.SotaError as e:
            raise Fail(e.code, str(e))
        switch = app.swap
    else:
        log("downloaded", task["size"], "bytes, MD5 ok; checking the image")
        from onenet_ota import image

        try:
            image.verify(slot.partition, size, up.chip, task["target"], up.buf)
        except fota.ImageError as e:
            raise Fail(e.code, str(e))
        finally:
            del image
            drop("image")
            drop("_xor")
        switch = slot.switch
    try:
        up.api.report(task["token"], _DOWNLOADED)
    except PlatformError as e:
        if e.errno != 21:  # already upgrading: the 101 went out before a power cut
            raise
    log("reported 101")
    _gate(up, task, _UPGRADE_LOW_BATTERY, None)
    entry["phase"] = journal.VERIFIED
    journal.save(entry)
    return switch, entry


class _Source:
    """The package as a byte stream: Range fragments on one kept-alive connection, MD5 as the
    bytes pass, the journal and a progress report between fragments. A dropped connection, a
    timeout or a 5xx resumes at the start of the piece being read, `interval` seconds later,
    `retry` times: for a full package that is the last chunk in flash."""

    def __init__(self, up, task, entry, md5):
        self.up = up
        self.task = task
        self.entry = entry
        self.md5 = md5
        self.at = entry["written"]  # package bytes handed out so far
        self.end = 0  # last byte of the current fragment
        self.resp = None
        self.retries = 0
        step = up.cfg.progress_step
        self.reported = self.at * 100 // task["size"] // step * step
        host = task["ip_port"] or up.host
        self.url = "%s://%s/ota/south/download/%s" % (up.scheme, host, task["token"])
        # one connection for the API calls and the download when they share a host
        self.client = up.client if host == up.host else http.Client(up.cfg.timeout, cafile=up.cfg.ca_file or None)

    def close(self):
        if self.client is not self.up.client:
            self.client.close()

    def read_into(self, buf, n):
        """n package bytes into the start of buf; fewer only at the end of the package."""
        got = 0
        n = min(n, self.task["size"] - self.at)
        while got < n:
            try:
                resp = self.resp or self._open(buf, got)
                k = resp.readinto(buf if not got else memoryview(buf)[got:], n - got)
                if not k:  # this fragment is done
                    self.resp = None
                got += k
            except ServerError as e:
                if e.status < 500:
                    # the download is refused: the token check says why (expired, cancelled)
                    self.up.api.check_token(self.task["token"])
                    raise Fail(_DOWNLOAD_FAILED, str(e))
                got = self._retry(e)
            except (http.HTTPError, OSError) as e:
                got = self._retry(e)
        self.md5.update(buf if n == len(buf) else memoryview(buf)[:n])
        self.at += n
        return n

    def _retry(self, error):
        up, task = self.up, self.task
        log("download interrupted at", self.at, error)
        self.resp = None
        self.client.close()
        if self.retries >= task["retry"]:
            if task["retry"]:
                raise Fail(_RETRIES_EXHAUSTED, "%d retries exhausted" % task["retry"])
            raise Fail(_TIMED_OUT if isinstance(error, http.Timeout) else _DOWNLOAD_FAILED, str(error))
        time.sleep(task["interval"])
        self.retries += 1
        return 0  # the piece being read starts again

    def _open(self, buf, got):
        """The next fragment from self.at + got. Between fragments everything before self.at
        is in flash: the journal records it before the progress report, so a cut during the
        report loses nothing."""
        up, task, size = self.up, self.task, self.task["size"]
        at = self.at + got
        if not task["delta"] and self.entry["written"] != self.at:
            self.entry["written"] = self.at
            journal.save(self.entry)
        step = up.cfg.progress_step
        percent = at * 100 // size
        if percent - self.reported >= step and percent < 100:
            # step 100 would move the task to upgrading, where 101 is refused: the verified
            # 101 report ends the download instead
            self.reported = percent // step * step
            log("progress", "%d%%" % self.reported)
            if up.progress:
                up.progress(self.reported)
            up.api.progress(task["token"], self.reported)
        end = min(at + up.cfg.fragment_size, size) - 1
        resp = self.client.request("GET", self.url, headers={"Range": "bytes=%d-%d" % (at, end)})
        self._accept(resp, buf, got, at, end)
        self.resp = resp
        return resp

    def _accept(self, resp, buf, got, at, end):
        """The answer to bytes=at-end: a 206 of that range, or a 200 of the whole package
        (Range ignored) whose first `at` bytes are read past here. Anything else raises.
        (Apart from _open so that no function's bytecode needs a large block of heap.)"""
        size = self.task["size"]
        if resp.status == 200:
            # Range ignored: the whole file follows; skip what is already handed out
            if resp.length is not None and resp.length != size:
                resp.close()
                raise Fail(_DOWNLOAD_FAILED, "server sends %d bytes, the task says %d" % (resp.length, size))
            scratch = memoryview(buf)[got:]  # the part of buf not yet filled
            skip = at
            while skip:
                k = resp.readinto(scratch, min(len(scratch), skip))
                if not k:
                    raise http.ConnectionLost("body ended")
                skip -= k
        elif resp.status == 206:
            r = resp.range
            if r and r[2] is not None and r[2] != size:
                # the server's file is not the task's: no retry can mend that
                resp.close()
                raise Fail(_DOWNLOAD_FAILED, "server has %d bytes, the task says %d" % (r[2], size))
            if not r or r[0] != at or r[1] > end:
                resp.close()
                raise http.ProtocolError("Content-Range %r for bytes=%d-%d" % (r, at, end))
        else:
            resp.close()
            raise ServerError(resp.status)
