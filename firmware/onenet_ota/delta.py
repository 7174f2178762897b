# A differential firmware package (task type 2): a detools "sequential" patch, applied while
# it streams in, against the image in the running partition.
#
# Accepted packages (made by `python -m tools package delta`):
#   [esp_delta_ota header]  64 bytes: magic 0xfccdde10 (LE), SHA-256 of the base image as
#                           esp_partition_get_sha256() gives it (the base's appended digest),
#                           28 reserved. Checked against the running image, then skipped.
#   detools patch           header byte 0x00 (sequential, no compression) or 0x04
#                           (sequential, heatshrink with window 8 / lookahead 7), or the
#                           uncompressed patch inside a zlib stream of window <= 4 KiB
#                           (wbits 9..12), inflated in C by deflate.DeflateIO.
# Everything else is refused before a byte of the new image exists: in-place and hdiffpatch
# patches, a data-format section, lzma/crle/bz2/zstd/lz4, other heatshrink parameters, a zlib
# window above 4 KiB.
#
# The patch after its header: varint to_size, then (in the compressed stream) varint data
# format size (must be 0), then until to_size bytes are made: varint n + n diff bytes (new =
# old + diff, mod 256, old read from the current base position), varint n + n extra bytes
# (copied), varint signed seek of the base position. A varint is 6 bits + sign in its first
# byte, 7 bits in each next one, bit 7 = more follow.
#
# A power cut during a delta restarts the patch from its beginning: the decoder state (base
# position, the inflater or heatshrink window) is not saved, and the new image is made from
# the running one, which the cut did not touch. A dropped connection need not: read_into may
# reconnect and resume the byte stream (Range) itself, the decoder only sees bytes arrive.
from micropython import const
from array import array
import io

from onenet_ota.codes import Fail, NO_SPACE, WRONG_BUILD, UPGRADE_FAILED

SECTOR = const(4096)
_RAW = const(512)  # patch bytes as they arrive
_DATA = const(512)  # patch bytes after heatshrink or inflate
_OLD = const(512)  # base image bytes
_ESP_HEADER = const(64)
_NONE = const(0)
_HEATSHRINK = const(4)
_ZLIB = const(8)
_HS_PARAMS = const(0x44)  # heatshrink: window 2^(4+4), lookahead 2^(4+3)
_MAX_ZLIB_CINFO = const(4)  # window 2^(4+8) = 4 KiB


try:
    from onenet_ota._deltav import add, copy, unshrink
except (ImportError, SyntaxError, ValueError):  # no native emitter, or .mpy for another arch

    def add(out, diff, old, ix):
        d = ix[1] - ix[0]
        b = ix[2] - ix[0]
        for o in range(ix[0], ix[0] + ix[3]):
            out[o] = (diff[d + o] + old[b + o]) & 0xFF

    def copy(out, src, ix):
        d = ix[1] - ix[0]
        for o in range(ix[0], ix[0] + ix[3]):
            out[o] = src[d + o]

    def unshrink(src, st, win, dst):
        p = st[0]
        acc = st[2]
        nb = st[3]
        head = st[4]
        n = 0
        while n <= st[5]:
            while nb <= 16 and p < st[1]:
                acc = acc << 8 | src[p]
                p += 1
                nb += 8
            if nb < 9:
                break
            if acc >> (nb - 1) & 1:
                c = acc >> (nb - 9) & 0xFF
                nb -= 9
                dst[n] = win[head] = c
                head = (head + 1) & 0xFF
                n += 1
            else:
                if nb < 16:
                    break
                back = (acc >> (nb - 9) & 0xFF) + 1
                count = (acc >> (nb - 16) & 0x7F) + 1
                nb -= 16
                for _ in range(count):
                    dst[n] = win[head] = win[(head - back) & 0xFF]
                    head = (head + 1) & 0xFF
                    n += 1
            acc &= (1 << nb) - 1
        st[0] = p
        st[2] = acc
        st[3] = nb
        st[4] = head
        return n


# A patch that cannot make the new image raises Fail: 102 the image does not fit the slot,
# 204 the patch is for another base image, 206 unsupported or broken.
def _broken(why):
    return Fail(UPGRADE_FAILED, why)


class Patch:
    """A patch being applied. read_into(buf, n) puts up to n (= len(buf)) patch bytes at the
    start of buf and returns their count, 0 once the package has ended (the caller hashes
    them as they pass). base: the running partition (readblocks(block, buf, offset)) of
    base_size bytes. The constructor reads and checks the headers; then fill(buf) makes the
    new image sector by sector."""

    def __init__(self, read_into, base, base_size, slot_size):
        if base_size < _OLD:
            raise ValueError("base_size")
        self._read = read_into
        self._base = base
        self._base_size = base_size
        self._old = bytearray(_OLD)
        self._at = -_OLD  # base offset of the bytes in _old
        self._ix = array("i", (0, 0, 0, 0))
        raw = self._raw = bytearray(_RAW)
        # first fill as full as the package allows: the headers are read from it
        view = memoryview(raw)
        got = 0
        while got < _RAW:
            n = read_into(view[got:], _RAW - got)
            if not n:
                break
            got += n
        del view
        self._mode = _NONE
        self._data = raw  # where _byte() reads: raw bytes until a decompressor takes over
        self._i = 0
        self._n = got
        if got >= 4 and raw[0] == 0x10 and raw[1] == 0xDE and raw[2] == 0xCD and raw[3] == 0xFC:
            if got < _ESP_HEADER:
                raise _broken("patch truncated")
            if self._base_digest() != raw[4:36]:
                raise Fail(WRONG_BUILD, "patch for another base image")
            self._i = _ESP_HEADER
        i = self._i
        if i < got and raw[i] & 0x0F == _ZLIB:  # a zlib CMF byte; no detools header has 8 there
            cmf = raw[i]
            if i + 1 == got or (cmf << 8 | raw[i + 1]) % 31 or raw[i + 1] & 0x20:
                raise _broken("bad zlib header")
            if cmf >> 4 > _MAX_ZLIB_CINFO:
                raise _broken("zlib window %d > 4096" % (256 << (cmf >> 4)))
            try:
                import deflate  # MicroPython >= 1.21 with ROM level "extra" (ESP32, unix)
            except ImportError:
                raise _broken("zlib package, but this port has no deflate module")
            self._src = _Raw(read_into, raw, i, got)
            self._zlib = deflate.DeflateIO(self._src, deflate.ZLIB, 8 + (cmf >> 4))
            self._switch(_ZLIB)
        head = self._byte()
        if head >> 4:
            raise _broken("detools patch type %d: only 0 (sequential)" % (head >> 4))
        size = self.size = self._num()
        method = head & 0x0F
        if method == _HEATSHRINK and self._mode == _NONE:
            if self._byte() != _HS_PARAMS:
                raise _broken("heatshrink: only window 8, lookahead 7")
            self._win = bytearray(256)  # heatshrink's window starts zeroed
            self._st = array("i", (self._i, self._n, 0, 0, 0, _DATA - 128))
            self._switch(_HEATSHRINK)
        elif method != _NONE:
            # 1 lzma, 2 crle, 3 bz2, 5 zstd, 6 lz4; heatshrink inside zlib
            raise _broken("detools compression %d: only 0 (none), 4 (heatshrink), zlib" % method)
        if size <= 0:
            raise _broken("new image of %d bytes" % size)
        if size > slot_size:
            raise Fail(NO_SPACE, "new image of %d bytes, slot of %d" % (size, slot_size))
        if self._num():
            raise _broken("detools data format: not supported")
        self._made = 0  # new image bytes made
        self._from = 0  # base position
        self._run = 0  # bytes left in the current diff or extra run
        self._step = 0  # next: 0 diff size, 1 extra size, 2 base seek, 3 done

    def _switch(self, mode):
        # a decompressor takes the rest of the raw bytes; _byte() reads what it makes
        self._mode = mode
        self._data = bytearray(_DATA)
        self._i = self._n = 0

    def _more(self):
        """Refill _data; returns the byte count, 0 at the end of the patch stream."""
        mode = self._mode
        data = self._data
        if mode == _NONE:
            n = self._read(data, _RAW)
        elif mode == _ZLIB:
            try:
                n = self._zlib.readinto(data)
            except EOFError:  # the package ended inside the zlib stream
                raise _broken("patch truncated")
            except OSError as e:
                if e.errno != 22:  # EINVAL: bad deflate data or Adler-32; else the caller's
                    raise
                raise _broken("zlib stream corrupt")
        else:
            st = self._st
            while True:
                n = unshrink(self._raw, st, self._win, data)
                if n or st[0] < st[1]:
                    break
                got = self._read(self._raw, _RAW)
                if not got:
                    break
                st[0] = 0
                st[1] = got
        self._i = 0
        self._n = n
        return n

    def _need(self):
        if not self._more():
            raise _broken("patch truncated")

    def _byte(self):
        if self._i == self._n:
            self._need()
        i = self._i
        self._i = i + 1
        return self._data[i]

    def _num(self):
        first = b = self._byte()
        value = b & 0x3F
        shift = 6
        while b & 0x80:
            if shift > 20:  # 4 bytes, 27 bits: more than any image
                raise _broken("size field too long")
            b = self._byte()
            value |= (b & 0x7F) << shift
            shift += 7
        return -value if first & 0x40 else value

    def _end(self):
        """The patch must end exactly where the new image does."""
        if self._i < self._n or self._more():
            raise _broken("data after the end of the patch")
        mode = self._mode
        if mode == _HEATSHRINK:
            st = self._st
            if st[3] >= 8 or st[2]:
                raise _broken("heatshrink: bad end")
        elif mode == _ZLIB:
            src = self._src
            if src.i < src.n or self._read(self._raw, _RAW):
                raise _broken("data after the end of the patch")

    # ---- the new image
    def fill(self, out):
        """Make the next len(out) bytes of the new image in out (len(out) a multiple of 4 KiB
        for sector writes). Returns how many bytes are the image's: len(out), fewer at the end
        (the rest of out is then 0xFF, as erased flash), 0 once the image is complete and the
        whole patch has been read and checked. Raises codes.Fail for a broken patch."""
        o = 0
        room = len(out)
        ix = self._ix
        while o < room:
            run = self._run
            if run:
                if self._i == self._n:
                    self._need()
                i = self._i
                k = min(run, room - o, self._n - i)
                ix[0] = o
                ix[1] = i
                if self._step == 1:  # in a diff run
                    at = self._from - self._at
                    if at < 0 or at >= _OLD:
                        self._load(self._from)
                        at = self._from - self._at
                    k = min(k, _OLD - at)
                    ix[2] = at
                    ix[3] = k
                    add(out, self._data, self._old, ix)
                    self._from += k
                else:
                    ix[3] = k
                    copy(out, self._data, ix)
                self._i = i + k
                self._run = run - k
                self._made += k
                o += k
                continue
            step = self._step
            if step == 2:
                self._from += self._num()
                self._step = 0
            elif step == 3:
                break
            elif not step and self._made == self.size:
                self._end()
                self._step = 3
            else:
                n = self._num()
                if n < 0 or n > self.size - self._made:
                    raise _broken("patch runs past the new image")
                if not step and (self._from < 0 or self._from + n > self._base_size):
                    raise _broken("patch reads outside the base")
                self._run = n
                self._step = step + 1
        for i in range(o, room):
            out[i] = 0xFF
        return o

    def _load(self, pos):
        # _OLD bytes of the base from pos, or the last _OLD of the partition if fewer are left
        at = self._at = min(pos, self._base_size - _OLD)
        self._base.readblocks(at // SECTOR, self._old, at % SECTOR)

    def _base_digest(self):
        """The running image's appended SHA-256: what esp_partition_get_sha256() returns."""
        old = self._old
        self._load(0)
        if old[0] != 0xE9 or old[23] != 1:
            raise Fail(WRONG_BUILD, "base image has no SHA-256")
        pos = 24
        for _ in range(old[1]):
            self._load(pos)
            at = pos - self._at
            pos += 8 + (old[at + 4] | old[at + 5] << 8 | old[at + 6] << 16 | old[at + 7] << 24)
            if pos > self._base_size - 48:
                raise Fail(WRONG_BUILD, "base image overruns its partition")
        pos = (pos | 15) + 1  # after the checksum byte
        self._load(pos)
        return old[pos - self._at : pos - self._at + 32]


class _Raw(io.IOBase):
    """The patch bytes as a stream for deflate.DeflateIO, which reads one byte at a time."""

    def __init__(self, read, buf, i, n):
        self.read = read
        self.buf = buf
        self.i = i
        self.n = n

    def readinto(self, b):
        i = self.i
        if i == self.n:
            n = self.read(self.buf, _RAW)
            if not n:
                return 0
            self.n = n
            i = 0
        b[0] = self.buf[i]
        self.i = i + 1
        return 1
