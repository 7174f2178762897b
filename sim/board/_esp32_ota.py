# The cold half of the fake esp32 module: otadata and app image checks as ESP-IDF's
# esp_ota_ops / esp_image_format do them, and erases for blocks smaller than a sector.
# Imported on demand by esp32 and dropped after each call, so it costs no heap in between.
import struct
import micropython
from micropython import const
import os
from esp32 import _dir, _flash, _buf, _table, _label, _find, _write, _erase

_SECTOR = const(4096)
_CHUNK = const(256)
_ESP_FAIL = const(-1)
_INVALID_ARG = const(0x102)
_VALIDATE_FAILED = const(0x1503)
_ENOENT = const(2)
_SEQ_ERASED = const(0xFFFFFFFF)
_NEW = const(0)
_VALID = const(2)
_INVALID = const(3)
_ABORTED = const(4)


# Power cuts ($FAKE_ESP32_CUT, described in esp32.py)
_POINTS = ("set_boot=before", "set_boot=erased", "set_boot=after",
           "mark_valid=before", "mark_valid=erased", "mark_valid=after")


def arm():
    # at the import of esp32: set its countdowns, or check that the cut names a point here
    import esp32
    cut = os.getenv("FAKE_ESP32_CUT")
    if cut[:7] in ("writes=", "erases="):
        n = [int(v) if v.isdigit() else -1 for v in cut[7:].split(":")]
        if len(n) > 2 or min(n) < 0 or n[0] < 1:
            raise ValueError("FAKE_ESP32_CUT=" + cut)
        setattr(esp32, "_" + cut[:6], n[0])
        esp32._part = n[1] if len(n) > 1 else 0
    elif cut not in _POINTS and cut + "=before" not in _POINTS:
        raise ValueError("FAKE_ESP32_CUT=" + cut)


def die():
    # the power is gone. sh's parent is this process, and the signal is pending before sh
    # exits, so it is delivered before system() can return
    os.system("kill -USR1 $PPID")
    raise SystemExit(125)  # not reached


def _at(call, when):
    # a named cut point inside set_boot / mark_valid
    cut = os.getenv("FAKE_ESP32_CUT")
    if cut and (cut == call + "=" + when or (cut == call and when == "before")):
        die()


def _fail(code, name):
    raise OSError(-code, name)


def _slots():
    # table indexes of ota_0, ota_1, ... up to the first missing one
    slots = []
    while _find(0, 0x10 + len(slots), None):
        slots.append(_find(0, 0x10 + len(slots), None)[0])
    return slots


# otadata: two sectors, each starting with esp_ota_select_entry_t
# {u32 ota_seq; u8 seq_label[20]; u32 ota_state; u32 crc = crc32_le(UINT32_MAX, &ota_seq, 4)}
def _otadata():
    addr = _field(_table, _find(1, 0, None)[0] * 32 + 4)
    ents = []
    for i in (0, 1):
        b = bytearray(32)
        _flash.seek(addr + i * _SECTOR)
        _flash.readinto(b)
        ents.append(b)
    return addr, ents


def _crc(b):
    import binascii
    return binascii.crc32(bytes(b[:4]), _SEQ_ERASED)


def _field(b, at):
    return struct.unpack_from("<I", b, at)[0]


def _active(ents):
    # bootloader_common_get_active_otadata(): the valid entry with the highest seq, ties -> 0
    ok = [_field(b, 0) != _SEQ_ERASED and _field(b, 24) not in (_INVALID, _ABORTED)
          and _field(b, 28) == _crc(b) for b in ents]
    if ok[0] and ok[1]:
        return 0 if _field(ents[0], 0) >= _field(ents[1], 0) else 1
    return 0 if ok[0] else 1 if ok[1] else -1


def _rewrite(addr, ents, i, seq, state, call):
    # rewrite_ota_seq(): erase that otadata sector, write the 32-byte entry
    b = ents[i]
    struct.pack_into("<I", b, 0, seq)
    struct.pack_into("<I", b, 24, state)
    struct.pack_into("<I", b, 28, _crc(b))
    _erase(addr, 2 * _SECTOR, i * _SECTOR, _SECTOR)
    _at(call, "erased")
    _write(addr + i * _SECTOR, b, 0, 32)


@micropython.viper
def _xor(b: ptr8, n: int, x: int) -> int:
    i = 0
    while i < n:
        x ^= b[i]
        i += 1
    return x


def _image_ok(a, size):
    # esp_image_verify(): magic, chip id, at most 16 segments of 4-byte multiples inside
    # the partition, XOR checksum (seed 0xEF) as the last byte of the 16-byte padded
    # image, then the appended SHA-256 when byte 23 says so. Streamed through _buf.
    # Returns the image's length (0: not a sound image).
    end = a + size
    b = _buf
    with open(_dir + "/bootinfo") as f:
        chip = int(f.read().split()[1])
    _flash.seek(a)
    _flash.readinto(b, 24)
    if b[0] != 0xE9 or b[1] > 16 or (b[12] | b[13] << 8) != chip:
        return False
    nseg = b[1]
    hashed = b[23] == 1
    pos = a + 24
    x = 0xEF
    while nseg:
        nseg -= 1
        if pos + 8 > end:
            return False
        _flash.seek(pos)
        _flash.readinto(b, 8)
        n = _field(b, 4)
        pos += 8
        if n & 3 or pos + n > end:
            return False
        while n:
            k = n if n < _CHUNK else _CHUNK
            _flash.readinto(b, k)
            x = _xor(b, k, x)
            pos += k
            n -= k
    n = (pos - a + 16) & ~15
    if a + n + 32 * hashed > end:
        return False
    _flash.seek(a + n - 1)
    _flash.readinto(b, 1)
    if b[0] != x:
        return False
    if hashed:
        import hashlib
        h = hashlib.sha256()
        _flash.seek(a)
        while n:
            k = n if n < _CHUNK else _CHUNK
            _flash.readinto(b, k)
            h.update(memoryview(b)[:k])
            n -= k
        _flash.readinto(b, 32)
        if h.digest() != bytes(b[:32]):
            return False
    return _flash.tell() - a


def _signed(a, length, trusted):
    # Secure Boot V2 as the bootloader checks it before a boot: the signature sector after
    # the image padded to 4 KiB holds a block (magic 0xE7, version 2) whose key digest is
    # burnt in eFuse ($FAKE_ESP32_SECURE_BOOT: hex digests, comma-separated) and whose image
    # digest is the SHA-256 of everything before the sector. The RSA-PSS signature itself is
    # not checked here (the host tests check it with espsecure; the firmware checks it too).
    import hashlib
    import binascii
    at = a + (length + _SECTOR - 1) // _SECTOR * _SECTOR
    for i in range(3):
        block = bytearray(812)
        _flash.seek(at + i * 1216)
        _flash.readinto(block)
        if block[0] != 0xE7 or block[1] != 2:
            return False
        if binascii.hexlify(hashlib.sha256(block[36:]).digest()).decode() not in trusted:
            continue
        h = hashlib.sha256()
        _flash.seek(a)
        for _ in range((at - a) // _CHUNK):
            _flash.readinto(_buf, _CHUNK)
            h.update(_buf)
        return h.digest() == bytes(block[4:36])
    return False


def set_boot(part):
    # esp_ota_set_boot_partition() with rollback enabled: verify, then select it as NEW
    length = _image_ok(part._addr, part._size)
    secure = os.getenv("FAKE_ESP32_SECURE_BOOT")
    if not length or (secure and not _signed(part._addr, length, secure.lower().split(","))):
        _fail(_VALIDATE_FAILED, "ESP_ERR_OTA_VALIDATE_FAILED")
    _at("set_boot", "before")
    t, sub = _table[part._i * 32 + 2], _table[part._i * 32 + 3]
    if t != 0:
        _fail(_INVALID_ARG, "ESP_ERR_INVALID_ARG")
    addr, ents = _otadata()
    if sub == 0:  # the factory app: blank otadata
        _erase(addr, 2 * _SECTOR, 0, 2 * _SECTOR)
        return
    n = len(_slots())
    slot = sub & 0xF
    if slot >= n:
        _fail(_INVALID_ARG, "ESP_ERR_INVALID_ARG")
    i = _active(ents)
    if i < 0:
        i, seq = 0, slot + 1
    else:
        seq = _field(ents[i], 0)
        if (seq - 1) % n != slot:
            # the smallest seq >= the active one that selects `slot`, in the other sector
            base = (slot + 1) % n
            while seq > base:
                base += n
            i, seq = 1 - i, base
    _rewrite(addr, ents, i, seq, _NEW, "set_boot")
    _at("set_boot", "after")


def mark_app_valid():
    # esp_ota_mark_app_valid_cancel_rollback(): the active entry becomes VALID, rewritten in
    # place: a cut after the erase loses it, and the bootloader takes the other entry
    _at("mark_valid", "before")
    addr, ents = _otadata()
    i = _active(ents)
    if i < 0 or not _slots():
        _fail(_ESP_FAIL, "ESP_FAIL")  # "Running firmware is factory"
    if _field(ents[i], 24) != _VALID:
        _rewrite(addr, ents, i, _field(ents[i], 0), _VALID, "mark_valid")
    _at("mark_valid", "after")


def boot_label():
    # esp_ota_get_boot_partition(): the active entry's slot, else the factory app or ota_0
    _, ents = _otadata()
    slots = _slots()
    i = _active(ents)
    if i < 0 or not slots:
        found = _find(0, 0, None) or slots
        return _label(found[0])
    return _label(slots[(_field(ents[i], 0) - 1) % len(slots)])


def erase_keep(part, off, n):
    # writeblocks() without offset for blocks smaller than a sector: erase the sectors
    # under [off, off + n), keeping the bytes outside that range (part._cache holds them)
    c = part._cache
    a = off - off % _SECTOR
    top = off + n
    while a < top:
        part.readblocks(0, c, a)
        _erase(part._addr, part._size, a, _SECTOR)
        base = part._addr + a
        if off > a:
            _write(base, c, 0, off - a)
        if top < a + _SECTOR:
            _write(base + top - a, c, top - a, a + _SECTOR - top)
        a += _SECTOR
