# bench: the device's download against the raw-socket baseline (baseline.py), into the same
# slot with the same buffer, in the same micropython. "device" is download.into_slot, the
# firmware's data path (download.Stream: Range requests on one kept-alive http.Client, MD5
# as the bytes pass, at each fragment's end the journal and the progress steps passed); "onefragment" the same in
# one Range request (fragment_size >= the package, progress_step 100: no boundary inside),
# "nosteps" in fragments with no progress step (progress_step 100); "upgrade" is the whole
# download phase, download.upgrade (the gates, the token check, the loop, the image check,
# the 101 report). The platform is a stand-in whose fetch() is the real Range request.
# argv: host port token size md5 fragment_size runs (comma separated, in that order)
import sys
import time
import gc

from baseline import baseline, buf, slot, HOST, PORT, TOKEN, SIZE, MD5
from onenet_ota import http, download, check, journal, fota
from onenet_ota.codes import SWITCH

FRAGMENT, RUNS = int(sys.argv[6]), sys.argv[7]


class Cfg:
    fragment_size = FRAGMENT
    progress_step = 10
    timeout = 10


class Platform:
    """The platform object as the download phase uses it: fetch() asks for the Range as
    south.South.fetch does, on one kept-alive connection; the API calls cost nothing."""

    def __init__(self):
        self.client = http.Client(Cfg.timeout)
        self.host = "%s:%d" % (HOST, PORT)

    def start(self, task, whole):
        pass

    def fetch(self, task, at, end):
        resp = self.client.request("GET", "http://%s/ota/south/download/%s" % (self.host, task["token"]),
                                   headers={"Range": "bytes=%d-%d" % (at, end)})
        if resp.status in (200, 206):
            return resp
        resp.close()
        raise http.HTTPError("HTTP status %d" % resp.status)

    def progress(self, task, step):
        pass

    def report(self, task, code):
        pass

    def close(self):
        self.client.close()


def new_task():
    return check.task({"token": TOKEN, "target": "1.1", "size": SIZE, "md5": MD5, "retry": 0, "interval": 0}, "fota")


def device(fragment=FRAGMENT, step=10):
    """The package into the slot by the firmware's own data path, download.into_slot."""
    Cfg.fragment_size = fragment
    Cfg.progress_step = step
    platform = Platform()
    entry, size = download.into_slot(platform, new_task(), None, slot, buf, Cfg(), (None, None, None))
    assert size == SIZE and entry["written"] == SIZE
    platform.close()
    journal.discard()


def upgrade():
    """The whole download phase: download.upgrade up to the verified package's 101."""
    Cfg.fragment_size = FRAGMENT
    Cfg.progress_step = 10
    platform = Platform()
    chip = fota.running_build(buf)[0]
    action = download.upgrade(platform, new_task(), None, buf, Cfg(), (None, None, None), chip)[0]
    assert action == SWITCH, action
    platform.close()
    journal.discard()


FUNCTIONS = {"baseline": baseline, "device": device, "onefragment": lambda: device(SIZE, 100),
             "nosteps": lambda: device(FRAGMENT, 100), "upgrade": upgrade}
for name in RUNS.split(","):
    fn = FUNCTIONS[name]
    gc.collect()
    t = time.ticks_us()
    fn()
    print("bench", name, time.ticks_diff(time.ticks_us(), t))
