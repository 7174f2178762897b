# One OTA cycle: confirm a pending upgrade, report the version, check for a task, hand it to
# the download. The parts a cycle may not need (confirmation, download) are separate modules,
# imported only when there is work for them: a boot that finds no task never loads them.
#
# Every failure ends in exactly one report code to the platform (shared/spec, endpoint 6) and
# leaves the boot selection alone; only a verified image is ever switched to.
from micropython import const

from onenet_ota import journal, fota, http
from onenet_ota.api import Api, PlatformError, TaskError

FOTA = const(1)
SOTA = const(2)
_KINDS = {FOTA: "fota", SOTA: "sota"}
APP_MANIFEST = "app/manifest.json"
STATE_PATH = "ota_state.json"  # the dev_id once looked up, the version last reported

# What cycle() returns besides the report code it sent
NO_TASK = None
STOPPED = const(0)  # the platform ended the task (expired, cancelled, completed)
SWITCHING = const(1)  # a verified image boots next; the device resets unless reboot is off

# errno that mean "the task is over" when a final report is refused: expired, completed,
# invalid operation, cancelled
_OVER = (12, 20, 21, 22)


def log(*args):
    print("ota:", *args)


class Updater:
    """battery() and signal() return the levels the task's `power` and `signal` thresholds
    are compared with; progress(percent) sees the download advance. All are optional."""

    def __init__(self, cfg, battery=None, signal=None, progress=None, buf=None):
        # buf: chunk_size bytes allocated early (see onenet_ota.run), else allocated here
        self.buf = buf or bytearray(cfg.chunk_size)
        self.cfg = cfg
        self.battery = battery
        self.signal = signal
        self.progress = progress
        from onenet_ota.auth import Auth

        self.client = http.Client(timeout=cfg.timeout, cafile=cfg.ca_file or None)
        self.scheme = "https" if cfg.https else "http"
        self.host = "%s:%d" % (cfg.host, cfg.port)
        self.api = Api(self.client, Auth(cfg.product_id, cfg.access_key, method=cfg.auth_method,
                                         lifetime=cfg.auth_lifetime),
                       "%s://%s" % (self.scheme, self.host), cfg.device_id)
        self.state = journal.read_json(STATE_PATH) or {}
        self.chip, self.running = fota.running_build(self.buf)
        if cfg.version:
            self.running = cfg.version
        # the application's version, from its manifest (onenet_ota.sota_boot.APP)
        self.app = (journal.read_json(APP_MANIFEST) or {}).get("version")

    def cycle(self):
        """One cycle. Returns NO_TASK, the report code sent, STOPPED, or SWITCHING."""
        try:
            self._identify()
            entry = journal.load()
            if entry and entry["phase"] != journal.DOWNLOAD:
                from onenet_ota.confirm import confirm

                return confirm(self, entry)
            reported = self.state.get("reported")
            if reported != self.versions():
                # not the first boot and the firmware changed: was it an upgrade?
                if reported and reported.split("/")[0] != self.running:
                    from onenet_ota.confirm import lost_token

                    if lost_token(self):
                        return 201
                self.report_version()
            # firmware first: an application is built for the firmware it runs on
            for kind, version in ((FOTA, self.running), (SOTA, self.app or "0")):
                try:
                    task = self.api.check(kind, version, self.cfg.manuf, self.cfg.model, self.cfg.cdn)
                except TaskError as e:
                    if not e.token:
                        raise  # no token to report against: the cycle ends with the reason
                    # a task that cannot be acted on would be offered again and again: fail it
                    log("failed", 107, e)
                    journal.discard()
                    self.report_final(e.token, 107)
                    return 107
                if entry and entry["kind"] == _KINDS[kind] and not (
                        task and entry["token"] == task.token and entry["md5"] == task.md5
                        and entry["size"] == task.size):
                    journal.discard()  # the journal's task is gone
                    entry = None
                if task:
                    from onenet_ota.download import upgrade

                    task.kind = _KINDS[kind]
                    return upgrade(self, task, entry if entry and entry["kind"] == task.kind else None)
            return NO_TASK
        finally:
            self.client.close()

    def versions(self):
        return "%s/%s" % (self.running, self.app or "")

    def _identify(self):
        if not self.api.dev_id:
            dev_id = self.state.get("dev_id")
            if not dev_id:
                dev_id = self.api.device_id(self.cfg.product_id, self.cfg.unique_id)
                self.remember("dev_id", dev_id)
            self.api.dev_id = dev_id

    def remember(self, name, value):
        self.state[name] = value
        journal.write_json(STATE_PATH, self.state)

    def report_version(self):
        self.app = (journal.read_json(APP_MANIFEST) or {}).get("version")
        self.api.report_version(self.running, self.app)
        self.remember("reported", self.versions())

    def report_final(self, token, code):
        """Report the code that ends the task; a task the platform already ended is fine."""
        try:
            self.api.report(token, code)
        except PlatformError as e:
            if e.errno not in _OVER:
                raise
            log("report", code, "not taken:", e)

    def switch(self, do, entry):
        """Boot the slot (the firmware) or the swapped-in application next. The journal says
        VERIFIED before and SWITCHED after: a cut between the two is finished at the next
        boot, a rollback after SWITCHED is reported. do: fota.Slot.switch or sota.swap."""
        do()
        entry["phase"] = journal.SWITCHED
        journal.save(entry)
        log("switching to", entry["target"])
        if self.cfg.reboot:
            import machine

            self.client.close()
            machine.reset()
        return SWITCHING
