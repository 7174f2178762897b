# Fake `machine` for the unix port (a file on the path overrides the built-in one).
#
# A reset cannot unwind a real chip, so the fake ends the process at once with an exit
# code per kind of reset, after recording the cause of the coming boot in the device dir
# ("reset_next"); the host (sim/device.py) hands it back through "bootinfo".
#   reset()       exit 99 (RESET_EXIT),      next reset_cause() HARD_RESET
#   deepsleep()   exit 98 (DEEPSLEEP_EXIT),  next reset_cause() DEEPSLEEP_RESET
#   soft_reset()  exit 97 (SOFT_RESET_EXIT), next reset_cause() SOFT_RESET (no bootloader run)
#   WDT starved   exit 96 (WDT_EXIT),        next reset_cause() WDT_RESET (noticed at feed())
import os
import time
from micropython import const

PWRON_RESET = const(1)
HARD_RESET = const(2)
WDT_RESET = const(3)
DEEPSLEEP_RESET = const(4)
SOFT_RESET = const(5)
RESET_EXIT = const(99)
DEEPSLEEP_EXIT = const(98)
SOFT_RESET_EXIT = const(97)
WDT_EXIT = const(96)

_dir = os.getenv("FAKE_ESP32_DIR")
_freq = 160000000


def _end(cause, code):
    if _dir:
        with open(_dir + "/reset_next", "w") as f:
            f.write(str(cause))
    raise SystemExit(code)


def reset():
    _end(HARD_RESET, RESET_EXIT)


def soft_reset():
    _end(SOFT_RESET, SOFT_RESET_EXIT)


def deepsleep(time_ms=None):
    _end(DEEPSLEEP_RESET, DEEPSLEEP_EXIT)


def lightsleep(time_ms=None):
    if time_ms:
        time.sleep_ms(time_ms)


def idle():
    pass


def reset_cause():
    try:
        with open(_dir + "/bootinfo") as f:
            return int(f.read().split()[2])
    except (OSError, TypeError, IndexError):
        return PWRON_RESET


def unique_id():
    # base MAC: $FAKE_ESP32_UID (hex), else the device's "uid" file, else a fixed one
    uid = os.getenv("FAKE_ESP32_UID")
    if uid:
        return bytes.fromhex(uid)
    try:
        with open(_dir + "/uid", "rb") as f:
            return f.read()
    except (OSError, TypeError):
        return b"\x24\x0a\xc4\x00\x00\x01"


def freq(hz=None):
    global _freq
    if hz is None:
        return _freq
    if hz // 1000000 not in (20, 40, 80, 160, 240):
        raise ValueError("frequency must be 20MHz, 40MHz, 80Mhz, 160MHz or 240MHz")
    _freq = hz


class WDT:
    # Cannot interrupt a stuck process; a starved watchdog is noticed at the next feed().
    def __init__(self, id=0, timeout=5000):
        if id != 0:
            raise ValueError
        if timeout <= 0:
            raise ValueError("WDT timeout too short")
        self._timeout = timeout
        self._fed = time.ticks_ms()

    def feed(self):
        now = time.ticks_ms()
        if time.ticks_diff(now, self._fed) > self._timeout:
            _end(WDT_RESET, WDT_EXIT)
        self._fed = now
