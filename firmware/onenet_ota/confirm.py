# After the reboot into a new image: keep it and report 201 if it is the target, else report
# 204 (the bootloader rolled back). Nothing is marked valid before the platform answered, so
# an image that cannot reach the platform is rolled back at the next reset.
from onenet_ota import journal, fota
from onenet_ota.api import TaskError
from onenet_ota.updater import FOTA, log


def confirm(up, entry):
    log("confirming", entry["target"], "- running", up.running)
    try:
        up.api.tasking(FOTA, up.cfg.cdn)  # proves the new image reaches the platform
    except TaskError:
        pass  # so does an answer with task data that is no use: it is not needed here
    if up.running != entry["target"]:
        if entry["phase"] == journal.VERIFIED:
            # the power went between the 101 report and the boot switch: finish the switch
            return up.switch(fota.Slot(), entry)
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
    task = up.api.tasking(FOTA, up.cfg.cdn)
    if task is None or task.target != up.running:
        return False
    _keep(up, task.token)
    return True


def _keep(up, token):
    fota.confirm()
    up.report_final(token, 201)
    up.report_version()
    log("confirmed", up.running)
