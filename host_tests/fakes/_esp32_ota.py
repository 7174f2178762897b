# The cold half of the fake esp32 module: opening the device, the partition table,
# Partition(), find(), info(), repr, otadata and app image checks as ESP-IDF's
# esp_partition / esp_ota_ops / esp_image_format do them, erases for blocks smaller than a
# sector, the error names and the power-cut points. Imported on demand by esp32 (r(), by
# number) and dropped after each call, so it costs no heap in between.
# Every identifier and every string of up to 10 characters in a module stays a qstr in the
# heap for the rest of the run, even after the module is dropped. So each global, argument
# and attribute name here is one the interpreter already has (a built-in qstr), and the
# short strings are split at run time from the one long string t. The names:
#   e      the esp32 module (its f, e, buffer, w, v, t, write, clear, Partition)
#   path   a device file              connect  open the device, arm the cut
#   throw  OSError of an esp_err_t    stderr   log a NOR violation     stop  the power dies
#   sleep  a named cut point          unpack   a little-endian u32
#   items  the partition table        find     its matching entries
#   bind   Partition()                values   find()                  get   info()
#   sort   the OTA slots              recv     otadata                 crc32 an entry's CRC
#   accept the active otadata entry   update   rewrite an entry        add   XOR checksum
#   listen the image is valid         send     set_boot()              pop   get_next_update()
#   append mark_app_valid...()        default  the boot partition      clear erase, keep
import os
import micropython
import esp32 as e

_S = const(4096)
_C = const(256)
_NEW = const(0)
_VALID = const(2)
_INVALID = const(3)
_ABORTED = const(4)
_ERASED = const(0xFFFFFFFF)  # ota_seq of an erased entry

t = ("FAKE_ESP32_DIR\nFAKE_ESP32_CUT\n%s/flash.bin\n%s/erase_counts.bin\n%s/bootinfo\n"
     "%s/corruption.log\nr+b\n%d %d %d\nwrites\nerases\nset_boot\nmark_valid\nbefore\nerased\n"
     "after\nvfs\nffat\nESP_FAIL\nESP_ERR_INVALID_ARG\nESP_ERR_INVALID_SIZE\n"
     "ESP_ERR_OTA_VALIDATE_FAILED\n"
     "<Partition type=%u, subtype=%u, address=%u, size=%u, label=%s, encrypted=%u>\n"
     "kill -USR1 $PPID\n=\na\ninfo\nset_boot\nget_next_update\ntype\nsubtype\nlabel\nblock_size\nid\nblock_size"
     ).split("\n")
# indexes into t
_DIR = const(0)
_CUT = const(1)
_FLASH = const(2)
_COUNTS = const(3)
_BOOTINFO = const(4)
_LOG = const(5)
_RW = const(6)
_LINE = const(7)
_WRITES = const(8)  # then erases
_SET_BOOT = const(10)  # then mark_valid
_BEFORE = const(12)  # then erased, after
_VFS = const(15)  # then ffat
_ESP_FAIL = const(17)  # then INVALID_ARG, INVALID_SIZE, OTA_VALIDATE_FAILED
_REPR = const(21)
_KILL = const(22)
_EQ = const(23)
_APPEND = const(24)
_METHODS = const(25)  # info, set_boot, get_next_update
_KEYS = const(28)  # type, subtype, label, block_size
_ID = const(32)  # id, block_size


def path(n):
    # the path of a device file
    return t[n] % os.getenv(t[_DIR])


def connect():
    # at the import of esp32: open the device, set the power-cut countdowns
    if not os.getenv(t[_DIR]):
        raise ImportError("fake esp32: set FAKE_ESP32_DIR to the device directory")
    e.f = open(path(_FLASH), t[_RW])
    e.e = open(path(_COUNTS), t[_RW])
    e.buffer = bytearray(_C)
    e.w = e.v = -1
    e.t = 0
    cut = os.getenv(t[_CUT])
    if not cut:
        return
    q = cut.split(t[_EQ], 1)
    if len(q) > 1 and q[0] in t[_WRITES:_WRITES + 2]:
        n = [int(v) if v.isdigit() else -1 for v in q[1].split(":")]
        if len(n) < 3 and min(n) >= 0 and n[0] > 0:
            if q[0] == t[_WRITES]:
                e.w = n[0]
            else:
                e.v = n[0]
            e.t = n[1] if len(n) > 1 else 0
            return
    elif q[0] in t[_SET_BOOT:_SET_BOOT + 2] and (len(q) < 2 or q[1] in t[_BEFORE:_BEFORE + 3]):
        return
    raise ValueError(t[_CUT] + t[_EQ] + cut)


def throw(code):
    # check_esp_err(): OSError(-esp_err, name)
    raise OSError(-code, t[_ESP_FAIL + (0, 0x102, 0x104, 0x1503).index(max(code, 0))])


def stderr(pos, s, n):
    # a write needed a 0 -> 1 bit at flash address pos (old byte s, new byte n)
    with open(path(_LOG), t[_APPEND]) as f:
        f.write(t[_LINE] % (pos, s, n) + "\n")


def stop():
    # the power is gone. sh's parent is this process, and the signal is pending before sh
    # exits, so it is delivered before system() can return
    os.system(t[_KILL])
    raise SystemExit(125)  # not reached


def sleep(n, s):
    # a named cut point inside set_boot (n = 0) / mark_valid (1): before (s = 0), erased, after
    cut = os.getenv(t[_CUT])
    call = t[_SET_BOOT + n]
    if cut and (cut == call + t[_EQ] + t[_BEFORE + s] or (cut == call and not s)):
        stop()


def unpack(s, n):
    # the little-endian u32 at s[n]
    return int.from_bytes(bytes(s[n:n + 4]), "little")


# The partition table as the real partition API reads it at start-up: ESP-IDF's 32-byte
# esp_partition_info_t entries (magic 0x50AA) from 0x8000, as (type, subtype, address,
# size, label, flags); MicroPython's main.c registers "vfs" over the rest of the flash
# when the table has neither "vfs" nor "ffat".
def items():
    table = []
    f = e.f
    b = bytearray(32)
    while True:
        f.seek(0x8000 + 32 * len(table))
        f.readinto(b)
        if b[0] != 0xAA or b[1] != 0x50:
            break
        label = bytes(b[12:28]).split(bytes(1))[0].decode()
        table.append((b[2], b[3], unpack(b, 4), unpack(b, 8), label, b[28]))
    end = max(p[2] + p[3] for p in table)
    if f.seek(0, 2) > end and not find(table, 1, 0xFF, t[_VFS]) and not find(table, 1, 0xFF, t[_VFS + 1]):
        table.append((1, 0x81, end, f.tell() - end, t[_VFS], 0))
    return table


def find(s, type, n, name):
    # indexes of the entries of table s that match, in table order (esp_partition_find)
    return [i for i, p in enumerate(s)
            if (type == 0xFF or p[0] == type) and (n == 0xFF or p[1] == n) and (name is None or p[4] == name)]


def args(n, data, key, *default):
    # the arguments of a call with positional data and keywords key as a list, for the
    # parameters named t[n:n + len(default)] with these defaults (the names are compared
    # as strings: written as parameter names they would be qstrs)
    a = list(data) + list(default[len(data):])
    if len(a) > len(default):
        raise TypeError
    for k in key:
        if k not in t[n:n + len(default)]:
            raise TypeError(k)
        a[t.index(k, n) - n] = key[k]
    if t in a:  # the default of a required argument
        raise TypeError
    return a


def bind(self, id, step):
    # Partition(id, block_size=4096): id a label, BOOT, RUNNING, or 0x100 + a table index
    table = items()
    if isinstance(id, int) and id >= 0x100:
        i = id - 0x100
    else:
        if id == 0:
            id = default(table)
        elif id == 1:
            with open(path(_BOOTINFO)) as f:  # the bootloader's choice
                id = f.read().split()[0]
        elif isinstance(id, int):
            raise ValueError
        i = find(table, 0, 0xFF, id) or find(table, 1, 0xFF, id)
        if not i:
            raise OSError(2)  # ENOENT
        i = i[0]
    self.index = i
    self.start = table[i][2]
    self.end = table[i][3]
    self.step = step
    # as the real port: blocks smaller than a sector need a sector cache to erase
    self.buffer = bytearray(_S) if step < _S else None


def values(type, n, name, step):
    # Partition.find(type=TYPE_APP, subtype=0xff, label=None, block_size=4096)
    return [e.Partition(0x100 + i, step) for i in find(items(), type, n, name)]


def get(self):
    # Partition.info()
    p = items()[self.index]
    return p[0], p[1], self.start, self.end, p[4], bool(p[5] & 1)


def sort(data):
    # table indexes of ota_0, ota_1, ... up to the first missing one
    s = []
    while find(data, 0, 0x10 + len(s), None):
        s.append(find(data, 0, 0x10 + len(s), None)[0])
    return s


# otadata: two sectors, each starting with esp_ota_select_entry_t
# {u32 ota_seq; u8 seq_label[20]; u32 ota_state; u32 crc = crc32_le(UINT32_MAX, &ota_seq, 4)}
def recv(data):
    # (address of otadata in the partition table data, its two entries)
    pos = data[find(data, 1, 0, None)[0]][2]
    s = []
    for i in (0, 1):
        b = bytearray(32)
        e.f.seek(pos + i * _S)
        e.f.readinto(b)
        s.append(b)
    return pos, s


def crc32(s):
    import binascii
    return binascii.crc32(bytes(s[:4]), _ERASED)


def accept(s):
    # bootloader_common_get_active_otadata(): the valid entry with the highest seq, ties -> 0
    ok = [unpack(b, 0) != _ERASED and unpack(b, 24) not in (_INVALID, _ABORTED)
          and unpack(b, 28) == crc32(b) for b in s]
    if ok[0] and ok[1]:
        return 0 if unpack(s[0], 0) >= unpack(s[1], 0) else 1
    return 0 if ok[0] else 1 if ok[1] else -1


def update(pos, s, n, value, state, key):
    # rewrite_ota_seq(): erase otadata sector n, write its 32-byte entry with seq value
    # and state; key: the cut points of set_boot (0) or mark_valid (1)
    b = s[n]
    b[0:4] = value.to_bytes(4, "little")
    b[24:28] = state.to_bytes(4, "little")
    b[28:32] = crc32(b).to_bytes(4, "little")
    e.clear(pos, 2 * _S, n * _S, _S)
    sleep(key, 1)
    e.write(pos + n * _S, b, 0, 32)


@micropython.viper
def add(s: ptr8, n: int, value: int) -> int:
    i = 0
    while i < n:
        value ^= s[i]
        i += 1
    return value


def listen(pos, n):
    # esp_image_verify() of the partition at pos, of size n: magic, chip id, at most 16
    # segments of 4-byte multiples inside the partition, XOR checksum (seed 0xEF) as the
    # last byte of the 16-byte padded image, then the appended SHA-256 when byte 23 says
    # so. Streamed through the scratch buffer.
    end = pos + n
    b = e.buffer
    f = e.f
    with open(path(_BOOTINFO)) as g:
        chip = int(g.read().split()[1])
    f.seek(pos)
    f.readinto(b, 24)
    if b[0] != 0xE9 or b[1] > 16 or (b[12] | b[13] << 8) != chip:
        return False
    segs = b[1]
    hashed = b[23] == 1
    at = pos + 24
    x = 0xEF
    while segs:
        segs -= 1
        if at + 8 > end:
            return False
        f.seek(at)
        f.readinto(b, 8)
        n = unpack(b, 4)
        at += 8
        if n & 3 or at + n > end:
            return False
        while n:
            k = n if n < _C else _C
            f.readinto(b, k)
            x = add(b, k, x)
            at += k
            n -= k
    n = (at - pos + 16) & ~15
    if pos + n + 32 * hashed > end:
        return False
    f.seek(pos + n - 1)
    f.readinto(b, 1)
    if b[0] != x:
        return False
    if hashed:
        import hashlib
        h = hashlib.sha256()
        f.seek(pos)
        while n:
            k = n if n < _C else _C
            f.readinto(b, k)
            h.update(memoryview(b)[:k])
            n -= k
        f.readinto(b, 32)
        if h.digest() != bytes(b[:32]):
            return False
    return True


def send(self):
    # set_boot(): esp_ota_set_boot_partition() with rollback enabled: verify, then select
    # it as NEW
    if not listen(self.start, self.end):
        throw(0x1503)  # ESP_ERR_OTA_VALIDATE_FAILED
    sleep(0, 0)
    table = items()
    kind, sub = table[self.index][0], table[self.index][1]
    if kind != 0:
        throw(0x102)
    pos, s = recv(table)
    if sub == 0:  # the factory app: blank otadata
        e.clear(pos, 2 * _S, 0, 2 * _S)
        return
    n = len(sort(table))
    slot = sub & 0xF
    if slot >= n:
        throw(0x102)
    i = accept(s)
    if i < 0:
        i, seq = 0, slot + 1
    else:
        seq = unpack(s[i], 0)
        if (seq - 1) % n != slot:
            # the smallest seq >= the active one that selects the slot, in the other sector
            base = (slot + 1) % n
            while seq > base:
                base += n
            i, seq = 1 - i, base
    update(pos, s, i, seq, _NEW, 0)
    sleep(0, 2)


def pop(self):
    # get_next_update(): esp_ota_get_next_update_partition(): the OTA slot after this
    # one, else the first
    s = sort(items())
    if not s:
        raise OSError(2)
    k = s.index(self.index) + 1 if self.index in s else 0
    return e.Partition(0x100 + s[k % len(s)])


def append():
    # esp_ota_mark_app_valid_cancel_rollback(): the active entry becomes VALID, rewritten in
    # place: a cut after the erase loses it, and the bootloader takes the other entry
    sleep(1, 0)
    table = items()
    pos, s = recv(table)
    i = accept(s)
    if i < 0 or not sort(table):
        throw(-1)  # ESP_FAIL: "Running firmware is factory"
    if unpack(s[i], 24) != _VALID:
        update(pos, s, i, unpack(s[i], 0), _VALID, 1)
    sleep(1, 2)


def default(data):
    # esp_ota_get_boot_partition(): the active entry's slot, else the factory app or ota_0
    _, s = recv(data)
    slots = sort(data)
    i = accept(s)
    if i < 0 or not slots:
        return data[(find(data, 0, 0, None) or slots)[0]][4]
    return data[slots[(unpack(s[i], 0) - 1) % len(slots)]][4]


def clear(self, start, n):
    # writeblocks() without offset for blocks smaller than a sector: erase the sectors
    # under [start, start + n), keeping the bytes outside that range (self.buffer holds them)
    c = self.buffer
    a = start - start % _S
    top = start + n
    while a < top:
        self.readblocks(0, c, a)
        e.clear(self.start, self.end, a, _S)
        base = self.start + a
        if start > a:
            e.write(base, c, 0, start - a)
        if top < a + _S:
            e.write(base + top - a, c, top - a, a + _S - top)
        a += _S


def r(n, *data):
    # esp32's calls, by number
    if n == 5:  # Partition(*args, **kw)
        return bind(data[0], *args(_ID, data[1], data[2], t, _S))
    if n == 7:  # Partition.find(*args, **kw)
        return values(*args(_KEYS, data[0], data[1], 0, 0xFF, None, _S))
    if n == 6:
        return t[_REPR] % get(*data)
    if n == 8:  # Partition.__getattr__(self, name)
        self, name = data
        if name not in t[_METHODS:_METHODS + 3]:
            raise AttributeError(name)
        return (lambda: get(self), lambda: send(self), lambda: pop(self))[t.index(name, _METHODS) - _METHODS]
    return (connect, None, throw, stderr, stop, None, None, None, None, clear, None, None, append)[n](*data)
