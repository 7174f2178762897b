# main.py for the bench: main.py's cycle with the collector off and gc.mem_alloc() sampled at
# every sector write (fota.Slot.write wrapped), so that any allocation in the download loop
# shows between two samples. Prints "bench steps [bytes allocated between write i and i+1]".
import gc
import sys

from onenet_ota import fota

samples = [0] * 4096  # preallocated (16 MiB of sectors): appending would allocate
count = [0]
_write = fota.Slot.write


def write(self, sector, buf):
    if count[0] < len(samples):
        samples[count[0]] = gc.mem_alloc()
        count[0] += 1
    _write(self, sector, buf)


fota.Slot.write = write
gc.disable()  # every allocation shows in mem_alloc; none is hidden by a collection
try:
    import onenet_ota

    print("ota: result", onenet_ota.run())
except Exception as e:
    sys.print_exception(e)  # type: ignore[attr-defined]
finally:
    gc.enable()
    taken = samples[:count[0]]
    print("bench steps", [b - a for a, b in zip(taken, taken[1:])])
