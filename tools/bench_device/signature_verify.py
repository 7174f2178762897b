# bench: onenet_ota.signature.verify of the signed package in the slot (ota_1), as the cycle
# runs it (the sector buffer allocated first). argv: size, the trusted key digest, and "skip"
# to stop after the import (the heap floor without the check, to subtract). Prints the time
# of the whole check, of its RSA alone (pow on the block's ints), and the import's heap.
import gc
import sys
import time

from onenet_ota import fota

size = int(sys.argv[1])
buf = bytearray(4096)
part = fota.Slot().partition
gc.collect()
before = gc.mem_alloc()
from onenet_ota import signature  # noqa: E402

gc.collect()
loaded = gc.mem_alloc()
if sys.argv[3] == "skip":
    print("bench signature ok")
else:
    t = time.ticks_us()
    block = signature.verify(part, size, [sys.argv[2]], buf)
    took = time.ticks_diff(time.ticks_us(), t)
    part.readblocks(size // 4096 - 1, buf)
    n = int.from_bytes(memoryview(buf)[36:420], "little")
    s = int.from_bytes(memoryview(buf)[812:1196], "little")
    t = time.ticks_us()
    pow(s, 65537, n)
    rsa = time.ticks_diff(time.ticks_us(), t)
    print("bench signature ok", block, took, rsa, loaded - before)
