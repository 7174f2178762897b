# The ESP image checksum is an XOR over every byte of segment data, ~1.5 MB for a full image:
# native code makes that a few milliseconds instead of seconds. image.py falls back to a plain
# loop where the port has no native emitter.
import micropython


@micropython.viper
def xor_range(buf: ptr8, start: int, end: int, acc: int) -> int:
    i = start
    while i < end:
        acc ^= buf[i]
        i += 1
    return acc
