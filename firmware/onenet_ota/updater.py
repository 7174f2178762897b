# One OTA cycle: confirm a pending upgrade, report the version, check for a task (check.py),
# hand it to the download (download.py). The Updater holds what every part shares; the parts
# are separate modules, imported only when there is work for them (a boot that finds no task
# never loads the download), and the check leaves the heap before the download comes in.
#
# Every failure ends in exactly one report code to the platform (shared/spec, endpoint 6) and
# leaves the boot selection alone; only a verified image is ever switched to.
from micropython import const

from onenet_ota import journal, fota, http, drop, log
from onenet_ota.api import Api, PlatformError
from onenet_ota.auth import Auth

APP_MANIFEST = "app/manifest.json"
STATE_PATH = "ota_state.json"  # the dev_id once looked up, the version last reported

# What cycle() returns besides the report code it sent
NO_TASK = None
STOPPED = const(0)  # the platform ended the task (expired, cancelled, completed)
SWITCHING = const(1)  # a verified image boots next; the device resets unless reboot is off

# errno that mean "the task is over" when a final report is refused: expired, completed,
# invalid operation, cancelled
_OVER = (12, 20, 21, 22)


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
        """One cycle. Returns NO_TASK, the report code sent, STOPPED, or SWITCHING.
        Phases: check.py decides, then confirm.py or download.py does it, then the switch;
        each phase's module leaves the heap before the next one comes in."""
        try:
            from onenet_ota import check

            job = check.plan(self)
            del check
            if type(job) is tuple and job[0] is None:
                # a confirmation: it asks the platform with check's code, then drops it
                from onenet_ota.confirm import confirm

                return confirm(self, job[1])
            drop("check")
            if type(job) is not tuple:
                return job
            task, entry = job
            from onenet_ota.download import upgrade

            job = upgrade(self, task, entry)
            del upgrade
            if type(job) is not tuple:
                return job
            drop("download")  # the switch needs none of it
            return self.switch(*job)
        finally:
            self.client.close()

    def versions(self):
        return "%s/%s" % (self.running, self.app or "")

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
        self.client.close()  # nothing more to ask before the reset; its socket goes first
        do()
        entry["phase"] = journal.SWITCHED
        journal.save(entry)
        log("switching to", entry["target"])
        if self.cfg.reboot:
            # only now: the switch is the peak of the heap (ESP-IDF validates the image)
            from machine import reset

            reset()
        return SWITCHING
