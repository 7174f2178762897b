# After the reboot into a new image: keep it and report 201 if it is the target, else report
# 204 (the bootloader rolled back). Nothing is marked valid before the platform answered, so
# an image that cannot reach the platform is rolled back at the next reset.
from onenet_ota import journal, fota, log, drop


def confirm(up, entry):
    """check.py is still loaded (Updater.cycle keeps it for this): its tasking call comes
    first, then it is dropped."""
    if entry["kind"] == "sota":
        drop("check")
        return _application(up, entry)
    log("confirming", entry["target"], "- running", up.running)
    from onenet_ota import check

    try:
        check.tasking(up.api, check.FOTA, up.cfg.cdn)  # proves the new image reaches the platform
    except check.TaskError:
        pass  # so does an answer with task data that is no use: it is not needed here
    finally:
        del check
        drop("check")  # its code leaves the heap before the image is marked valid
    if up.running != entry["target"]:
        if entry["phase"] == journal.VERIFIED:
            # the power went between the 101 report and the boot switch: finish the switch
            return up.switch(fota.Slot().switch, entry)
        log("running", up.running, "not", entry["target"], "- rolled back")
        up.report_final(entry["token"], 204)
        journal.discard()
        return 204
    _keep(up, entry["token"])
    journal.discard()
    return 201


def lost_token(up):
    """The running version changed, yet no journal says why: the task in progress, found
    with endpoint 7, tells whether this is its target."""
    from onenet_ota.check import FOTA, tasking

    task = tasking(up.api, FOTA, up.cfg.cdn)
    if task is None or task["target"] != up.running:
        return False
    _keep(up, task["token"])
    return True


def _keep(up, token):
    fota.confirm()
    up.report_final(token, 201)
    up.report_version()
    log("confirmed", up.running)


def _application(up, entry):
    """After the swap to a new application: it is kept once it started (sota_boot.start()
    confirms it when its import returns, or the application calls confirm()); 201 then, and
    206 when it raised at start-up or a reset came first (sota_boot rolled it back)."""
    from onenet_ota import sota, sota_boot

    if entry["phase"] == journal.VERIFIED:
        # the power went between the 101 report and the swap: finish the swap (idempotent)
        return up.switch(sota.swap, entry)
    state = sota_boot.state()
    if state in (sota_boot.SWAP, sota_boot.PENDING, sota_boot.TRIAL, sota_boot.UNDO):
        log("application", entry["target"], "not started yet")
        return None  # main.py starts it after this cycle, and runs a cycle again
    if state == sota_boot.OK or (state is None and up.app == entry["target"]):
        code = 201 if sota_boot.version() == entry["target"] else 204
    else:
        code = 206
    log("application", entry["target"], "confirmed" if code == 201 else "rolled back")
    up.report_final(entry["token"], code)
    if code == 201:
        up.report_version()
    sota.finish()
    journal.discard()
    return code
