# What must survive a power cut: the task being worked on and how far it got.
#
# One small JSON file, replaced atomically: the new state is written to a side file, then
# renamed over the journal (LittleFS and POSIX rename replace the target in one step). A cut
# before the rename leaves the previous journal whole; the side file is ignored. Anything that
# does not parse as a journal of this format (corrupt, truncated, written by something else)
# is removed and the cycle starts over from the platform's view.
import json
import os
from micropython import const

PATH = "ota_journal.json"
_FORMAT = 1
_SECTOR = const(4096)  # fota.SECTOR: the flash erases and the download writes whole sectors

# Phases, in order. DOWNLOAD: bytes are going into the slot. VERIFIED: the package passed every
# check and 101 went out; the switch may or may not have happened. SWITCHED: the new image or
# application is set to run; only a confirmation after the reboot is left. REPORT: the task
# ended with "code", which the platform has not taken yet: the next cycle sends it first.
DOWNLOAD = "download"
VERIFIED = "verified"
SWITCHED = "switched"
REPORT = "report"

# field -> type every journal must carry
_FIELDS = (
    ("kind", str),  # "fota" | "sota"
    ("phase", str),
    ("token", str),
    ("target", str),
    ("md5", str),
    ("size", int),
    ("written", int),  # package bytes durably in the slot: whole chunks, or all of it
    ("delta", bool),
)


def load(path=PATH):
    """The journal as a dict, or None when there is none or it cannot be trusted."""
    state = read_json(path)
    if _valid(state):
        return state
    discard(path)  # missing, corrupt, truncated or foreign: the cycle starts over
    return None


def _valid(state):
    if not isinstance(state, dict) or state.get("format") != _FORMAT:
        return False
    if state.get("phase") == REPORT:  # made from what a task had: no more is sure
        return type(state.get("token")) is str and type(state.get("code")) is int
    for name, kind in _FIELDS:
        value = state.get(name)
        # bool is an int subclass in CPython; keep the two apart either way
        if type(value) is not kind:
            return False
    return (
        state["phase"] in (DOWNLOAD, VERIFIED, SWITCHED)
        and state["kind"] in ("fota", "sota")
        and 0 <= state["written"] <= state["size"]
        # a resume starts at a sector boundary: the slot is written whole sectors at a time
        and (state["written"] % _SECTOR == 0 or state["written"] == state["size"])
    )


def save(state, path=PATH):
    state["format"] = _FORMAT
    write_json(path, state)


def write_json(path, value):
    """Replace the file at path with value, atomically."""
    side = path + ".new"
    with open(side, "w") as f:
        json.dump(value, f)
    os.rename(side, path)


def read_json(path):
    """The value in the file at path, or None if it is missing or not JSON."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def discard(path=PATH):
    for name in (path, path + ".new"):
        try:
            os.remove(name)
        except OSError:
            pass
