# main.py: one OTA cycle, then the application. An OTA failure is printed and the
# application still starts: a device that cannot update must keep doing its job. A pending
# new firmware is confirmed inside the cycle once it has reached the platform; if it never
# gets there, the next reset rolls it back. Products pass battery(), signal() and
# progress(percent) callbacks to run() (see README).
import sys

try:
    import onenet_ota

    print("ota: result", onenet_ota.run())
except Exception as e:  # whatever happened, the application must start
    sys.print_exception(e)  # type: ignore[attr-defined]
for name in [name for name in sys.modules if name.startswith("onenet_ota")]:
    del sys.modules[name]  # the OTA code gives its heap back to the application

# The application starts here.
