# The check phase: is there a task for this device, and can its data be trusted? The cycle
# drops this module before a download or a confirmation, so nothing here may outlive a
# call: a task leaves as a plain dict (an object of a class from here would keep the whole
# module in the heap through its methods).
#
# No downgrade: a task whose target is not newer than what runs now (the firmware's version;
# for an application task the installed application's) is refused with 204 before anything
# is downloaded (only the token check is made, for the platform takes a 2xx code only from
# a task that is downloading), unless the config says "allow_downgrade": true. A target
# equal to the running version (a re-install) is not newer either. Versions compare as
# dotted numbers: "1.10" > "1.9", "1.0" == "1.0.0" == "1" (trailing zero parts do not
# count, nor leading zeros: "1.01" == "1.1"), and a leading "v" or "V" is ignored ("v1.2" == "1.2"). Anything
# else - an empty part, a part that is not all decimal digits ("1.2-rc1", "1.2b", "dev") -
# cannot be ordered, and a version that cannot be ordered, on either side, is never newer:
# the task is refused. That is the safe side for a device: a text rule (is "1.2-rc1" before
# or after "1.2"?) would let some pre-release or renamed build count as an upgrade, and a
# wrongly refused upgrade is reported (204, with the reason) and fixed on the platform with
# a numeric version or by allowing downgrades, while a wrongly taken downgrade may bring back
# whatever the newer build fixed. No installed application (no manifest): any application
# target is taken.
from micropython import const

from onenet_ota.codes import Fail, IDLE, FETCH, DONE, DOWNLOAD_FAILED, UPGRADED, WRONG_BUILD

FOTA = const(1)  # the `type` of a check: firmware
SOTA = const(2)  # application files

_KINDS = {FOTA: "fota", SOTA: "sota"}

# The task data every platform object hands over (it renames its own fields to these):
# name, type, default (None: required), longest if plain text
_FIELDS = (
    ("token", str, None, 128),  # goes into URL paths and queries: plain text only
    ("target", str, None, 20),
    ("size", int, None, 0),
    ("md5", str, None, 0),
    ("signal", int, 0, 0),
    ("power", int, 0, 0),
    ("retry", int, 0, 0),
    ("interval", int, 0, 0),
    ("ip_port", str, "", 0),
    ("delta", int, 1, 0),  # the package type: 2 is a differential package
)


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


def numbers(v):
    """The parts of a dotted numeric version as ints without trailing zeros ("v1.10.0" ->
    [1, 10]), or None for anything else (see the module comment)."""
    if type(v) is not str:
        return None
    if v[:1] in ("v", "V"):
        v = v[1:]
    out = []
    for part in v.split("."):
        if not part:
            return None
        for b in part.encode():
            if not 47 < b < 58:
                return None
        out.append(int(part))
    while len(out) > 1 and out[-1] == 0:
        out.pop()
    return out


def newer(target, current):
    """Whether version `target` is newer than `current`; False when either cannot be ordered."""
    t, c = numbers(target), numbers(current)
    return t is not None and c is not None and t > c


def task(d, kind):
    """Task data as the platform object handed it over, validated, as a dict (delta: True
    for a differential package) with its kind ("fota" or "sota": which check offered it)."""
    if type(d) is not dict:
        raise TaskError("task data is not an object")
    t = {"kind": kind}
    for name, cls, default, most in _FIELDS:
        value = d.get(name, default)
        # a token "." or ".." would climb a path segment of the download URL
        if type(value) is not cls or (most and not plain(value, most)) or (name == "token" and value in (".", "..")):
            raise TaskError("task %s: %r" % (name, value), t.get("token"))
        t[name] = value
    md5 = t["md5"] = t["md5"].lower()
    for b in md5.encode():
        if not (47 < b < 58 or 96 < b < 103):
            raise TaskError("task md5 %r is not hex" % md5, t["token"])
    t["delta"] = t["delta"] == 2
    ip_port = t["ip_port"]
    if t["size"] <= 0 or len(md5) != 32 or t["retry"] < 0 or t["interval"] < 0 \
            or not (ip_port == "" or _origin(ip_port)):
        raise TaskError("task data out of range: size %d md5 %s retry %d interval %d ip_port %s" % (
            t["size"], md5, t["retry"], t["interval"], ip_port), t["token"])
    return t


def _origin(s):
    """Whether s is host or host:port (1..65535): a URL built from it cannot fail to parse."""
    host, colon, port = s.partition(":")
    if not plain(host, 253):
        return False
    return not colon or (port.isdigit() and len(port) < 6 and 0 < int(port) < 65536)


def upgraded(platform, running):
    """The running firmware changed, yet no journal says why (the token was lost): the task
    in progress tells whether this is its target. (DONE, task, 201) or (IDLE, None, None)."""
    data = platform.in_progress(FOTA)
    t = data and task(data, "fota")
    if not t or t["target"] != running:
        return IDLE, None, None
    return DONE, t, UPGRADED


def plan(platform, entry, running, app, failed, downgrade=False):
    """What this cycle does: (FETCH, task, the journal entry to resume or None) or (IDLE,
    None, None). A task that cannot be acted on, or that failed before for a lasting reason
    (`failed`: [token, md5, code] of that one), raises Fail for it; so does one whose target
    is not newer than the running firmware (or the installed application: `app`, None when
    there is none), unless `downgrade` (the config's allow_downgrade). entry: the journal of
    a download, or None."""
    # firmware first: an application is built for the firmware it runs on
    for kind, version in ((FOTA, running), (SOTA, app or "0")):
        name = _KINDS[kind]
        try:
            data = platform.check(kind, version)
            t = data and task(data, name)
        except TaskError as e:
            if not e.token:
                raise  # no token to report against: the cycle ends with the reason
            # a task that cannot be acted on would be offered again and again: fail it
            raise Fail(DOWNLOAD_FAILED, e, {"kind": name, "token": e.token})
        if t and failed and [t["token"], t["md5"]] == failed[:2]:
            raise Fail(failed[2], "this package failed before", t)
        current = running if kind == FOTA else app
        if t and not downgrade and current is not None and not newer(t["target"], current):
            same = numbers(t["target"]) is not None and numbers(t["target"]) == numbers(current)
            # the platform takes a 2xx only from a task that is downloading: the token check
            # (endpoint 3) moves it there, and nothing is downloaded
            platform.start(t, False)
            raise Fail(WRONG_BUILD, "target %s %s %s %s (allow_downgrade is false)" % (
                t["target"], "re-installs the" if same else "is not newer than the",
                "running firmware" if kind == FOTA else "installed application", current), t)
        if entry and entry["kind"] == name and not (t and entry["token"] == t["token"] and entry["md5"] == t["md5"]
                                                    and entry["size"] == t["size"]):
            entry = None  # the journal's task is gone
        if t:
            return FETCH, t, entry if entry and entry["kind"] == name else None
    return IDLE, None, None

