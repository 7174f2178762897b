# OneNET's legacy south API (docs/south-api.md) as the cycle's platform object: every call
# the phases make to the platform goes through one of its methods. The current fuse-ota API
# is a second object with the same methods; the config picks one and only its module is
# imported.
#
# Every reply is {"errno", "error", "data"}. A refusal that means the task is over (the rule
# is _OVER, here and nowhere else) ends it as codes.ENDED: the cycle reports nothing more.
from micropython import const
import gc

from onenet_ota import http
from onenet_ota.auth import Auth
from onenet_ota.codes import Fail, ENDED, DOWNLOAD_FAILED, DOWNLOADED

_AUTH_FAILED = const(1)
_INTERNAL = const(7)  # the platform's own trouble: says nothing about the task
_UPGRADING = const(17)  # invalid state: the task is already past its download
_INVALID = const(21)
# errno that end the task: token and device do not match (4), expired (12), invalid state
# (17), completed (20), invalid operation (21), cancelled (22). Two answers are not "over":
# a token check answered 17 when the whole package is in the slot (the 101 went out before
# a power cut), and a 101 answered 21 (the same cut, one step later).
_OVER = (4, 12, 17, 20, 21, 22)

# The task data of endpoints 2 and 7 in the names the phases use (check.task): the south
# API's own name -> ours. Only the platform's name counts: ours, sent as is, is dropped.
_NAMES = (("ipPort", "ip_port"), ("type", "delta"))


def _named(data):
    if type(data) is dict:
        for theirs, ours in _NAMES:
            data.pop(ours, None)
            if theirs in data:
                data[ours] = data.pop(theirs)
    return data


class PlatformError(Exception):
    """A reply with a non-zero errno."""

    def __init__(self, errno, error):
        super().__init__("platform errno %d: %s" % (errno, error))
        self.errno = errno


class ServerError(Exception):
    """An HTTP status other than the expected one (5xx: worth retrying)."""

    def __init__(self, status):
        super().__init__("HTTP status %d" % status)
        self.status = status


def _ended(e):
    if e.errno in _OVER:
        raise Fail(ENDED, "task ended by the platform: %s" % e)
    raise e


class South:
    def __init__(self, cfg):
        # one kept-alive connection for the calls and the download
        self.client = http.Client(timeout=cfg.timeout, cafile=cfg.ca_file or None)
        self.cfg = cfg
        self.auth = Auth(cfg.product_id, cfg.access_key, method=cfg.auth_method,
                         lifetime=cfg.auth_lifetime)
        self.host = "%s:%d" % (cfg.host, cfg.port)
        self.scheme = "https" if cfg.https else "http"
        self.dev_id = cfg.device_id
        self.fetcher = None  # a second Client, for a package on another host (ipPort)

    def close(self):
        self.client.close()
        if self.fetcher:
            self.fetcher.close()

    def call(self, method, path, body=None):
        """One call; returns `data` (or None). It follows no redirect (http: a request with
        Authorization does not), so a 3xx is a ServerError. Over TLS the first answer's Date
        corrects the clock (auth.sync: never by more than the lifetime); over plain http no
        Date is taken. On errno 1 the clock is set from that answer's Date (over TLS) and the
        header signed anew, once: the usual cause is a wrong device clock. An
        HTTP 5xx or errno 7 (the platform's own trouble) is asked once more at once: every call
        is safe to repeat, and a device that checks hourly should not lose an hour to one
        hiccup."""
        for attempt in (0, 1):
            gc.collect()  # garbage of the last call goes first: fewer holes in a small heap
            resp = self.client.request(method, "%s://%s%s" % (self.scheme, self.host, path),
                                       headers={"Authorization": self.auth.header()}, json=body)
            tls = self.scheme == "https"  # no redirect followed: the answer came over TLS
            if tls and not self.auth.synced:
                self.auth.sync(resp.date)  # the first answer sets the clock; errno 1 again
            if resp.status != 200:
                resp.close()
                if resp.status >= 500 and not attempt:
                    continue
                raise ServerError(resp.status)
            reply = resp.json()
            errno = reply.get("errno") if type(reply) is dict else None
            if type(errno) is not int:
                raise ServerError(200)  # an answer, but not in the platform's shape
            if not errno:
                return reply.get("data")
            if attempt or errno not in (_AUTH_FAILED, _INTERNAL):
                raise PlatformError(errno, str(reply.get("error")))
            if errno == _AUTH_FAILED:
                if tls:
                    self.auth.sync(resp.date)
                self.auth.renew()

    def identify(self, known, seen=None):
        """The device's dev_id: configured; else `known`, looked up over TLS before; else
        looked up now with endpoint 9. An id looked up over plain http is never taken for
        good: it is looked up again at every boot and must equal `seen`, the answer the
        boot before (a different one is a ValueError: nothing is downloaded). Returns the
        (state name, id) to remember, or None."""
        if self.dev_id:
            return None
        if known:
            self.dev_id = known
            return None
        data = self.call("GET", "/ota/devInfo?pid=%s&authInfo=%s" % (self.cfg.product_id, self.cfg.unique_id))
        dev_id = data.get("dev_id") if type(data) is dict else None
        if type(dev_id) is int:
            dev_id = str(dev_id)
        if type(dev_id) is not str or not dev_id.isdigit():
            raise ValueError("devInfo gave no dev_id")
        if self.scheme == "https":
            self.dev_id = dev_id
            return "dev_id_tls", dev_id
        if seen and seen != dev_id:
            raise ValueError("devInfo gave dev_id %s over plain http, %s before: refused" % (dev_id, seen))
        self.dev_id = dev_id
        return None if seen else ("dev_id_http", dev_id)

    def report_version(self, firmware, app):
        """Endpoint 1: the versions running now (app None: no application)."""
        body = {"f_version": firmware}
        if app:
            body["s_version"] = app
        self.call("POST", "/ota/device/version?dev_id=" + self.dev_id, body)

    def check(self, kind, version):
        """Endpoint 2: the task data of the open task of this kind (1 firmware, 2 application)
        for a device running `version`, or None. Any errno but 7 means no task: an internal
        error says nothing about the task, and "no task" would drop its journal."""
        try:
            return _named(self.call("GET", "/ota/south/check?dev_id=%s&manuf=%d&model=%d&type=%d&version=%s&cdn=%s" % (
                self.dev_id, self.cfg.manuf, self.cfg.model, kind, version, self._cdn())))
        except PlatformError as e:
            if e.errno == _INTERNAL:
                raise
            return None

    def in_progress(self, kind):
        """Endpoint 7: the task data of the task being downloaded or upgraded, or None."""
        try:
            return _named(self.call("GET", "/ota/south/tasking?dev_id=%s&type=%d&cdn=%s" % (
                self.dev_id, kind, self._cdn())))
        except PlatformError as e:
            if e.errno in (4, 12):  # no valid token, expired
                return None
            raise

    def _cdn(self):
        return "true" if self.cfg.cdn else "false"

    def start(self, task, whole):
        """Endpoint 3, the token check: the platform moves the task to downloading. whole:
        the whole package is in the slot already."""
        try:
            self.call("GET", "/ota/south/download/%s/check?dev_id=%s" % (task["token"], self.dev_id))
        except PlatformError as e:
            if e.errno != _UPGRADING or not whole:
                _ended(e)

    def fetch(self, task, at, end):
        """Endpoint 4: the answer to Range bytes=at-end, its head read: a 200 or a 206 for
        the caller to check. A 5xx is an http.HTTPError (worth retrying); any other status is a
        refusal, and the token check says why (ended, or 107)."""
        host = task["ip_port"] or self.host
        client = self.client
        if host != self.host:  # the package is elsewhere: a connection of its own
            client = self.fetcher = self.fetcher or http.Client(self.cfg.timeout, cafile=self.cfg.ca_file or None)
        resp = client.request("GET", "%s://%s/ota/south/download/%s" % (self.scheme, host, task["token"]),
                              headers={"Range": "bytes=%d-%d" % (at, end)})
        if resp.status in (200, 206):
            return resp
        resp.close()
        if resp.status >= 500:  # the reader tries again, as after a drop
            raise http.HTTPError("HTTP status %d" % resp.status)
        self.start(task, False)
        raise Fail(DOWNLOAD_FAILED, "download refused: HTTP status %d" % resp.status)

    def progress(self, task, step):
        """Endpoint 5: `step` percent of the package are in the slot."""
        try:
            self.call("POST", "/ota/south/device/download/%s/progress?dev_id=%s" % (task["token"], self.dev_id),
                      {"step": step})
        except PlatformError as e:
            _ended(e)

    def report(self, task, code):
        """Endpoint 6: the report code that ends the download (101) or the task."""
        try:
            self.call("POST", "/ota/south/report?dev_id=%s&token=%s" % (self.dev_id, task["token"]), {"result": code})
        except PlatformError as e:
            if code != DOWNLOADED or e.errno != _INVALID:
                _ended(e)
