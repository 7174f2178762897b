# The board's start-up as the esp32 port's main.c does it with pyexec: run boot.py, then
# main.py, from the current directory (the device's filesystem). An exception prints its
# traceback; after one in boot.py main.py is skipped, as on the chip. SystemExit (e.g.
# machine.reset()) ends the process with its code.
import sys

if "" not in sys.path:
    sys.path.insert(0, "")
sys.path.append("lib")  # the board's /lib comes after .frozen


_g = {"__name__": "__main__"}  # boot.py and main.py share the globals of __main__


def _run(name):
    try:
        open(name).close()
    except OSError:
        return True
    try:
        _g["__file__"] = name
        execfile(name, _g)
        return True
    except Exception as e:
        sys.print_exception(e)
        return False


if _run("boot.py"):
    _run("main.py")
