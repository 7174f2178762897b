# The flow of one OTA cycle: confirm a pending upgrade, report the version, check for a task,
# gate it, download it into the slot with resume, verify, report, switch.
#
# Every failure ends in exactly one report code to the platform (shared/spec, endpoint 6) and
# leaves the boot selection alone; only a verified image is ever switched to.
from micropython import const
import gc
import hashlib
import time
import binascii

from onenet_ota import journal
from onenet_ota import fota
from onenet_ota.api import PlatformError, ServerError, TaskError
from onenet_ota import api as _api
from onenet_ota import http

FOTA = const(1)

DOWNLOADED = const(101)
NO_SPACE = const(102)
NO_MEMORY = const(103)
TIMED_OUT = const(104)
LOW_BATTERY = const(105)
POOR_SIGNAL = const(106)
DOWNLOAD_FAILED = const(107)
SUCCEEDED = const(201)
UPGRADE_LOW_BATTERY = const(202)
UPGRADE_NO_MEMORY = const(203)
WRONG_VERSION = const(204)
MD5_MISMATCH = const(205)
UPGRADE_FAILED = const(206)
RETRIES_EXHAUSTED = const(207)

STATE_PATH = "ota_state.json"  # dev_id looked up once, the version last reported

# Results of a cycle that are not report codes
NO_TASK = None
STOPPED = const(0)  # the platform ended the task (expired, cancelled, completed)
SWITCHING = const(1)  # a verified image is set to boot; reset to run it


class _Fail(Exception):
    """Ends the task with a report code."""

    def __init__(self, code, why):
        super().__init__(why)
        self.code = code


def _log(*args):
    print("ota:", *args)


class Updater:
    def __init__(self, cfg, battery=None, signal=None, progress=None):
        # The sector buffer first, while the heap is still in one piece (TOOLCHAIN.md).
        self.buf = bytearray(cfg.chunk_size)
        self.cfg = cfg
        self.battery = battery
        self.signal = signal
        self.on_progress = progress
        from onenet_ota.auth import Auth

        self.auth = Auth(cfg.product_id, cfg.access_key, method=cfg.auth_method, lifetime=cfg.auth_lifetime)
        self.client = http.Client(timeout=cfg.timeout, cafile=cfg.ca_file or None)
        scheme = "https" if cfg.https else "http"
        self.scheme = scheme
        self.state = journal.read_json(STATE_PATH) or {}
        self.api = _api.Api(self.client, self.auth, "%s://%s:%d" % (scheme, cfg.host, cfg.port), "")
        self.chip, self.running = fota.running_build(self.buf)
        if cfg.version:
            self.running = cfg.version

    # ---- the cycle -------------------------------------------------------------------------

    def cycle(self):
        """One cycle. Returns NO_TASK, a report code sent, STOPPED, or SWITCHING (after which
        the device resets when `reboot` is configured)."""
        try:
            self._identify()
            entry = journal.load()
            if entry and entry["phase"] != journal.DOWNLOAD:
                return self.confirm(entry)
            if self.state.get("reported") != self.running:
                if self._confirm_lost_token():
                    return SUCCEEDED
                self.api.report_version(f_version=self.running)
                self._remember(reported=self.running)
            task = self.api.check(FOTA, self.running, self.cfg.manuf, self.cfg.model, self.cfg.cdn)
            if task is None:
                if entry:
                    journal.discard()
                return NO_TASK
            if entry and (entry["token"] != task.token or entry["md5"] != task.md5 or entry["size"] != task.size):
                journal.discard()  # a journal of another task: that one is gone
                entry = None
            return self._upgrade(task, entry)
        finally:
            self.client.close()

    def _identify(self):
        if self.api.dev_id:
            return
        dev_id = self.cfg.device_id or self.state.get("dev_id")
        if not dev_id:
            dev_id = self.api.device_id(self.cfg.product_id, self.cfg.unique_id)
            self._remember(dev_id=dev_id)
        self.api.dev_id = dev_id

    def _remember(self, **values):
        self.state.update(values)
        journal.write_json(STATE_PATH, self.state)

    # ---- confirmation after the reboot ----------------------------------------------------------

    def confirm(self, entry):
        """The device rebooted after a switch: keep the new image and report 201 if it is the
        target, else report 204 (the bootloader rolled back). Nothing is marked valid until
        the platform answered, so an image that cannot reach it is rolled back at the next
        reset."""
        token = entry["token"]
        _log("confirming", entry["target"], "- running", self.running)
        self.api.tasking(FOTA, self.cfg.cdn)  # proves the new image reaches the platform
        if self.running != entry["target"]:
            if entry["phase"] == journal.VERIFIED:
                # cut between the 101 report and the boot switch: finish the switch
                return self._switch(fota.Slot(), entry)
            _log("running", self.running, "but the target was", entry["target"], "- rolled back")
            self._report_final(token, WRONG_VERSION)
            journal.discard()
            return WRONG_VERSION
        fota.confirm()
        self._report_final(token, SUCCEEDED)
        self.api.report_version(f_version=self.running)
        self._remember(reported=self.running)
        journal.discard()
        _log("confirmed", self.running)
        return SUCCEEDED

    def _confirm_lost_token(self):
        """The running version changed but the journal is gone: find the task with
        endpoint 7 and finish it."""
        if not self.state.get("reported"):
            return False  # first boot: nothing was upgraded
        task = self.api.tasking(FOTA, self.cfg.cdn)
        if task is None or task.target != self.running:
            return False
        fota.confirm()
        self._report_final(task.token, SUCCEEDED)
        self.api.report_version(f_version=self.running)
        self._remember(reported=self.running)
        return True

    def _report_final(self, token, code):
        try:
            self.api.report(token, code)
        except PlatformError as e:
            if e.errno not in (_api.COMPLETED, _api.CANCELLED, _api.INVALID_OPERATION):
                raise
            _log("report", code, "not taken:", e)  # the task ended meanwhile

    # ---- the upgrade -------------------------------------------------------------------------

    def _upgrade(self, task, entry):
        token = task.token
        try:
            code = self._download_and_switch(task, entry)
        except _Fail as e:
            code = e.code
            _log("failed", code, e)
        except TaskError as e:
            code = DOWNLOAD_FAILED
            _log("failed", code, e)
        except PlatformError as e:
            if e.errno in (_api.EXPIRED, _api.CANCELLED, _api.COMPLETED):
                _log("task ended by the platform:", e)
                journal.discard()
                return STOPPED
            raise
        except MemoryError:
            code = NO_MEMORY
            _log("failed", code, "out of memory")
        if code == SWITCHING:
            return code
        journal.discard()
        self._report_final(token, code)
        return code

    def _download_and_switch(self, task, entry):
        slot = fota.Slot()
        entry = self._download_stage(task, entry, slot)
        try:
            return self._upgrade_stage(task, entry, slot)
        except MemoryError:
            raise _Fail(UPGRADE_NO_MEMORY, "out of memory after the download")

    def _download_stage(self, task, entry, slot):
        """Gate, token check, download with resume, MD5. Failures here are 1xx (205 for MD5)."""
        if task.size > slot.size:
            raise _Fail(NO_SPACE, "package of %d bytes, slot of %d" % (task.size, slot.size))
        if task.delta:
            raise _Fail(UPGRADE_FAILED, "differential packages are not supported")
        self._gate(task, LOW_BATTERY, POOR_SIGNAL)
        self.api.check_token(task.token)
        if entry is None:
            entry = {"kind": "fota", "phase": journal.DOWNLOAD, "token": task.token, "target": task.target,
                     "md5": task.md5, "size": task.size, "written": 0, "delta": task.delta}
            journal.save(entry)
        md5 = hashlib.md5()
        self._rehash(slot, md5, entry["written"])
        self._download(task, slot, md5, entry)
        if binascii.hexlify(md5.digest()).decode() != task.md5:
            raise _Fail(MD5_MISMATCH, "package MD5 differs from the task's")
        return entry

    def _upgrade_stage(self, task, entry, slot):
        """Image checks, 101, battery, switch. Failures here are 2xx."""
        _log("downloaded", task.size, "bytes, MD5 ok; checking the image")
        try:
            slot.verify(task.size, self.chip, task.target, self.buf)
        except fota.ImageError as e:
            raise _Fail(e.code, str(e))
        try:
            self.api.report(task.token, DOWNLOADED)
        except PlatformError as e:
            if e.errno != _api.INVALID_OPERATION:  # already upgrading: 101 went out before a cut
                raise
        _log("reported 101")
        self._gate(task, UPGRADE_LOW_BATTERY, None)
        entry["phase"] = journal.VERIFIED
        journal.save(entry)
        return self._switch(slot, entry)

    def _switch(self, slot, entry):
        """Boot the slot next. VERIFIED in the journal before, SWITCHED after: a cut between
        the two is finished at the next boot; a rollback after SWITCHED is reported."""
        slot.switch()
        entry["phase"] = journal.SWITCHED
        journal.save(entry)
        _log("switching to", entry["target"])
        if self.cfg.reboot:
            import machine

            self.client.close()
            machine.reset()
        return SWITCHING

    def _gate(self, task, battery_code, signal_code):
        if self.battery and self.battery() <= task.power:
            raise _Fail(battery_code, "battery at or below %d" % task.power)
        if signal_code and self.signal and self.signal() <= task.signal:
            raise _Fail(signal_code, "signal at or below %d" % task.signal)

    def _rehash(self, slot, md5, written):
        """MD5 state cannot be saved: after a reboot, hash again what is already in flash."""
        buf = self.buf
        chunk = len(buf)
        for at in range(0, written, chunk):
            slot.read(at // fota.SECTOR, buf)
            md5.update(buf if written - at >= chunk else memoryview(buf)[: written - at])

    # ---- the download --------------------------------------------------------------------------

    def _url(self, task):
        host = task.ip_port or "%s:%d" % (self.cfg.host, self.cfg.port)
        return "%s://%s/ota/south/download/%s" % (self.scheme, host, task.token)

    def _download(self, task, slot, md5, entry):
        """Range fragments until the slot holds the package. A dropped connection, a timeout or
        a 5xx resumes from the last sector written, `interval` seconds later, `retry` times."""
        size = task.size
        step = self.cfg.progress_step
        reported = entry["written"] * 100 // size // step * step
        url, client = self._download_client(task)
        retries = 0
        while entry["written"] < size:
            try:
                self._fetch(client, url, size, slot, md5, entry)
                percent = entry["written"] * 100 // size
                if percent - reported >= step and percent < 100:
                    # step 100 would move the task to upgrading, where 101 is refused: the
                    # verified 101 report ends the download instead
                    reported = percent // step * step
                    _log("progress", "%d%%" % reported)
                    if self.on_progress:
                        self.on_progress(reported)
                    self.api.progress(task.token, reported)
            except ServerError as e:
                if e.status >= 500:
                    retries = self._retry(task, entry, retries, e)
                    continue
                # the download is refused (4xx): the token check says why (expired, cancelled)
                self.api.check_token(task.token)
                raise _Fail(DOWNLOAD_FAILED, str(e))
            except (http.HTTPError, OSError) as e:
                retries = self._retry(task, entry, retries, e)
            journal.save(entry)
        if client is not self.client:
            client.close()

    def _retry(self, task, entry, retries, error):
        _log("download interrupted at", entry["written"], error)
        self.client.close()
        if retries >= task.retry:
            if task.retry:
                raise _Fail(RETRIES_EXHAUSTED, "%d retries exhausted" % task.retry)
            raise _Fail(TIMED_OUT if isinstance(error, http.Timeout) else DOWNLOAD_FAILED, str(error))
        time.sleep(task.interval)
        return retries + 1

    def _download_client(self, task):
        api_host = "%s:%d" % (self.cfg.host, self.cfg.port)
        host = task.ip_port or api_host
        url = "%s://%s/ota/south/download/%s" % (self.scheme, host, task.token)
        if host == api_host:
            return url, self.client  # one connection for the API calls and the download
        return url, http.Client(timeout=self.cfg.timeout, cafile=self.cfg.ca_file or None)

    def _fetch(self, client, url, size, slot, md5, entry):
        """One Range fragment into the slot; raises on anything the server gets wrong."""
        buf = self.buf
        chunk = len(buf)
        written = entry["written"]
        end = min(written + self.cfg.fragment_size, size) - 1
        resp = client.request("GET", url, headers={"Range": "bytes=%d-%d" % (written, end)})
        if resp.status == 200:
            # Range ignored: the whole file follows; skip what the slot already holds
            if resp.length is not None and resp.length != size:
                raise _Fail(DOWNLOAD_FAILED, "server sends %d bytes, the task says %d" % (resp.length, size))
            skip = written
            while skip:
                skip -= _read_exactly(resp, buf, min(chunk, skip))
            end = size - 1
        elif resp.status == 206:
            got = resp.range
            if not got or got[0] != written or got[1] > end or got[2] not in (None, size):
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
            slot.write(written // fota.SECTOR, buf)
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
