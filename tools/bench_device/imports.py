# bench: the heap cost of importing the package, its HTTP client and what a download loads
# (the cycle, the platform object and the download phase, with everything they import), the
# fake esp32 and machine imported first (built in on a board).
import gc
import sys


def live():
    gc.collect()
    return gc.mem_alloc()


a = live()
import esp32  # noqa: E402,F401
import machine  # noqa: E402,F401
b = live()
import onenet_ota  # noqa: E402,F401
c = live()
import onenet_ota.http  # noqa: E402,F401
d = live()
# the download path leaves first, so that each step is what that module itself costs
for name in ("codes", "journal", "fota", "auth", "south", "cycle", "download"):
    before = live()
    __import__("onenet_ota." + name)
    print("bench module", name, live() - before)
e = live()
print("bench import", b - a, c - b, d - c, e - c)
print("bench modules", ",".join(sorted(m[len("onenet_ota."):] for m in sys.modules if m.startswith("onenet_ota."))))
