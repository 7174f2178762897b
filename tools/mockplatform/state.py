"""Devices, packages, upgrade tasks and the task state machine.

States and the moves between them (the reason is kept in the task's log)::

    to-be-upgraded --token check / first download--> downloading
    downloading --step 100 / result 101--> upgrading
    downloading, upgrading --201--> completed        (or: target version reported, endpoint 1)
    to-be-upgraded, downloading --102..107--> failed
    downloading, upgrading --202..208--> failed
    any open state --cancel()--> cancelled;  --pause()--> paused --resume()--> back
    any open or paused state --token expiry--> expired

Refusals (errno): unknown code 2; completed 20; cancelled 22; expired 12; any other move the
table does not allow (1xx while upgrading, 101 before downloading, anything on a failed or
paused task) 21. All methods that change state must be called with the platform lock held.
"""
import hashlib
import re
import secrets
import string
import time
from pathlib import Path

TO_BE_UPGRADED = "to-be-upgraded"
DOWNLOADING = "downloading"
UPGRADING = "upgrading"
COMPLETED = "completed"
FAILED = "failed"
CANCELLED = "cancelled"
PAUSED = "paused"
EXPIRED = "expired"
OPEN_STATES = (TO_BE_UPGRADED, DOWNLOADING, UPGRADING)

FOTA, SOTA = 1, 2
FULL_PACKAGE, DELTA_PACKAGE = 1, 2
VERSION_FIELD = {FOTA: "f_version", SOTA: "s_version"}

DOWNLOAD_CODES = {
    101: "package downloaded", 102: "not enough space", 103: "out of memory",
    104: "request timed out", 105: "low battery", 106: "poor signal", 107: "unknown error",
}
UPGRADE_CODES = {
    201: "upgrade succeeded", 202: "low battery", 203: "out of memory", 204: "version differs",
    205: "MD5 check failed", 206: "unknown error", 207: "retries exhausted", 208: "upgrade expired",
}
RESULT_CODES = {**DOWNLOAD_CODES, **UPGRADE_CODES}


class Errno:
    OK = 0
    AUTH_FAILED = 1
    BAD_PARAMETER = 2  # also "status code not recognised" on a report
    NOT_FOUND = 4
    INTERNAL = 7
    TOKEN_EXPIRED = 12
    INVALID_STATE = 17
    COMPLETED = 20
    INVALID_OPERATION = 21
    CANCELLED = 22
    BAD_RESULT = 24


ERRORS = {
    Errno.OK: "succ",
    Errno.AUTH_FAILED: "token auth failed",
    Errno.BAD_PARAMETER: "invalid parameter",
    Errno.NOT_FOUND: "not found",
    Errno.INTERNAL: "internal error",
    Errno.TOKEN_EXPIRED: "token expired, the upgrade is over",
    Errno.INVALID_STATE: "invalid state",
    Errno.COMPLETED: "task already completed",
    Errno.INVALID_OPERATION: "invalid operation",
    Errno.CANCELLED: "task cancelled",
    Errno.BAD_RESULT: "bad result in the body",
}

# What a task that is over (or on hold) answers to any report or progress step.
_CLOSED_ERRNO = {
    COMPLETED: Errno.COMPLETED,
    CANCELLED: Errno.CANCELLED,
    EXPIRED: Errno.TOKEN_EXPIRED,
    FAILED: Errno.INVALID_OPERATION,
    PAUSED: Errno.INVALID_OPERATION,
}

# What a token check answers in a state that may not check (upgrading, failed, paused: 17).
_TOKEN_REFUSED_ERRNO = {
    COMPLETED: Errno.COMPLETED,
    CANCELLED: Errno.CANCELLED,
    EXPIRED: Errno.TOKEN_EXPIRED,
}

VERSION_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,20}\Z")
DEFAULT_TOKEN_LIFETIME = 48 * 3600


def valid_version(value) -> bool:
    return isinstance(value, str) and bool(VERSION_PATTERN.match(value))


def new_token() -> str:
    alphabet = string.ascii_letters + string.digits
    return "ota_" + "".join(secrets.choice(alphabet) for _ in range(20))


class Device:
    """A device the platform knows. ``name``/``key`` enable a device-level signature
    (res ``products/{pid}/devices/{name}``) next to the product key."""

    def __init__(self, dev_id, unique_id=None, manuf="101", model="10101",
                 f_version="1.0", s_version="1.0", name=None, key=None):
        if not str(dev_id).isdigit():
            raise ValueError("dev_id is a number (the platform's long), not %r" % (dev_id,))
        for version in (f_version, s_version):
            if version is not None and not valid_version(version):
                raise ValueError("version must be 1-20 chars of [A-Za-z0-9._-]: %r" % (version,))
        self.dev_id = str(dev_id)
        self.unique_id = unique_id
        self.manuf = str(manuf)
        self.model = str(model)
        self.f_version = f_version
        self.s_version = s_version
        self.name = name or self.dev_id
        self.key = key

    def version(self, ota_type):
        return getattr(self, VERSION_FIELD[ota_type])

    def __repr__(self):
        return "Device(%s, f=%s, s=%s)" % (self.dev_id, self.f_version, self.s_version)


class Package:
    """The file a task serves: bytes in memory or a path read piece by piece."""

    def __init__(self, source):
        if isinstance(source, (bytes, bytearray, memoryview)):
            self.data = bytes(source)
            self.path = None
            self.size = len(self.data)
            self.md5 = hashlib.md5(self.data).hexdigest()
        else:
            self.data = None
            self.path = Path(source)
            self.size = self.path.stat().st_size
            digest = hashlib.md5()
            with open(self.path, "rb") as file:
                for piece in iter(lambda: file.read(1 << 20), b""):
                    digest.update(piece)
            self.md5 = digest.hexdigest()

    def reader(self):
        return _BytesReader(self.data) if self.path is None else _FileReader(self.path)


class _BytesReader:
    def __init__(self, data):
        self._view = memoryview(data)

    def read(self, offset, size):
        return self._view[offset:offset + size]

    def close(self):
        self._view.release()


class _FileReader:
    def __init__(self, path):
        self._file = open(path, "rb")

    def read(self, offset, size):
        self._file.seek(offset)
        return self._file.read(size)

    def close(self):
        self._file.close()


class Task:
    """One upgrade task of one device. Read freely; ``expire``, ``cancel``, ``pause`` and
    ``resume`` are for tests (they take the platform lock themselves)."""

    def __init__(self, task_id, device, package, target, *, ota_type, package_type, retry,
                 interval, signal, power, ip_port, token_lifetime, manuf, model, lock, on_change):
        if ota_type not in (FOTA, SOTA):
            raise ValueError("ota_type is 1 (FOTA) or 2 (SOTA), not %r" % (ota_type,))
        if package_type not in (FULL_PACKAGE, DELTA_PACKAGE):
            raise ValueError("package_type is 1 (full) or 2 (delta), not %r" % (package_type,))
        if not valid_version(target):
            raise ValueError("target must be 1-20 chars of [A-Za-z0-9._-]: %r" % (target,))
        self.id = task_id
        self.device = device
        self.package = package if isinstance(package, Package) else Package(package)
        self.target = target
        self.ota_type = ota_type
        self.package_type = package_type
        self.retry = retry
        self.interval = interval
        self.signal = signal
        self.power = power
        self.ip_port = ip_port
        self.manuf = str(manuf)
        self.model = str(model)
        self.token = new_token()
        self.expires_at = time.time() + token_lifetime
        self.state = TO_BE_UPGRADED
        self.history = [TO_BE_UPGRADED]  # every state the task went through, in order
        self.log = [(time.time(), TO_BE_UPGRADED, "created")]  # (time, state, reason)
        self.reports = []   # (result code, errno answered), endpoint 6 and steps > 100
        self.progress = []  # (step, errno answered), endpoint 5 with step 0..100
        self._state_before_pause = None
        self._lock = lock
        self._on_change = on_change

    @property
    def size(self):
        return self.package.size

    @property
    def md5(self):
        return self.package.md5

    @property
    def dev_id(self):
        return self.device.dev_id

    def __repr__(self):
        return "Task(%d, dev %s, %s -> %s, %s)" % (
            self.id, self.dev_id, "FOTA" if self.ota_type == FOTA else "SOTA", self.target, self.state)

    # -- test controls ---------------------------------------------------------------------

    def expire(self):
        """Let the token expire now."""
        with self._lock:
            self.expires_at = time.time()
            self.refresh()

    def cancel(self, reason="cancelled by the operator"):
        with self._lock:
            if self.state in OPEN_STATES + (PAUSED,):
                self._move(CANCELLED, reason)

    def pause(self):
        with self._lock:
            if self.state in OPEN_STATES:
                self._state_before_pause = self.state
                self._move(PAUSED, "paused by the operator")

    def resume(self):
        with self._lock:
            if self.state == PAUSED:
                self._move(self._state_before_pause, "resumed by the operator")

    # -- the state machine (platform lock held) ----------------------------------------------

    def refresh(self):
        """Expire the task if its token ran out while it was still open."""
        if self.state in OPEN_STATES + (PAUSED,) and time.time() >= self.expires_at:
            self._move(EXPIRED, "token expired")

    @property
    def offered(self):
        """Does a task check (endpoint 2) answer with this task?"""
        self.refresh()
        return self.state in OPEN_STATES

    def check_token(self):
        """Endpoint 3: only to-be-upgraded or downloading may check; the first check starts it."""
        self.refresh()
        if self.state == TO_BE_UPGRADED:
            self._move(DOWNLOADING, "token checked")
        if self.state == DOWNLOADING:
            return Errno.OK
        return _TOKEN_REFUSED_ERRNO.get(self.state, Errno.INVALID_STATE)

    def start_download(self):
        """Endpoint 4: may this token download now? The first download starts the task, since
        the token check is optional. Same errno as a token check, but upgrading may download."""
        self.refresh()
        if self.state == TO_BE_UPGRADED:
            self._move(DOWNLOADING, "first download request")
        if self.state in (DOWNLOADING, UPGRADING):
            return Errno.OK
        return self.check_token()

    def report_step(self, step):
        """Endpoint 5 with ``0 <= step <= 100``; step 100 moves on to upgrading."""
        errno = self._step_errno(step)
        self.progress.append((step, errno))
        return errno

    def _step_errno(self, step):
        self.refresh()
        if self.state in _CLOSED_ERRNO:
            return _CLOSED_ERRNO[self.state]
        if self.state != DOWNLOADING:
            return Errno.INVALID_OPERATION
        if step == 100:
            self._move(UPGRADING, "progress step 100")
        return Errno.OK

    def report_result(self, code):
        """Endpoint 6 (and endpoint 5 with a step above 100)."""
        errno = self._result_errno(code)
        self.reports.append((code, errno))
        return errno

    def _result_errno(self, code):
        if code not in RESULT_CODES:
            return Errno.BAD_PARAMETER
        self.refresh()
        if self.state in _CLOSED_ERRNO:
            return _CLOSED_ERRNO[self.state]
        reason = "result %d (%s)" % (code, RESULT_CODES[code])
        if code == 101 and self.state == DOWNLOADING:
            self._move(UPGRADING, reason)
        elif code in DOWNLOAD_CODES and code != 101 and self.state in (TO_BE_UPGRADED, DOWNLOADING):
            self._move(FAILED, reason)
        elif code == 201 and self.state in (DOWNLOADING, UPGRADING):
            setattr(self.device, VERSION_FIELD[self.ota_type], self.target)
            self._move(COMPLETED, reason)
        elif code in UPGRADE_CODES and code != 201 and self.state in (DOWNLOADING, UPGRADING):
            self._move(FAILED, reason)
        else:
            return Errno.INVALID_OPERATION
        return Errno.OK

    def version_reported(self, version):
        """Endpoint 1: the device runs ``version`` now; reaching the target completes the task."""
        self.refresh()
        if self.state in OPEN_STATES and version == self.target:
            self._move(COMPLETED, "target version %s reported" % version)

    def _move(self, state, reason):
        before = self.state
        self.state = state
        self.history.append(state)
        self.log.append((time.time(), state, reason))
        self._on_change(self, before, reason)
