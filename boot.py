# boot.py runs before anything else on every boot and must never stop it (an exception here
# keeps MicroPython from running main.py). Its one job: finish or undo an application swap
# that a power cut or a reset interrupted, so main.py starts a complete application.
try:
    from onenet_ota.sota_boot import recover

    recover()  # never raises; one failed open when no swap is under way
except Exception as e:  # the OTA client missing or broken must not stop the boot
    print("boot:", repr(e))
import sys

for name in [name for name in sys.modules if name.startswith("onenet_ota")]:
    del sys.modules[name]
