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

    def cycle(self):
        """One cycle. Returns NO_TASK, the report code sent, STOPPED, or SWITCHING."""
        try:
            self._identify()
            entry = journal.load()
            if entry and entry["phase"] != journal.DOWNLOAD:
                from onenet_ota.confirm import confirm

                return confirm(self, entry)
            reported = self.state.get("reported")
            if reported != self.running:
                if reported:  # not the first boot: the version changed, was it an upgrade?
                    from onenet_ota.confirm import lost_token

                    if lost_token(self):
                        return 201
                self.report_version()
            try:
                task = self.api.check(FOTA, self.running, self.cfg.manuf, self.cfg.model, self.cfg.cdn)
            except TaskError as e:
                if not e.token:
                    raise  # no token to report against: the cycle ends with the reason
                # a task that cannot be acted on would be offered again and again: fail it
                log("failed", 107, e)
                journal.discard()
                self.report_final(e.token, 107)
                return 107
            if entry and not (task and entry["token"] == task.token and entry["md5"] == task.md5
                              and entry["size"] == task.size):
                journal.discard()  # the journal's task is gone
                entry = None
            if task is None:
                return NO_TASK
            from onenet_ota.download import upgrade

            return upgrade(self, task, entry)
        finally:
            self.client.close()

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
        self.api.report_version(f_version=self.running)
        self.remember("reported", self.running)

    def report_final(self, token, code):
        """Report the code that ends the task; a task the platform already ended is fine."""
        try:
            self.api.report(token, code)
        except PlatformError as e:
            if e.errno not in _OVER:
                raise
            log("report", code, "not taken:", e)

    def switch(self, slot, entry):
        """Boot the slot next. The journal says VERIFIED before and SWITCHED after: a cut
        between the two is finished at the next boot, a rollback after SWITCHED is reported."""
        slot.switch()
        entry["phase"] = journal.SWITCHED
        journal.save(entry)
        log("switching to", entry["target"])
        if self.cfg.reboot:
            import machine

            self.client.close()
            machine.reset()
        return SWITCHING
