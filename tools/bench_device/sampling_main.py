# main.py for the bench: main.py's cycle with a progress callback that samples the heap
import gc
import sys


def _sample(percent):
    raw = gc.mem_alloc()
    gc.collect()
    print("bench heap", percent, raw, gc.mem_alloc(), gc.mem_free())


try:
    import onenet_ota

    print("ota: result", onenet_ota.run(progress=_sample))
except Exception as e:
    sys.print_exception(e)  # type: ignore[attr-defined]
