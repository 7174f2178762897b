# The confirm phase, after the reboot into a new image or the swap to a new application:
# keep it (201) if it is the target and runs, else say it was rolled back (204, or 206 for
# an application that failed to start). Firmware is kept (marked valid, by the cycle) only
# after the platform answered, so an image that cannot reach the platform is rolled back at
# the next reset.
import time

from onenet_ota import journal, fota
from onenet_ota.codes import log, Fail, IDLE, SWITCH, DONE, UPGRADED, WRONG_BUILD, UPGRADE_FAILED

_FOTA = 1  # the `type` of a firmware task
_TRIES = 5  # asks of the platform before a pending image is left to roll back (1+2+4+8 s apart)


def firmware(platform, entry, running):
    """(DONE, entry, 201) when the running image is the target and reaches the platform
    (the cycle keeps it); (SWITCH, boot, entry) when the power went between the 101 report
    and the boot switch. A rollback raises Fail 204."""
    log("confirming", entry["target"], "- running", running)
    _reach(platform)
    if running != entry["target"]:
        if entry["phase"] == journal.VERIFIED:
            return SWITCH, fota.Slot().switch, entry
        raise Fail(WRONG_BUILD, "running %s, not %s - rolled back" % (running, entry["target"]))
    return DONE, entry, UPGRADED


def _reach(platform):
    """Prove the new image reaches the platform: the task in progress is asked until an
    answer comes, _TRIES times (a garbled reply or a 5xx pair must not throw away a good
    upgrade; the image stays pending meanwhile). What the answer holds is not needed."""
    for n in range(_TRIES):
        try:
            platform.in_progress(_FOTA)
            return
        except Exception as e:  # the last try's error ends the cycle; the image stays pending
            if n == _TRIES - 1:
                raise
            log("confirmation: no answer (%s); again in %d s" % (e, 1 << n))
            time.sleep(1 << n)


def application(entry, app):
    """After the swap to a new application: it is kept once it started (sota_boot.start()
    confirms it when its import returns, or the application calls confirm()); (DONE, entry, 201)
    then, Fail 206 when it raised at start-up or a reset came first (sota_boot rolled it
    back), (IDLE, None, None) while it has not started yet; (SWITCH, swap, entry) when the power went
    between the 101 report and the swap. The outcome is cleaned up (sota.finish()) before
    it is returned: the journal still says what to report."""
    from onenet_ota import sota, sota_boot

    if entry["phase"] == journal.VERIFIED:
        return SWITCH, sota.swap, entry  # idempotent
    state = sota_boot.state()
    if state in (sota_boot.SWAP, sota_boot.PENDING, sota_boot.TRIAL, sota_boot.UNDO):
        log("application", entry["target"], "not started yet")
        return IDLE, None, None  # main.py starts it after this cycle, and runs a cycle again
    if state == sota_boot.OK or (state is None and app == entry["target"]):
        code = UPGRADED if sota_boot.version() == entry["target"] else WRONG_BUILD
    else:
        code = UPGRADE_FAILED
    log("application", entry["target"], "confirmed" if code == UPGRADED else "rolled back")
    sota.finish()
    return DONE, entry, code
