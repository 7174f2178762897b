# One method per south endpoint of the OneNET OTA API (shared/spec). Every reply is
# {"errno", "error", "data"}; a non-zero errno becomes a PlatformError the flow acts on, and
# the task data is checked field by field before anything trusts it.
from micropython import const

# errno values the flow tells apart
AUTH_FAILED = const(1)
NOT_FOUND = const(4)
INTERNAL = const(7)
EXPIRED = const(12)
INVALID_STATE = const(17)
COMPLETED = const(20)
INVALID_OPERATION = const(21)
CANCELLED = const(22)

_TOKEN_MAX = const(128)
_VERSION_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._"
_HEX = "0123456789abcdef"


class PlatformError(Exception):
    def __init__(self, errno, error):
        super().__init__("platform errno %d: %s" % (errno, error))
        self.errno = errno


class ServerError(Exception):
    """The platform answered with an HTTP status other than 200 (5xx: worth retrying)."""

    def __init__(self, status):
        super().__init__("HTTP status %d" % status)
        self.status = status


class TaskError(ValueError):
    """The task data cannot be trusted (wrong type, missing field, impossible value)."""


def valid_version(v):
    return isinstance(v, str) and 1 <= len(v) <= 20 and all(c in _VERSION_CHARS for c in v)


class Task:
    """The data of endpoints 2 and 7, validated."""

    def __init__(self, data):
        if not isinstance(data, dict):
            raise TaskError("task data is not an object")
        token = data.get("token")
        # the token goes into URL paths and queries: nothing that could break out of them
        if not isinstance(token, str) or not 0 < len(token) <= _TOKEN_MAX or not all(
            c in _VERSION_CHARS for c in token
        ):
            raise TaskError("task token %r is not a plain token" % (token,))
        self.token = token
        self.target = self._field(data, "target", str)
        if not valid_version(self.target):
            raise TaskError("task target %r is not a version" % self.target)
        self.size = self._field(data, "size", int)
        if self.size <= 0:
            raise TaskError("task size %d" % self.size)
        md5 = self._field(data, "md5", str).lower()
        if len(md5) != 32 or not all(c in _HEX for c in md5):
            raise TaskError("task md5 %r is not 32 hex digits" % md5)
        self.md5 = md5
        self.signal = self._field(data, "signal", int, 0)
        self.power = self._field(data, "power", int, 0)
        self.retry = self._field(data, "retry", int, 0)
        self.interval = self._field(data, "interval", int, 0)
        if self.retry < 0 or self.interval < 0:
            raise TaskError("task retry/interval negative")
        self.ip_port = self._field(data, "ipPort", str, "")
        if any(c in self.ip_port for c in " /\r\n\t"):
            raise TaskError("task ipPort %r is not host:port" % self.ip_port)
        self.delta = self._field(data, "type", int, 1) == 2

    @staticmethod
    def _field(data, name, kind, default=None):
        value = data.get(name, default)
        if value is None:
            raise TaskError("task has no %r" % name)
        if type(value) is not kind:
            raise TaskError("task %r is not %s" % (name, kind.__name__))
        return value


class Api:
    def __init__(self, client, auth, base, dev_id):
        self.client = client
        self.auth = auth
        self.base = base  # "http://host:port"
        self.dev_id = dev_id

    def _call(self, method, path, body=None):
        """One API call; returns `data` (or None). Refreshes the Authorization header once on
        errno 1, since the usual cause is a device clock the server's Date just corrected."""
        for attempt in (0, 1):
            resp = self.client.request(
                method, self.base + path, headers={"Authorization": self.auth.header()}, json=body)
            self.auth.sync(resp.date)
            if resp.status != 200:
                resp.close()
                raise ServerError(resp.status)
            reply = resp.json()
            if not isinstance(reply, dict) or type(reply.get("errno")) is not int:
                raise ServerError(200)  # answered, but not in the platform's shape
            errno = reply["errno"]
            if errno == AUTH_FAILED and not attempt:
                self.auth.renew()
                continue
            if errno:
                raise PlatformError(errno, str(reply.get("error")))
            return reply.get("data")

    def report_version(self, f_version=None, s_version=None):
        body = {}
        if f_version:
            body["f_version"] = f_version
        if s_version:
            body["s_version"] = s_version
        self._call("POST", "/ota/device/version?dev_id=" + self.dev_id, body)

    def check(self, kind, version, manuf, model, cdn):
        """Endpoint 2: the open task of this kind, or None."""
        try:
            data = self._call("GET", "/ota/south/check?dev_id=%s&manuf=%d&model=%d&type=%d&version=%s&cdn=%s" % (
                self.dev_id, manuf, model, kind, version, "true" if cdn else "false"))
        except PlatformError:
            return None  # "no task" is a non-zero errno without data
        return Task(data) if data else None

    def tasking(self, kind, cdn):
        """Endpoint 7: the task being downloaded or upgraded, after the token was lost."""
        try:
            data = self._call("GET", "/ota/south/tasking?dev_id=%s&type=%d&cdn=%s" % (
                self.dev_id, kind, "true" if cdn else "false"))
        except PlatformError as e:
            if e.errno in (NOT_FOUND, EXPIRED):
                return None
            raise
        return Task(data) if data else None

    def check_token(self, token):
        self._call("GET", "/ota/south/download/%s/check?dev_id=%s" % (token, self.dev_id))

    def progress(self, token, step):
        self._call("POST", "/ota/south/device/download/%s/progress?dev_id=%s" % (token, self.dev_id), {"step": step})

    def report(self, token, result):
        self._call("POST", "/ota/south/report?dev_id=%s&token=%s" % (self.dev_id, token), {"result": result})

    def device_id(self, product_id, unique_id):
        data = self._call("GET", "/ota/devInfo?pid=%s&authInfo=%s" % (product_id, unique_id))
        dev_id = data.get("dev_id") if isinstance(data, dict) else None
        if type(dev_id) is int:
            dev_id = str(dev_id)
        if not isinstance(dev_id, str) or not dev_id.isdigit():
            raise TaskError("devInfo gave no dev_id")
        return dev_id
