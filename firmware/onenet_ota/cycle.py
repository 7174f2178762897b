# One OTA cycle, and the one place that decides: it sends a final code the platform has not
# taken yet, confirms a pending upgrade, reports the versions, checks for a task, downloads
# and checks it, checks the firmware's signature when the config trusts keys (signature.py,
# after the download code left the heap; a failure after the 101, like the battery gate's),
# and switches. The phases (check, confirm, download, signature) return what is to be
# done; only this module reports a task's final code, moves the journal from phase to phase
# or discards it, and switches. Every task it ends ends in exactly one report code (or none,
# when the platform ended it), and that code is in the journal until the platform took it.
#
# Each phase's module is imported when there is work for it and dropped before the next:
# a boot that finds no task never loads the download.
from micropython import const

from onenet_ota import journal, fota
from onenet_ota.codes import log, drop, Fail, ENDED, IDLE, FETCH, SWITCH, DONE, UPGRADED, UPGRADE_FAILED

APP_MANIFEST = "app/manifest.json"
STATE_PATH = "ota_state.json"  # the dev_id looked up (over TLS; over http), the versions last reported, a lasting failure

SWITCHING = const(1)  # what run() returns when a verified package boots next

# codes that the same package would end in again: no download of it is tried twice
_LASTING = (102, 204, 205, 206)
# the platform object's modules, dropped before a switch (measured: the full-cycle floor was
# set by the switch, 3 KB above the download's)
_PLATFORM = ("south", "auth", "clock", "http", "_tls")


def _known(state):
    """ota_state.json with only the fields in the shape the cycle writes them: a damaged
    file, or another version's, is forgotten field by field, never acted on."""
    if type(state) is not dict:
        return {}
    for name in list(state):
        v = state[name]
        if name in ("dev_id_tls", "dev_id_http"):
            ok = type(v) is str and v.isdigit()
        elif name == "reported":
            ok = type(v) is str
        else:  # "failed": [token, md5, a lasting code]
            ok = name == "failed" and type(v) is list and len(v) == 3 and v[2] in _LASTING
        if not ok:
            del state[name]
    return state


class Cycle:
    """battery() and signal() return the levels the task's `power` and `signal` thresholds
    are compared with; progress(percent) sees the download advance. All are optional."""

    def __init__(self, cfg, battery=None, signal=None, progress=None, buf=None):
        # buf: chunk_size bytes allocated early (see onenet_ota.run), else allocated here
        self.buf = buf or bytearray(cfg.chunk_size)
        self.cfg = cfg
        self.gauges = (battery, signal, progress)
        from onenet_ota.south import South

        self.platform: South = South(cfg)
        self.state = _known(journal.read_json(STATE_PATH))
        self.chip, self.running = fota.running_build(self.buf)
        if cfg.version:
            self.running = cfg.version
        self.app = None

    def run(self):
        """One cycle. Returns None (nothing to do), the code of the task it ended (0: the
        platform ended it), or SWITCHING."""
        task = None  # the task at work, which a Fail ends
        try:
            # who the device is, before any call that names it (a report, a confirmation):
            # the dev_id looked up over TLS (taken), or over plain http (to compare with)
            looked_up = self.platform.identify(self.state.get("dev_id_tls"), self.state.get("dev_id_http"))
            if looked_up:
                self._remember(*looked_up)
            entry = journal.load()
            if entry and entry["phase"] == journal.REPORT:
                self._deliver(entry)  # before anything new: the platform waits for it
                entry = None
            # the application's version, from its manifest (onenet_ota.sota_boot.APP)
            self.app = (journal.read_json(APP_MANIFEST) or {}).get("version")
            if entry and entry["phase"] != journal.DOWNLOAD:
                task = entry
                action, a, b = self._confirm(entry)
            else:
                action, a, b = self._check(entry)
                if entry and (action != FETCH or b is None):
                    journal.discard()  # the journal's task is gone
            if action == FETCH:
                task = a
                from onenet_ota.download import upgrade

                try:
                    action, a, b = upgrade(self.platform, a, b, self.buf, self.cfg, self.gauges, self.chip)
                finally:
                    del upgrade
                    drop("download")  # the switch needs none of it
                if self.cfg.trusted_keys and b["kind"] == "fota":
                    self._signed(b)
                b["phase"] = journal.VERIFIED
                journal.save(b)
            if action == SWITCH:
                return self._switch(a, b)
            if action == DONE:
                return self._end(a, b, "")
            return None
        except Fail as e:
            return self._end(e.task or task, e.code, e)
        finally:
            if self.platform:
                self.platform.close()

    def _check(self, entry):
        from onenet_ota import check

        try:
            reported = self.state.get("reported")
            if reported != self._versions():
                # not the first boot and the firmware changed: was it an upgrade?
                if reported and reported.split("/")[0] != self.running:
                    result = check.upgraded(self.platform, self.running)
                    if result[0] == DONE:
                        return result
                self._report_version()
            return check.plan(self.platform, entry, self.running, self.app, self.state.get("failed"),
                              self.cfg.allow_downgrade)
        finally:
            del check
            drop("check")  # its code leaves the heap before a download

    def _signed(self, entry):
        """The firmware in the slot is signed by a trusted key, else Fail 206. After the
        download code left the heap, and before the journal says VERIFIED: a power cut
        before the check never leads to a switch."""
        from onenet_ota import signature

        try:
            block = signature.verify(fota.Slot().partition, entry["length"], self.cfg.trusted_keys, self.buf)
        finally:
            del signature
            drop("signature")
        log("signature ok (block %d)" % block)

    def _confirm(self, entry):
        drop("check")  # run() imported it early for a check; a confirmation has none
        from onenet_ota import confirm

        try:
            if entry["kind"] == "sota":
                return confirm.application(entry, self.app)
            return confirm.firmware(self.platform, entry, self.running)
        finally:
            del confirm
            drop("confirm")

    def _end(self, task, code, why):
        """The task ends with `code`: kept in the journal until the platform took it."""
        if code == ENDED:
            log(why)
            journal.discard()
            return ENDED
        if code != UPGRADED:
            log("failed", code, why)
        elif task["kind"] == "fota":
            fota.confirm()  # keep the running image: no rollback at the next reset
        entry = {"phase": journal.REPORT, "kind": task["kind"], "token": task["token"], "code": code,
                 "md5": task.get("md5")}
        journal.save(entry)
        self._deliver(entry)
        if code == UPGRADED:
            self._report_version()
            log("confirmed", self.running if task["kind"] == "fota" else self.app)
        return code

    def _deliver(self, entry):
        """Report the code in the journal; a task the platform already ended is fine. A code
        that the same package would end in again is remembered: it is not downloaded again."""
        code = entry["code"]
        if not self.platform:  # gone before a switch that failed: the next cycle sends it
            log("report", code, "at the next cycle")
            return
        try:
            self.platform.report(entry, code)
        except Fail as e:  # the platform ended the task itself
            log("report", code, "not taken:", e)
        if code in _LASTING and entry.get("md5"):
            self._remember("failed", [entry["token"], entry["md5"], code])
        journal.discard()

    def _switch(self, boot, entry):
        """Boot the slot (the firmware) or the swapped-in application next. The journal says
        VERIFIED before and SWITCHED after: a cut between the two is finished at the next
        boot, a rollback after SWITCHED is reported. boot: fota.Slot.switch or sota.swap."""
        # nothing more to ask the platform before the reset: its connection and its code leave
        # the heap before the switch, the peak of the heap (ESP-IDF validates the image)
        self.platform.close()
        self.platform = None  # type: ignore[assignment]  # run() closes nothing more
        for name in _PLATFORM:
            drop(name)
        try:
            boot()
        except OSError as e:  # hardware Secure Boot refuses an image it cannot verify
            if entry["kind"] != "fota":
                raise  # a swap that failed midway is finished or undone by sota_boot
            raise Fail(UPGRADE_FAILED, "the boot switch was refused: %s" % e)
        entry["phase"] = journal.SWITCHED
        journal.save(entry)
        log("switching to", entry["target"])
        if self.cfg.reboot:
            from machine import reset

            reset()
        return SWITCHING

    def _versions(self):
        return "%s/%s" % (self.running, self.app or "")

    def _remember(self, name, value):
        self.state[name] = value
        journal.write_json(STATE_PATH, self.state)

    def _report_version(self):
        self.app = (journal.read_json(APP_MANIFEST) or {}).get("version")
        self.platform.report_version(self.running, self.app)
        self._remember("reported", self._versions())
