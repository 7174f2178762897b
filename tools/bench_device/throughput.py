# bench: the device's download against the raw-socket baseline (baseline.py), into the same
# slot with the same buffer, in the same micropython. "device" is download.Stream (Range
# requests on one kept-alive http.Client, MD5 as the bytes pass, the journal and a progress
# report at each boundary) read by the loop download.upgrade runs; "onefragment" the same in
# one Range request (fragment_size >= the package, progress_step 100: no boundary inside),
# "nosteps" in fragments with no progress step (progress_step 100: a boundary per fragment); "upgrade" is the whole
# download phase, download.upgrade (the gates, the token check, the loop, the image check,
# the 101 report). The platform is a stand-in whose fetch() is the real Range request.
# argv: host port token size md5 fragment_size runs (comma separated, in that order)
import sys
import time
import gc
import hashlib
import binascii

from baseline import baseline, buf, slot, HOST, PORT, TOKEN, SIZE, MD5
from onenet_ota import http, download, check, journal, fota
from onenet_ota.codes import SWITCH

FRAGMENT, RUNS = int(sys.argv[6]), sys.argv[7]
SECTOR = 4096


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
    """The package through download.Stream into the slot, as the download loop reads it."""
    Cfg.fragment_size = fragment
    Cfg.progress_step = step
    platform = Platform()
    task = new_task()
    entry = {"kind": "fota", "phase": journal.DOWNLOAD, "token": TOKEN, "target": task["target"], "md5": MD5,
             "size": SIZE, "written": 0, "delta": False}
    journal.save(entry)
    src = download.Stream(platform, task, entry, hashlib.md5(), Cfg(), None, buf)
    chunk = len(buf)
    while src.at < SIZE:
        written = src.at
        n = src.read_into(buf, chunk)
        if n < chunk:  # the end of the package: the rest of the sector stays erased
            for i in range(n, chunk):
                buf[i] = 0xFF
        slot.write(written // SECTOR, buf)
    entry["written"] = SIZE
    journal.save(entry)
    assert binascii.hexlify(src.md5.digest()).decode() == MD5
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
