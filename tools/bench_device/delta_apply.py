# bench: the device's delta decoder (delta.Patch) making the new image from the running one
# while a patch is read (from a file, hashed as it passes, as download.Stream hashes the
# package; or from memory), each sector through fota.Slot.write.
# argv: a JSON file {"runs": [[name, patch path, from memory], ...]} (an argv string over
# 255 bytes kills the unix port)
import sys
import json
import time
import hashlib
import binascii
import gc

from onenet_ota import fota, delta

with open(sys.argv[1]) as f:
    cfg = json.load(f)
buf = bytearray(4096)
slot = fota.Slot()
base = fota.running_partition()
base_size = base.info()[3]
print("native", int(sys.modules.get("onenet_ota._deltav") is not None))


def from_memory(path, md5):
    """read_into over the whole patch read into RAM first: it copies from there."""
    with open(path, "rb") as f:
        data = f.read()
    src = memoryview(data)
    pos = [0]

    def read_into(b, n):
        k = min(n, len(src) - pos[0])
        if k:
            b[:k] = src[pos[0]:pos[0] + k]
            pos[0] += k
            md5.update(b if k == len(b) else memoryview(b)[:k])
        return k
    return read_into, None


def from_file(path, md5):
    """read_into over a stream, hashed as it passes."""
    f = open(path, "rb")

    def read_into(b, n):
        k = f.readinto(b, n)
        if k:
            md5.update(b if k == len(b) else memoryview(b)[:k])
        return k
    return read_into, f


def apply(path, memory):
    md5 = hashlib.md5()
    read_into, f = (from_memory if memory else from_file)(path, md5)
    gc.collect()
    t = time.ticks_us()
    p = delta.Patch(read_into, base, base_size, slot.size)
    sector = 0
    while p.fill(buf):
        slot.write(sector, buf)
        sector += 1
    us = time.ticks_diff(time.ticks_us(), t)
    if f:
        f.close()
    # outside the timing: what the slot now holds
    image = hashlib.md5()
    for at in range(0, p.size, 4096):
        slot.read(at // 4096, buf)
        image.update(buf if p.size - at >= 4096 else memoryview(buf)[:p.size - at])
    return us, p.size, binascii.hexlify(image.digest()).decode(), binascii.hexlify(md5.digest()).decode()


for name, path, memory in cfg["runs"]:
    us, size, image, md5 = apply(path, memory)
    print("bench", name, int(memory), us, size, image, md5)
