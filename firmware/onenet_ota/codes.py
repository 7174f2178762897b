# The floor of the package: the facts every part shares and nothing else. OneNET's report
# codes (docs/south-api.md, endpoint 6; the fuse API takes the same, docs/fuse-api.md, F6),
# the one failure type that carries one of them, and the console log. It imports nothing of
# the package, so any module may import it. Also what a phase hands back to the cycle.
from micropython import const
import sys

# Report codes: 1xx end a download, 2xx an upgrade (docs/south-api.md, endpoint 6)
DOWNLOADED = const(101)  # the package is in the slot and passed every check
NO_SPACE = const(102)
NO_MEMORY = const(103)
TIMED_OUT = const(104)
LOW_BATTERY = const(105)
POOR_SIGNAL = const(106)
DOWNLOAD_FAILED = const(107)
UPGRADED = const(201)
UPGRADE_LOW_BATTERY = const(202)
UPGRADE_NO_MEMORY = const(203)
WRONG_BUILD = const(204)  # another chip or version than the task's, or a rollback
BAD_MD5 = const(205)
UPGRADE_FAILED = const(206)  # not a sound image, patch or bundle; an unsigned package
RETRIES_EXHAUSTED = const(207)
# Not a report code: the platform ended the task itself (expired, cancelled, completed);
# nothing is reported.
ENDED = const(0)

# What a phase returns to the cycle: (action, a, b)
IDLE = const(0)  # nothing to do now: (IDLE, None, None)
FETCH = const(1)  # download and check a task: (FETCH, task, journal entry to resume or None)
SWITCH = const(2)  # boot a verified package next: (SWITCH, the function that does, its journal entry)
DONE = const(3)  # the task ended well or as expected: (DONE, task or journal entry, report code)


class Fail(Exception):
    """Ends the task with report code `code` (ENDED: the platform ended it), for the reason
    the message gives. The one failure type of the package: a phase raises it, only the
    cycle reports it. task: the task it ends, when the cycle does not know it yet (a task
    the check phase refuses)."""

    def __init__(self, code, why, task=None):
        super().__init__(why)
        self.code = code
        self.task = task


def log(*args):
    """What the client tells the console: one line, "ota: ..." (never a key)."""
    print("ota:", *args)


def drop(name):
    """Forget the submodule onenet_ota.`name`: once nothing else refers to its functions or
    classes, the next collection gives its code back to the heap."""
    sys.modules.pop("onenet_ota." + name, None)
    try:
        delattr(sys.modules["onenet_ota"], name)  # the attribute its import set on the package
    except (AttributeError, KeyError):
        pass
