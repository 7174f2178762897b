# The OneNET OTA API calls a whole cycle needs (shared/spec). Every reply is
# {"errno", "error", "data"}; a non-zero errno becomes a PlatformError the flow acts on.
# The calls that fetch and check task data (endpoints 2, 7, 9) are in check.py, which is
# dropped from the heap before a download starts.
from micropython import const
import gc

_AUTH_FAILED = const(1)
_INTERNAL = const(7)


class PlatformError(Exception):
    def __init__(self, errno, error):
        super().__init__("platform errno %d: %s" % (errno, error))
        self.errno = errno


class ServerError(Exception):
    """An HTTP status other than the expected one (5xx: worth retrying)."""

    def __init__(self, status):
        super().__init__("HTTP status %d" % status)
        self.status = status


class Api:
    def __init__(self, client, auth, base, dev_id):
        self.client = client
        self.auth = auth
        self.base = base  # "http://host:port"
        self.dev_id = dev_id

    def call(self, method, path, body=None):
        """One call; returns `data` (or None). On errno 1 the clock is set from the answer's
        Date and the header signed anew, once: the usual cause is a wrong device clock. An
        HTTP 5xx or errno 7 (the platform's own trouble) is asked once more at once: every call
        is safe to repeat, and a device that checks hourly should not lose an hour to one
        hiccup."""
        for attempt in (0, 1):
            gc.collect()  # garbage of the last call goes first: fewer holes in a small heap
            resp = self.client.request(method, self.base + path,
                                       headers={"Authorization": self.auth.header()}, json=body)
            if not self.auth.synced:
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
                self.auth.sync(resp.date)
                self.auth.renew()

    def report_version(self, f_version, s_version=None):
        body = {"f_version": f_version}
        if s_version:
            body["s_version"] = s_version
        self.call("POST", "/ota/device/version?dev_id=" + self.dev_id, body)

    def check_token(self, token):
        self.call("GET", "/ota/south/download/%s/check?dev_id=%s" % (token, self.dev_id))

    def progress(self, token, step):
        self.call("POST", "/ota/south/device/download/%s/progress?dev_id=%s" % (token, self.dev_id),
                   {"step": step})

    def report(self, token, result):
        self.call("POST", "/ota/south/report?dev_id=%s&token=%s" % (self.dev_id, token), {"result": result})
