# Fake `esp32` module for the unix port: the Partition API of ports/esp32/esp32_partition.c
# over the flash image $FAKE_ESP32_DIR/flash.bin, with ESP-IDF's otadata semantics.
#
# On a board `esp32` is C and costs no heap; here the firmware under test is charged for
# this module, so it holds only the hot paths (readblocks, writeblocks, the erase of
# ioctl(6) and the power-cut countdowns): no slicing and no allocation in them, one
# 256-byte scratch buffer, the flash stays in the file. Everything else (opening the
# device, the partition table, Partition(), find(), info(), repr, set_boot, otadata,
# image checks, error names, the cut points) is in _esp32_ota, imported on demand and
# dropped after each call. Every global, attribute and argument name here is one the
# interpreter already has (a built-in qstr: "e", "write", "start", ...): any other name,
# even "_x", would be a qstr in the heap.
# NOR rules: a write can only clear bits (a write that would set one is logged to
# corruption.log as "address old new", and the tests fail on it); an erase sets a 4 KiB
# sector to 0xFF and is counted in erase_counts.bin (one little-endian u16 per sector).
#
# Power cuts at a chosen point, from $FAKE_ESP32_CUT (read once, at import). The power dies
# by SIGUSR1 (tools.device.CUT_EXIT): no finally clause, no flush, nothing after it runs.
#   writes=N[:K]  inside the Nth flash program of this run (every write: writeblocks, the
#                 otadata entries), after its first K bytes (default 0) reached the flash
#   erases=N[:K]  inside the Nth sector erase of this run, after the first K bytes of the
#                 sector (default 0) read 0xFF again; the erase is counted
#   set_boot=before|erased|after, mark_valid=before|erased|after  inside
#                 Partition.set_boot() / mark_app_valid_cancel_rollback(): before the otadata
#                 sector is erased, between that erase and the write of the new entry, or at
#                 the end of the call ("set_boot", "mark_valid" alone mean before)
#
# Module state, set by _esp32_ota at import: f flash.bin, e erase_counts.bin (files),
# buffer the scratch buffer, w and v the countdowns of writes and erases (the operation
# that takes one to 0 is cut; -1 - w is the number of programs so far, tests read it), t the bytes of the cut operation that reach the flash.
# Functions: send (a call into the cold half), put (NOR program), write, clear (erase),
# stop (bounds check). A Partition has: index (in the partition table), start (address),
# end (size), step (block size), buffer (a sector cache for blocks smaller than a sector,
# else None).
_S = const(4096)  # sector
_C = const(256)  # scratch buffer


def send(*args):
    # run a function of the cold half (by number), then drop it so that it costs no heap
    import sys
    try:
        import _esp32_ota
        return _esp32_ota.r(*args)
    finally:
        sys.modules.pop("_esp32_ota", None)


@micropython.viper
def put(s: ptr8, data: ptr8, start: int, n: int) -> int:
    # NOR program of n bytes: s[i] &= data[start + i]. Returns the first byte that needed
    # a 0 -> 1 bit as (i << 16 | old << 8 | new), or -1.
    bad = -1
    i = 0
    while i < n:
        old = s[i]
        new = data[start + i]
        if bad < 0 and (new & (old ^ 0xFF)):
            bad = (i << 16) | (old << 8) | new
        s[i] = old & new
        i += 1
    return bad


def write(pos, data, start, n):
    # program n bytes of data[start:] at flash address pos
    global w
    w -= 1
    cut = w == 0
    if cut and t < n:
        n = t  # a program cut short: only the first bytes changed
    while n > 0:
        k = n if n < _C else _C
        f.seek(pos)
        f.readinto(buffer, k)
        bad = put(buffer, data, start, k)
        if bad >= 0:  # log the NOR violation
            send(3, pos + (bad >> 16), (bad >> 8) & 0xFF, bad & 0xFF)
        f.seek(pos)
        f.write(buffer, k)
        pos += k
        start += k
        n -= k
    if cut:
        send(4)  # the power dies


def stop(end, start, n):
    # the bounds checks of esp_partition_read/write/erase_range (end: the partition size)
    if start > end:
        send(2, 0x102)  # raises OSError(-ESP_ERR_INVALID_ARG, "ESP_ERR_INVALID_ARG")
    if n > end - start:
        send(2, 0x104)  # ESP_ERR_INVALID_SIZE


def clear(pos, end, start, n):
    # esp_partition_erase_range() of n bytes at start in the partition at pos, of size end
    global v
    stop(end, start, n)
    if n % _S:
        send(2, 0x104)
    if start % _S:
        send(2, 0x102)
    pos += start
    while n:
        v -= 1
        left = t if v == 0 and t < _S else _S
        for i in range(_C):
            buffer[i] = 0xFF
        f.seek(pos)
        while left > 0:
            f.write(buffer, left if left < _C else _C)
            left -= _C
        e.seek(pos >> 11)
        e.readinto(buffer, 2)
        i = (buffer[0] | buffer[1] << 8) + 1
        buffer[0] = i & 0xFF
        buffer[1] = i >> 8
        e.seek(pos >> 11)
        e.write(buffer, 2)
        if v == 0:
            send(4)
        pos += _S
        n -= _S


class Partition:
    BOOT = 0
    RUNNING = 1
    TYPE_APP = 0
    TYPE_DATA = 1

    def __init__(self, *args, **key):  # (id, block_size=4096): keywords as in _esp32_ota
        send(5, self, args, key)

    def __repr__(self):
        return send(6, self)

    @staticmethod
    def find(*args, **key):  # (type=TYPE_APP, subtype=0xff, label=None, block_size=4096)
        return send(7, args, key)

    def __getattr__(self, name):
        # info(), set_boot(), get_next_update(), from the cold half. Their names are not
        # written here, nor anywhere in the fakes: they are qstrs only when a caller uses them.
        return send(8, self, name)

    def readblocks(self, n, buf, pos=0):
        pos += n * self.step
        stop(self.end, pos, len(buf))
        f.seek(self.start + pos)
        f.readinto(buf)

    def writeblocks(self, n, buf, pos=None):
        at = n * self.step
        n = len(buf)
        if pos is not None:
            at += pos
        elif self.buffer is None:
            clear(self.start, self.end, at, n)
        else:
            send(9, self, at, n)  # erase, keeping the rest of the sector
        stop(self.end, at, n)
        write(self.start + at, buf, 0, n)

    def ioctl(self, n, arg):
        if 0 < n < 4:
            return 0
        if n == 4:
            return self.end // self.step
        if n == 5:
            return self.step
        if n == 6:
            if self.step != _S:
                return -22  # -EINVAL
            clear(self.start, self.end, arg * _S, _S)
            return 0

    @staticmethod
    def mark_app_valid_cancel_rollback():
        send(12)


send(0)  # open the device, arm the power cut
