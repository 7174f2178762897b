# Fake `esp32` module for the unix port: the Partition API of ports/esp32/esp32_partition.c
# over a 4 MiB flash image in $FAKE_ESP32_DIR/flash.bin, with ESP-IDF's otadata semantics.
#
# The firmware under test imports it in a small heap, so this module holds only the hot
# paths: one 256-byte scratch buffer, no slicing and no allocation in readblocks and
# writeblocks, the flash stays in the file. The cold paths (otadata, image verification,
# sub-sector erases) live in _esp32_ota, imported on demand and dropped after each call.
# NOR rules: a write can only clear bits (a write that would set one is logged to
# corruption.log as "address old new", and the tests fail on it); an erase sets a 4 KiB
# sector to 0xFF and is counted in erase_counts.bin (one little-endian u16 per sector).
#
# Power cuts at a chosen point, from $FAKE_ESP32_CUT (read once, at import). The power dies
# by SIGUSR1 (sim.device.CUT_EXIT): no finally clause, no flush, nothing after it runs.
#   writes=N[:K]  inside the Nth flash program of this run (every _write: writeblocks, the
#                 otadata entries), after its first K bytes (default 0) reached the flash
#   erases=N[:K]  inside the Nth sector erase of this run, after the first K bytes of the
#                 sector (default 0) read 0xFF again; the erase is counted
#   set_boot=before|erased|after, mark_valid=before|erased|after  inside
#                 Partition.set_boot() / mark_app_valid_cancel_rollback(): before the otadata
#                 sector is erased, between that erase and the write of the new entry, or at
#                 the end of the call ("set_boot", "mark_valid" alone mean before)
# The hot path pays a countdown of small ints: no allocation; the rest is in _esp32_ota.
# Hardware Secure Boot V2, from $FAKE_ESP32_SECURE_BOOT (the hex digests of the keys burnt in
# eFuse, comma-separated): set_boot() refuses (ESP_ERR_OTA_VALIDATE_FAILED) an image that
# carries no signature block of such a key (_esp32_ota._signed says what is checked).
import os
import struct
import micropython
from micropython import const

_SECTOR = const(4096)
_CHUNK = const(256)
_TABLE = const(0x8000)
_INVALID_ARG = const(0x102)
_INVALID_SIZE = const(0x104)
_ENOENT = const(2)
_EINVAL = const(22)

_dir = os.getenv("FAKE_ESP32_DIR")
if not _dir:
    raise ImportError("fake esp32: set FAKE_ESP32_DIR to the device directory")
_flash = open(_dir + "/flash.bin", "r+b")
_counts = open(_dir + "/erase_counts.bin", "r+b")
_buf = bytearray(_CHUNK)

_writes = _erases = -1  # power-cut countdowns: the operation that takes one to 0 is cut
_part = 0  # bytes of the cut operation that reach the flash


def _cold(name, *args):
    # run a function of the cold half, then drop the module so that it costs no heap
    import sys
    try:
        import _esp32_ota
        return getattr(_esp32_ota, name)(*args)
    finally:
        sys.modules.pop("_esp32_ota", None)


def _fail(code):
    # check_esp_err(): OSError(-esp_err, name)
    raise OSError(-code, "ESP_ERR_INVALID_ARG" if code == _INVALID_ARG else "ESP_ERR_INVALID_SIZE")


@micropython.viper
def _program(old: ptr8, new: ptr8, off: int, n: int) -> int:
    # NOR program of n bytes: old[i] &= new[off + i]. Returns the first byte that needed
    # a 0 -> 1 bit as (i << 16 | old << 8 | new), or -1.
    bad = -1
    i = 0
    while i < n:
        o = old[i]
        w = new[off + i]
        if bad < 0 and (w & (o ^ 0xFF)):
            bad = (i << 16) | (o << 8) | w
        old[i] = o & w
        i += 1
    return bad


def _write(addr, buf, off, n):
    global _writes
    _writes -= 1
    cut = _writes == 0
    if cut and _part < n:
        n = _part  # a program cut short: only the first bytes changed
    while n > 0:
        k = n if n < _CHUNK else _CHUNK
        _flash.seek(addr)
        _flash.readinto(_buf, k)
        bad = _program(_buf, buf, off, k)
        if bad >= 0:
            with open(_dir + "/corruption.log", "a") as f:
                f.write("%d %d %d\n" % (addr + (bad >> 16), (bad >> 8) & 0xFF, bad & 0xFF))
        _flash.seek(addr)
        _flash.write(_buf, k)
        addr += k
        off += k
        n -= k
    if cut:
        _cold("die")


def _check(size, off, n):
    # the bounds checks of esp_partition_read/write/erase_range
    if off > size:
        _fail(_INVALID_ARG)
    if n > size - off:
        _fail(_INVALID_SIZE)


def _erase(addr, size, off, n):
    # esp_partition_erase_range() on the partition at addr/size
    global _erases
    _check(size, off, n)
    if n % _SECTOR:
        _fail(_INVALID_SIZE)
    if off % _SECTOR:
        _fail(_INVALID_ARG)
    addr += off
    while n:
        _erases -= 1
        left = _part if _erases == 0 and _part < _SECTOR else _SECTOR
        for i in range(_CHUNK):
            _buf[i] = 0xFF
        _flash.seek(addr)
        while left > 0:
            _flash.write(_buf, left if left < _CHUNK else _CHUNK)
            left -= _CHUNK
        _counts.seek(addr >> 11)
        _counts.readinto(_buf, 2)
        i = (_buf[0] | _buf[1] << 8) + 1
        _buf[0] = i & 0xFF
        _buf[1] = i >> 8
        _counts.seek(addr >> 11)
        _counts.write(_buf, 2)
        if _erases == 0:
            _cold("die")
        addr += _SECTOR
        n -= _SECTOR


# The partition table as the real partition API reads it at start-up: ESP-IDF's 32-byte
# esp_partition_info_t entries (magic 0x50AA) from 0x8000, kept raw in _table:
# [2] type, [3] subtype, [4:8] address, [8:12] size, [12:28] label, [28] flags.
def _label(i):
    return bytes(_table[i * 32 + 12:i * 32 + 28]).split(b"\0")[0].decode()


def _find(type, subtype, label):
    # indexes of the matching entries, in table order (esp_partition_find)
    return [i for i in range(len(_table) // 32)
            if (type == 0xFF or _table[i * 32 + 2] == type)
            and (subtype == 0xFF or _table[i * 32 + 3] == subtype)
            and (label is None or _label(i) == label)]


class Partition:
    BOOT = 0
    RUNNING = 1
    TYPE_APP = 0
    TYPE_DATA = 1

    def __init__(self, id, block_size=_SECTOR):
        if isinstance(id, int) and id >= 0x100:  # internal: 0x100 + table index
            i = id - 0x100
        else:
            if id == 0:
                id = _cold("boot_label")
            elif id == 1:
                with open(_dir + "/bootinfo") as f:  # the bootloader's choice
                    id = f.read().split()[0]
            elif isinstance(id, int):
                raise ValueError
            i = _find(0, 0xFF, id) or _find(1, 0xFF, id)
            if not i:
                raise OSError(_ENOENT)
            i = i[0]
        self._i = i
        self._addr, self._size = struct.unpack_from("<II", _table, i * 32 + 4)
        self._bs = block_size
        # as the real port: blocks smaller than a sector need a sector cache to erase
        self._cache = bytearray(_SECTOR) if block_size < _SECTOR else None

    def __repr__(self):
        return "<Partition type=%u, subtype=%u, address=%u, size=%u, label=%s, encrypted=%u>" % self.info()

    @staticmethod
    def find(type=0, subtype=0xFF, label=None, block_size=_SECTOR):
        return [Partition(0x100 + i, block_size) for i in _find(type, subtype, label)]

    def info(self):
        i = self._i
        return (_table[i * 32 + 2], _table[i * 32 + 3], self._addr, self._size, _label(i),
                bool(_table[i * 32 + 28] & 1))

    def readblocks(self, block_num, buf, offset=0):
        off = block_num * self._bs + offset
        _check(self._size, off, len(buf))
        _flash.seek(self._addr + off)
        _flash.readinto(buf)

    def writeblocks(self, block_num, buf, offset=None):
        off = block_num * self._bs
        n = len(buf)
        if offset is not None:
            off += offset
        elif self._cache is None:
            _erase(self._addr, self._size, off, n)
        else:
            _cold("erase_keep", self, off, n)
        _check(self._size, off, n)
        _write(self._addr + off, buf, 0, n)

    def ioctl(self, op, arg):
        if 0 < op < 4:
            return 0
        if op == 4:
            return self._size // self._bs
        if op == 5:
            return self._bs
        if op == 6:
            if self._bs != _SECTOR:
                return -_EINVAL
            _erase(self._addr, self._size, arg * _SECTOR, _SECTOR)
            return 0

    def set_boot(self):
        _cold("set_boot", self)

    def get_next_update(self):
        # esp_ota_get_next_update_partition(): the OTA slot after this one, else the first.
        # Here, not in the cold half: the firmware asks at the start of every download.
        n = 0
        while _find(0, 0x10 + n, None):
            n += 1
        if not n:
            raise OSError(_ENOENT)
        sub = _table[self._i * 32 + 3] - 0x10
        i = _find(0, 0x10 + ((sub + 1) % n if 0 <= sub < n and not _table[self._i * 32 + 2] else 0), None)
        return Partition(0x100 + i[0])

    @classmethod
    def mark_app_valid_cancel_rollback(cls):
        _cold("mark_app_valid")


_table = bytearray()
while True:
    _flash.seek(_TABLE + len(_table))
    _flash.readinto(_buf, 32)
    if _buf[0] != 0xAA or _buf[1] != 0x50:
        break
    _table.extend(_buf[:32])
# MicroPython's main.c registers "vfs" over the rest of the flash when the table has
# neither "vfs" nor "ffat".
_end = max(sum(struct.unpack_from("<II", _table, i)) for i in range(4, len(_table), 32))
if _flash.seek(0, 2) > _end and not _find(1, 0xFF, "vfs") and not _find(1, 0xFF, "ffat"):
    _table.extend(struct.pack("<HBBII16sI", 0x50AA, 1, 0x81, _end, _flash.tell() - _end, b"vfs", 0))
del _end
if os.getenv("FAKE_ESP32_CUT"):
    _cold("arm")
