# The application slot at boot and at run time: finish or undo an interrupted swap
# (recover(), from boot.py), start the application (start(), from main.py) and let it prove
# itself (confirm()). Small on purpose: boot.py imports it on every boot and the application
# imports it for confirm(). Bundles, unpacking, the swap itself and the clean-up are in
# onenet_ota.sota, imported only when there is an application task.
#
# The filesystem (paths relative to the current directory, which is "/" on a board):
#   app/          the application: manifest.json + its files; first on sys.path while it runs
#   app.new/      a verified new application, complete: it appears by one rename
#   app.old/      the previous application, kept until the new one is confirmed
#   app.bad/      a new application that failed, kept until the outcome is reported
#   sota.json     the swap marker {"s": state, "v": new version, "p": previous version,
#                 "o": whether there was a previous application}, replaced atomically
#
# A swap is two renames between marker writes, each step atomic on LittleFS, so after a cut
# at any instant the marker says which of the two applications is complete:
#   swap     app -> app.old, app.new -> app under way: recover() finishes them -> pending
#   pending  the new app is in place, not started yet (no reset undoes this)
#   trial    it was started and has not confirmed: a reset now means rollback (recover())
#   ok       it confirmed: the flow reports 201, then sota.finish() drops app.old
#   undo     app -> app.bad, app.old -> app under way: recover() finishes them -> failed
#   failed   the previous app is back: the flow reports 206 (204), then sota.finish()
# No marker: app/ is whatever is installed, confirmed long ago.
import json
import os
import sys

APP = "app"  # the application's directory; "/app" on a board when cwd is "/"
MARK = "sota.json"

SWAP = "swap"
PENDING = "pending"
TRIAL = "trial"
OK = "ok"
UNDO = "undo"
FAILED = "failed"


def marker():
    """The swap marker as a dict, or None."""
    m = read_json(MARK)
    return m if isinstance(m, dict) and isinstance(m.get("s"), str) else None


def state():
    """One of SWAP, PENDING, TRIAL, OK, UNDO, FAILED, or None when no swap is in progress."""
    m = marker()
    return m and m["s"]


def version(path=None):
    """The version in an application's manifest (default: the installed one), or None."""
    m = read_json((path or APP) + "/manifest.json")
    return m.get("version") if isinstance(m, dict) else None


def recover():
    """boot.py, before anything else: finish an interrupted swap, finish an interrupted
    rollback, roll back a new application that was started and did not confirm before this
    reset. Returns the state afterwards. Never raises: a boot must go on."""
    try:
        m = marker()
        if m is None:
            if not exists(APP) and exists(APP + ".old"):
                os.rename(APP + ".old", APP)  # no marker, yet the app was moved away: put it back
            return None
        s = m["s"]
        if s == SWAP:
            forward(m)
        elif s == TRIAL or s == UNDO:
            print("sota: %s unconfirmed at reset: rollback" % m.get("v"))
            undo(m)
        return m["s"]
    except Exception as e:  # noqa: BLE001  (a boot never fails here)
        print("sota: recover:", repr(e))
        return None


def start():
    """Start the application: import its entry module (manifest "entry", default "main") with
    app/ first on sys.path. The first start after a swap is a trial: the new application is
    confirmed when the import returns (or earlier, when it calls confirm()); if the import
    raises, the previous application is put back and started instead. Returns the entry
    module, or None when no application is installed. An application that has to run forever
    inside its import calls confirm() once it works; otherwise the next reset rolls it back."""
    m = marker()
    if m and m["s"] == PENDING:
        _mark(m, TRIAL)
    else:
        m = None
    loaded = set(sys.modules)
    try:
        mod = _import()
    except Exception as e:
        if m is None or state() == OK:
            raise
        sys.print_exception(e)  # type: ignore[attr-defined]
        print("sota: %s failed to start: rollback" % m.get("v"))
        for name in [n for n in sys.modules if n not in loaded]:
            del sys.modules[name]
        undo(m)
        return _import()
    if m is not None:
        confirm()
    return mod


def confirm():
    """The application works: keep it. Cheap when nothing is pending (one failed open)."""
    m = marker()
    if m and m["s"] in (PENDING, TRIAL):
        _mark(m, OK)
        print("sota: confirmed", m.get("v"))


def _import():
    man = read_json(APP + "/manifest.json")
    if not isinstance(man, dict):
        return None
    entry = man.get("entry") or "main"
    man = None
    if sys.path[0] != APP:
        sys.path.insert(0, APP)
    return __import__(entry)


def read_json(path):
    # as onenet_ota.journal, for the same reason as write_json below
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def write_json(path, value):
    # as onenet_ota.journal (not imported: boot.py and the application pay for this module)
    side = path + ".new"
    with open(side, "w") as f:
        json.dump(value, f)
    os.rename(side, path)


def exists(path):
    """Whether a file or directory is at path."""
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def _mark(m, s):
    m["s"] = s
    write_json(MARK, m)


def forward(m):
    """Carry out the swap marker m says is under way (state swap): app -> app.old (if there
    is an app), app.new -> app, then pending. Each step is safe to repeat after a cut."""
    new = APP + ".new"
    if exists(new):
        if exists(APP):
            os.rename(APP, APP + ".old")
        os.rename(new, APP)
    _mark(m, PENDING)


def undo(m):
    """Roll back the new application of marker m: app -> app.bad, app.old -> app (if there
    was one), then failed. Each step is safe to repeat after a cut."""
    if m["s"] != UNDO:
        _mark(m, UNDO)
    old = APP + ".old"
    if not m.get("o"):  # a first install: nothing to go back to
        if exists(APP):
            os.rename(APP, APP + ".bad")
    elif exists(old):
        if exists(APP):
            os.rename(APP, APP + ".bad")
        os.rename(old, APP)
    _mark(m, FAILED)
