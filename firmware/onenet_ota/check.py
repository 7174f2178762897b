# The front half of a cycle: who the device is, what it runs, whether a task waits for it.
# Updater.cycle() drops this module before a download or a confirmation, so nothing here may
# outlive plan(): a task leaves as a plain dict (an object of a class from here would keep the
# whole module in the heap through its methods).
from micropython import const

from onenet_ota import journal, log
from onenet_ota.api import PlatformError

FOTA = const(1)  # the `type` of endpoints 2 and 7: firmware
SOTA = const(2)  # application files

_KINDS = {FOTA: "fota", SOTA: "sota"}
_INTERNAL = const(7)  # errno of the platform's own trouble: says nothing about the task


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


# task field -> (name in the dict, type, default (None: required), longest if plain text)
_FIELDS = (
    ("token", "token", str, None, 128),  # goes into URL paths and queries: plain text only
    ("target", "target", str, None, 20),
    ("size", "size", int, None, 0),
    ("md5", "md5", str, None, 0),
    ("signal", "signal", int, 0, 0),
    ("power", "power", int, 0, 0),
    ("retry", "retry", int, 0, 0),
    ("interval", "interval", int, 0, 0),
    ("ipPort", "ip_port", str, "", 0),
    ("type", "delta", int, 1, 0),
)


def task(d, kind):
    """The data of endpoints 2 and 7, validated, as a dict with the _FIELDS names (delta:
    True for a differential package) and kind ("fota" or "sota": which check offered it)."""
    if type(d) is not dict:
        raise TaskError("task data is not an object")
    t = {"kind": kind}
    for name, key, cls, default, most in _FIELDS:
        value = d.get(name, default)
        if type(value) is not cls or (most and not plain(value, most)):
            raise TaskError("task %s: %r" % (name, value), t.get("token"))
        t[key] = value
    md5 = t["md5"] = t["md5"].lower()
    for b in md5.encode():
        if not (47 < b < 58 or 96 < b < 103):
            raise TaskError("task md5 %r is not hex" % md5, t["token"])
    t["delta"] = t["delta"] == 2
    ip_port = t["ip_port"]
    if t["size"] <= 0 or len(md5) != 32 or t["retry"] < 0 or t["interval"] < 0 \
            or not (ip_port == "" or plain(ip_port.replace(":", ""), 255)):
        raise TaskError("task data out of range: size %d md5 %s retry %d interval %d ipPort %s" % (
            t["size"], md5, t["retry"], t["interval"], ip_port), t["token"])
    return t


def _task(api, kind, path, none_errnos):
    try:
        data = api.call("GET", path)
    except PlatformError as e:
        # none_errnos None: any errno but 7 (check); else only those listed (tasking)
        if e.errno != _INTERNAL if none_errnos is None else e.errno in none_errnos:
            return None
        raise
    return task(data, _KINDS[kind]) if data else None


def check(api, kind, version, manuf, model, cdn):
    """Endpoint 2: the open task of this kind, or None (any errno without data but 7: an
    internal error says nothing about the task, and "no task" would drop its journal)."""
    path = "/ota/south/check?dev_id=%s&manuf=%d&model=%d&type=%d&version=%s&cdn=%s" % (
        api.dev_id, manuf, model, kind, version, "true" if cdn else "false")
    return _task(api, kind, path, None)


def tasking(api, kind, cdn):
    """Endpoint 7: the task being downloaded or upgraded (after the token was lost)."""
    return _task(api, kind, "/ota/south/tasking?dev_id=%s&type=%d&cdn=%s" % (
        api.dev_id, kind, "true" if cdn else "false"), (4, 12))


def device_id(api, product_id, unique_id):
    """Endpoint 9: the dev_id of the device with this unique id."""
    data = api.call("GET", "/ota/devInfo?pid=%s&authInfo=%s" % (product_id, unique_id))
    dev_id = data.get("dev_id") if type(data) is dict else None
    if type(dev_id) is int:
        dev_id = str(dev_id)
    if type(dev_id) is not str or not dev_id.isdigit():
        raise TaskError("devInfo gave no dev_id")
    return dev_id


def plan(up):
    """What this cycle does: the result of failing a task that cannot be trusted or of
    finding none; (task, journal entry or None) to download; (None, entry) to confirm the
    upgrade the journal records (confirm.py, after this module left the heap)."""
    api, cfg = up.api, up.cfg
    if not api.dev_id:
        dev_id = up.state.get("dev_id")
        if not dev_id:
            dev_id = device_id(api, cfg.product_id, cfg.unique_id)
            up.remember("dev_id", dev_id)
        api.dev_id = dev_id
    entry = journal.load()
    if entry and entry["phase"] != journal.DOWNLOAD:
        return None, entry
    reported = up.state.get("reported")
    if reported != up.versions():
        # not the first boot and the firmware changed: was it an upgrade?
        if reported and reported.split("/")[0] != up.running:
            from onenet_ota.confirm import lost_token

            if lost_token(up):
                return 201
        up.report_version()
    # firmware first: an application is built for the firmware it runs on
    for kind, version in ((FOTA, up.running), (SOTA, up.app or "0")):
        try:
            t = check(api, kind, version, cfg.manuf, cfg.model, cfg.cdn)
        except TaskError as e:
            if not e.token:
                raise  # no token to report against: the cycle ends with the reason
            # a task that cannot be acted on would be offered again and again: fail it
            log("failed", 107, e)
            journal.discard()
            up.report_final(e.token, 107)
            return 107
        if entry and entry["kind"] == _KINDS[kind] and not (t and entry["token"] == t["token"]
                                                             and entry["md5"] == t["md5"]
                                                             and entry["size"] == t["size"]):
            journal.discard()  # the journal's task is gone
            entry = None
        if t:
            return t, entry if entry and entry["kind"] == t["kind"] else None
    return None
