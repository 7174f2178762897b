# Fake `machine` for the unix port (a file on the path overrides the built-in one).
#
# A reset cannot unwind a real chip, so the fake ends the process at once with an exit
# code per kind of reset, after recording the cause of the coming boot in the device dir
# ("reset_next"); the host (tools/device.py) hands it back through "bootinfo".
#   reset()       exit 99 (RESET_EXIT),      next reset_cause() HARD_RESET
#   deepsleep()   exit 98 (DEEPSLEEP_EXIT),  next reset_cause() DEEPSLEEP_RESET
#   soft_reset()  exit 97 (SOFT_RESET_EXIT), next reset_cause() SOFT_RESET (no bootloader run)
#   WDT starved   exit 96 (WDT_EXIT),        next reset_cause() WDT_RESET (noticed at feed())
#
# On a board `machine` is C and costs no heap; here the firmware under test is charged for
# this module, so it holds only the constants and the frequency: every function and WDT
# come from _machine through the module's __getattr__, imported on demand and dropped
# (a WDT keeps it alive while the WDT lives).
PWRON_RESET = const(1)
HARD_RESET = const(2)
WDT_RESET = const(3)
DEEPSLEEP_RESET = const(4)
SOFT_RESET = const(5)
f = 160000000  # freq()


def __getattr__(name):
    import sys
    try:
        import _machine
        return _machine.r(name)
    finally:
        sys.modules.pop("_machine", None)
