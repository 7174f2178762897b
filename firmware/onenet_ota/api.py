# One method per south endpoint of the OneNET OTA API (shared/spec). Every reply is
# {"errno", "error", "data"}; a non-zero errno becomes a PlatformError the flow acts on, and
# task data is checked field by field before anything trusts it.
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


class TaskError(ValueError):
    """Task data that cannot be trusted. `token` is the task's own when that much was sound:
    the task can then be failed with a report instead of being offered again and again."""

    def __init__(self, why, token=None):
        super().__init__(why)
        self.token = token


def plain(s, most):
    """1..most characters of [A-Za-z0-9._-]: safe in a URL path and query, a valid version.
    Checked as bytes: iterating a str makes a str (an interned qstr) of every character."""
    if type(s) is not str or not 0 < len(s) <= most:
        return False
    for b in s.encode():
        if not (47 < b < 58 or 64 < b < 91 or 96 < b < 123 or b in b"-._"):
            return False
    return True


class Task:
    """The data of endpoints 2 and 7, validated."""

    def __init__(self, d):
        if type(d) is not dict:
            raise TaskError("task data is not an object")
        self._d = d
        # the token goes into URL paths and queries: nothing that could break out of them
        self.token = self._get("token", str, None, 128)
        self.target = self._get("target", str, None, 20)
        self.size = self._get("size", int)
        self.md5 = md5 = self._get("md5", str).lower()
        for b in md5.encode():
            if not (47 < b < 58 or 96 < b < 103):
                raise TaskError("task md5 %r is not hex" % md5, self.token)
        self.signal = self._get("signal", int, 0)
        self.power = self._get("power", int, 0)
        self.retry = self._get("retry", int, 0)
        self.interval = self._get("interval", int, 0)
        self.ip_port = self._get("ipPort", str, "")
        self.delta = self._get("type", int, 1) == 2
        self.kind = "fota"  # or "sota": which check (endpoint 2 type) offered it
        del self._d
        if self.size <= 0 or len(md5) != 32 or self.retry < 0 \
                or self.interval < 0 or not (self.ip_port == "" or plain(self.ip_port.replace(":", ""), 255)):
            raise TaskError("task data out of range: size %d md5 %s retry %d interval %d ipPort %s" % (
                self.size, self.md5, self.retry, self.interval, self.ip_port), self.token)

    def _get(self, name, kind, default=None, most=0):
        value = self._d.get(name, default)
        if type(value) is not kind or (most and not plain(value, most)):
            raise TaskError("task %s: %r" % (name, value), getattr(self, "token", None))
        return value


class Api:
    def __init__(self, client, auth, base, dev_id):
        self.client = client
        self.auth = auth
        self.base = base  # "http://host:port"
        self.dev_id = dev_id

    def _call(self, method, path, body=None):
        """One call; returns `data` (or None). On errno 1 the header is signed anew once: the
        usual cause is a device clock the server's Date has just corrected. An HTTP 5xx or
        errno 7 (the platform's own trouble) is asked once more at once: every call is safe
        to repeat, and a device that checks hourly should not lose an hour to one hiccup."""
        for attempt in (0, 1):
            gc.collect()  # garbage of the last call goes first: fewer holes in a small heap
            resp = self.client.request(method, self.base + path,
                                       headers={"Authorization": self.auth.header()}, json=body)
            self.auth.sync(resp.date)
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
                self.auth.renew()

    def _task(self, path, none_errnos):
        try:
            data = self._call("GET", path)
        except PlatformError as e:
            # none_errnos None: any errno but 7 (check); else only those listed (tasking)
            if e.errno != _INTERNAL if none_errnos is None else e.errno in none_errnos:
                return None
            raise
        return Task(data) if data else None

    def check(self, kind, version, manuf, model, cdn):
        """Endpoint 2: the open task of this kind, or None (any errno without data but 7: an
        internal error says nothing about the task, and "no task" would drop its journal)."""
        return self._task("/ota/south/check?dev_id=%s&manuf=%d&model=%d&type=%d&version=%s&cdn=%s" % (
            self.dev_id, manuf, model, kind, version, "true" if cdn else "false"), None)

    def tasking(self, kind, cdn):
        """Endpoint 7: the task being downloaded or upgraded (after the token was lost)."""
        return self._task("/ota/south/tasking?dev_id=%s&type=%d&cdn=%s" % (
            self.dev_id, kind, "true" if cdn else "false"), (4, 12))

    def report_version(self, f_version, s_version=None):
        body = {"f_version": f_version}
        if s_version:
            body["s_version"] = s_version
        self._call("POST", "/ota/device/version?dev_id=" + self.dev_id, body)

    def check_token(self, token):
        self._call("GET", "/ota/south/download/%s/check?dev_id=%s" % (token, self.dev_id))

    def progress(self, token, step):
        self._call("POST", "/ota/south/device/download/%s/progress?dev_id=%s" % (token, self.dev_id),
                   {"step": step})

    def report(self, token, result):
        self._call("POST", "/ota/south/report?dev_id=%s&token=%s" % (self.dev_id, token), {"result": result})

    def device_id(self, product_id, unique_id):
        """Endpoint 9: the dev_id of the device with this unique id."""
        data = self._call("GET", "/ota/devInfo?pid=%s&authInfo=%s" % (product_id, unique_id))
        dev_id = data.get("dev_id") if type(data) is dict else None
        if type(dev_id) is int:
            dev_id = str(dev_id)
        if type(dev_id) is not str or not dev_id.isdigit():
            raise TaskError("devInfo gave no dev_id")
        return dev_id
