# The cold half of the fake machine module (machine.py): its functions and WDT, looked up
# by name from machine.__getattr__. The names are compared as strings split at run time
# from t: a name written in the code would be a qstr in the heap even when unused.
import os
import time
import machine

_RESET_EXIT = const(99)
_DEEPSLEEP_EXIT = const(98)
_SOFT_RESET_EXIT = const(97)
_WDT_EXIT = const(96)

t = ("reset\nsoft_reset\ndeepsleep\nlightsleep\nidle\nreset_cause\nunique_id\nfreq\nWDT\n"
     "FAKE_ESP32_DIR\n%s/reset_next\n%s/bootinfo\n%s/uid\nFAKE_ESP32_UID\nw\nrb\n"
     "frequency must be 20MHz, 40MHz, 80Mhz, 160MHz or 240MHz\nWDT timeout too short").split("\n")
_DIR = const(9)
_NEXT = const(10)
_BOOTINFO = const(11)
_UID = const(12)
_UID_ENV = const(13)
_W = const(14)
_RB = const(15)
_FREQ_ERR = const(16)
_WDT_ERR = const(17)


def path(n):
    # the path of a device file (TypeError without a device dir)
    return t[n] % os.getenv(t[_DIR])


def stop(n, code):
    # the reset: record the cause n of the coming boot, end the process with code
    if os.getenv(t[_DIR]):
        with open(path(_NEXT), t[_W]) as f:
            f.write(str(n))
    raise SystemExit(code)


def write():
    # reset()
    stop(machine.HARD_RESET, _RESET_EXIT)


def soft_reset():
    stop(machine.SOFT_RESET, _SOFT_RESET_EXIT)


def read(value=None):
    # deepsleep(time_ms=None)
    stop(machine.DEEPSLEEP_RESET, _DEEPSLEEP_EXIT)


def sleep(value=None):
    # lightsleep(time_ms=None)
    if value:
        time.sleep_ms(value)


def idle():
    pass


def state():
    # reset_cause()
    try:
        with open(path(_BOOTINFO)) as f:
            return int(f.read().split()[2])
    except (OSError, TypeError, IndexError):
        return machine.PWRON_RESET


def id():
    # unique_id(): base MAC: $FAKE_ESP32_UID (hex), else the device's "uid" file, else a
    # fixed one
    uid = os.getenv(t[_UID_ENV])
    if uid:
        return bytes.fromhex(uid)
    try:
        with open(path(_UID), t[_RB]) as f:
            return f.read()
    except (OSError, TypeError):
        return b"\x24\x0a\xc4\x00\x00\x01"


def flags(value=None):
    # freq(hz=None)
    if value is None:
        return machine.f
    if value // 1000000 not in (20, 40, 80, 160, 240):
        raise ValueError(t[_FREQ_ERR])
    machine.f = value


class WDT:
    # Cannot interrupt a stuck process; a starved watchdog is noticed at the next feed().
    def __init__(self, id=0, timeout=5000):
        if id != 0:
            raise ValueError
        if timeout <= 0:
            raise ValueError(t[_WDT_ERR])
        self.timeout = timeout
        self.time = time.ticks_ms()

    def feed(self):
        now = time.ticks_ms()
        if time.ticks_diff(now, self.time) > self.timeout:
            stop(machine.WDT_RESET, _WDT_EXIT)
        self.time = now


def r(name):
    # machine.<name>
    if name not in t[:9]:
        raise AttributeError(name)
    return (write, soft_reset, read, sleep, idle, state, id, flags, WDT)[t.index(name)]
