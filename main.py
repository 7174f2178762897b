# main.py: one OTA cycle, then the application in app/. An OTA failure is printed and the
# application still starts: a device that cannot update must keep doing its job. A pending
# new firmware is confirmed inside the cycle once it has reached the platform; if it never
# gets there, the next reset rolls it back. Products pass battery(), signal() and
# progress(percent) callbacks to onenet_ota.run() (see README).
import sys


def ota():
    try:
        import onenet_ota

        print("ota: result", onenet_ota.run())
    except Exception as e:  # whatever happened, the application must start
        sys.print_exception(e)  # type: ignore[attr-defined]
    for name in [name for name in sys.modules if name.startswith("onenet_ota")]:
        del sys.modules[name]  # the OTA code gives its heap back to the application


ota()
# The application: app/ (manifest.json names its entry module). A new one is on trial: if
# its start-up raises, the previous one comes back and starts instead; once its start-up
# returned (or it called sota_boot.confirm()) it is kept, and a cycle reports the outcome.
try:
    from onenet_ota import sota_boot

    sota_boot.start()
    if sota_boot.state() in (sota_boot.OK, sota_boot.FAILED):
        ota()
except Exception as e:
    sys.print_exception(e)  # type: ignore[attr-defined]
