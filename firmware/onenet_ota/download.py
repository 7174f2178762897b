# The download phase: a task from its gates to a package that passed every check and was
# reported (101). The data path is one loop: socket -> the sector buffer (readinto) -> MD5 ->
# the slot -> the journal and a progress report at each boundary. Failures raise Fail: 1xx
# for the download, 205 for the MD5, 2xx for the checks after it. The cycle reports them.
from micropython import const
import binascii
import hashlib
import time

from onenet_ota import journal, fota, http
from onenet_ota import codes  # the report codes as codes.X: each name imported is a global more
from onenet_ota.codes import log, drop, Fail

_SECTOR = const(4096)


def upgrade(platform, task, entry, buf, cfg, gauges, chip):
    """(SWITCH, the function that boots the package next, its journal entry) for a package
    that passed every check and was reported (101). task: the dict of check.task(); its kind "fota" writes the
    package into the next OTA slot, "sota" stages an application bundle in a file. entry: the
    journal of this task's download so far, or None. gauges: (battery, signal, progress)
    callbacks of the application, each None or a function. chip: the running chip's id."""
    app = None
    try:
        if task["kind"] == "sota":
            from onenet_ota import sota as app

            if task["delta"]:
                raise Fail(codes.UPGRADE_FAILED, "differential application packages are not supported")
            if not app.space_ok(task["size"]):
                raise Fail(codes.NO_SPACE, "no room for a bundle of %d bytes and its files" % task["size"])
            slot = app.Stage(task["size"])
        else:
            slot = fota.Slot()
        try:
            entry, size = into_slot(platform, task, entry, slot, buf, cfg, gauges)
        except MemoryError:
            raise Fail(codes.NO_MEMORY, "out of memory")
        try:
            switch = _check(task, slot, size, buf, app, chip)
            entry["length"] = size  # what the slot holds: the cycle checks its signature
            platform.report(task, codes.DOWNLOADED)
            log("reported 101")
            _gate(gauges, task, codes.UPGRADE_LOW_BATTERY, None)
        except MemoryError:
            raise Fail(codes.UPGRADE_NO_MEMORY, "out of memory after the download")
        return codes.SWITCH, switch, entry
    except Fail:
        if app:
            app.discard()  # the staged bundle and a half unpacked application
        raise


def _gate(gauges, task, battery_code, signal_code):
    battery, signal = gauges[0], gauges[1]
    if battery and battery() <= task["power"]:
        raise Fail(battery_code, "battery at or below %d" % task["power"])
    if signal_code and signal and signal() <= task["signal"]:
        raise Fail(signal_code, "signal at or below %d" % task["signal"])


def into_slot(platform, task, entry, slot, buf, cfg, gauges):
    """The package into the slot (fota.Slot, or sota.Stage), MD5-checked: the data path,
    public so that the bench times this very loop. Returns its journal entry and the size
    of what the slot holds."""
    size = task["size"]
    if size > slot.size:
        raise Fail(codes.NO_SPACE, "package of %d bytes, slot of %d" % (size, slot.size))
    _gate(gauges, task, codes.LOW_BATTERY, codes.POOR_SIGNAL)
    platform.start(task, entry is not None and entry["written"] == size)
    if entry is None or task["delta"]:
        # a delta restarts from its first byte: the decoder's state is not saved
        entry = {"kind": task["kind"], "phase": journal.DOWNLOAD, "token": task["token"], "target": task["target"],
                 "md5": task["md5"], "size": size, "written": 0, "delta": task["delta"]}
        journal.save(entry)
    chunk = len(buf)
    src = Stream(platform, task, entry, _rehash(slot, buf, entry["written"]), cfg, gauges[2], buf)
    if task["delta"]:
        size = _apply_delta(src, slot, buf)
    else:
        while src.at < size:
            written = src.at
            n = src.read_into(buf, chunk)
            if n < chunk:  # the end of the package: the rest of the sector stays erased
                for i in range(n, chunk):
                    buf[i] = 0xFF
            slot.write(written // _SECTOR, buf)
        entry["written"] = size
        journal.save(entry)  # all in flash: a cut from here on never downloads again
    if binascii.hexlify(src.md5.digest()).decode() != task["md5"]:
        raise Fail(codes.BAD_MD5, "package MD5 differs from the task's")
    src.finish()
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
    finally:
        patch = delta = None
        drop("delta")  # the decoder's code and buffers go before the image check
        drop("_deltav")


def _check(task, slot, size, buf, app, chip):
    """The package in the slot as what the task promised: an application bundle unpacked
    with every file checked, or an ESP app image as the bootloader checks it. Returns the
    function that switches to it."""
    if app:
        log("downloaded", task["size"], "bytes, MD5 ok; unpacking the application")
        slot.close()
        app.unpack(buf, task["target"])
        return app.swap
    log("downloaded", task["size"], "bytes, MD5 ok; checking the image")
    from onenet_ota import image

    try:
        image.verify(slot.partition, size, chip, task["target"], buf)
    finally:
        del image
        drop("image")
        drop("_xor")
    return slot.switch


class Stream:
    """The package as the loop reads it: MD5 as the bytes pass, and at the end of each Range
    fragment (a connection with no body left unread) the journal records what is in flash
    and every progress step passed since is reported, in order; finish() reports the steps
    that remain after the last byte. Fragments, not steps, end a request: a request per step
    would cost a round trip more for each."""

    def __init__(self, platform, task, entry, md5, cfg, progress, buf):
        self.platform = platform
        self.task = task
        self.src = Range(platform, task, buf)
        self.entry = entry
        self.md5 = md5
        self.size = entry["size"]
        self.at = entry["written"]  # package bytes handed out so far
        self.fragment = cfg.fragment_size
        self.step = cfg.progress_step
        self.progress = progress
        self.reported = self.at * 100 // self.size // self.step * self.step
        self.stop = self.at  # the end of the fragment being read

    def read_into(self, buf, n):
        """n package bytes into the start of buf; fewer only at the end of the package."""
        n = min(n, self.size - self.at)
        got = 0
        while got < n:
            if self.at == self.stop:
                self._boundary()
            k = min(n - got, self.stop - self.at)
            self.src.read_into(buf, got, self.at, k, self.stop)
            got += k
            self.at += k
        self.md5.update(buf if n == len(buf) else memoryview(buf)[:n])
        return n

    def finish(self):
        """After the last byte: the steps not reported yet, before the 101."""
        self._report()

    def _boundary(self):
        at, entry = self.at, self.entry
        if not entry["delta"] and entry["written"] != at:
            entry["written"] = at  # everything before `at` is in the slot
            journal.save(entry)
        # a server that ignored Range sends the whole package in one reply: its connection
        # is busy until the end, where finish() reports
        if not self.src.whole:
            self._report()
        self.stop = min(at + self.fragment, self.size)

    def _report(self):
        step = self.step
        percent = self.at * 100 // self.size
        # step 100 would move the task to upgrading, where 101 is refused: the verified 101
        # report ends the download instead
        while self.reported + step <= percent and self.reported + step < 100:
            self.reported += step
            log("progress", "%d%%" % self.reported)
            if self.progress:
                self.progress(self.reported)
            self.platform.progress(self.task, self.reported)


class Range:
    """Package bytes from Range requests on one kept-alive connection: a request runs to the
    stop the caller gives, and its body is read as the caller asks. A dropped connection, a
    timeout or a 5xx opens the piece being read again `interval` seconds later, `retry`
    times. buf: the caller's buffer, whose free end skips what a 200 sends first."""

    def __init__(self, platform, task, buf):
        self.platform = platform
        self.task = task
        self.buf = buf
        self.resp = None
        self.whole = False  # the open reply is a 200 of the whole package (Range ignored)
        self.retries = 0

    def read_into(self, buf, got, at, n, stop):
        """The n package bytes from `at` into buf[got:]: from the open request, or a new one
        for at..stop-1."""
        done = 0
        while done < n:
            try:
                resp = self.resp or self._open(at + done, stop - 1, got + done)
                i = got + done
                k = resp.readinto(memoryview(buf)[i:] if i else buf, n - done)
                if not k:  # this request's body is done
                    self.resp = None
                done += k
            except (http.HTTPError, OSError) as e:
                self._retry(e, at)
                done = 0  # the piece being read starts again
        return n

    def _retry(self, error, at):
        task = self.task
        log("download interrupted at", at, error)
        self.resp = None
        self.platform.close()
        if self.retries >= task["retry"]:
            if task["retry"]:
                raise Fail(codes.RETRIES_EXHAUSTED, "%d retries exhausted" % task["retry"])
            raise Fail(codes.TIMED_OUT if isinstance(error, http.Timeout) else codes.DOWNLOAD_FAILED, str(error))
        time.sleep(task["interval"])
        self.retries += 1

    def _open(self, at, end, got):
        resp = self.platform.fetch(self.task, at, end)
        _accept(resp, self.task["size"], memoryview(self.buf)[got:], at, end)
        self.resp = resp
        self.whole = resp.status == 200
        return resp


def _accept(resp, size, scratch, at, end):
    """The answer to bytes=at-end: a 206 of that range, or a 200 of the whole package
    (Range ignored) whose first `at` bytes are read past here into scratch. Anything else
    raises."""
    if resp.status == 200:
        if resp.length is not None and resp.length != size:
            resp.close()
            raise Fail(codes.DOWNLOAD_FAILED, "server sends %d bytes, the task says %d" % (resp.length, size))
        skip = at
        while skip:
            k = resp.readinto(scratch, min(len(scratch), skip))
            if not k:
                raise http.ConnectionLost("body ended")
            skip -= k
    else:
        r = resp.range
        if r and r[2] is not None and r[2] != size:
            # the server's file is not the task's: no retry can mend that
            resp.close()
            raise Fail(codes.DOWNLOAD_FAILED, "server has %d bytes, the task says %d" % (r[2], size))
        if not r or r[0] != at or r[1] > end:
            resp.close()
            raise http.ProtocolError("Content-Range %r for bytes=%d-%d" % (r, at, end))
