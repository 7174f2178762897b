# The firmware slot: the next OTA app partition, written a sector at a time, checked as an ESP
# app image before the boot switch, confirmed after the reboot.
#
# Every sector is written with writeblocks(n, buf) without an offset, which erases that one
# sector and writes it: each sector is erased exactly once per download, and NOR flash never
# sees a write over data that was not erased.
from esp32 import Partition
from micropython import const
import hashlib
import struct

SECTOR = const(4096)

_IMAGE_MAGIC = const(0xE9)
_DESC_MAGIC = const(0xABCD5432)
_HEADER_LEN = const(24)
_SEGMENT_HEADER_LEN = const(8)
_MAX_SEGMENTS = const(16)  # ESP-IDF refuses more
_CHECKSUM_SEED = const(0xEF)
_DIGEST_LEN = const(32)
# esp_app_desc_t sits at the start of the first segment's data; its version is 32 bytes at +16
_DESC_AT = const(_HEADER_LEN + _SEGMENT_HEADER_LEN)
_VERSION_AT = const(_DESC_AT + 16)
_VERSION_LEN = const(32)

# Report codes an image check ends in: the package is fine but is not the build the task
# promised (wrong chip or version) -> 204; the package is not a sound image at all -> 206.
WRONG_BUILD = const(204)
BROKEN_IMAGE = const(206)

try:
    from onenet_ota._xor import xor_range
except (ImportError, SyntaxError, ValueError):  # no native emitter, or .mpy for another arch

    def xor_range(buf, start, end, acc):
        for i in range(start, end):
            acc ^= buf[i]
        return acc


class ImageError(Exception):
    def __init__(self, code, why):
        super().__init__(why)
        self.code = code


def _describe(buf):
    """(chip id, version) of the image whose first sector is in buf."""
    if buf[0] != _IMAGE_MAGIC:
        raise ImageError(BROKEN_IMAGE, "not an ESP app image (magic 0x%02x)" % buf[0])
    if struct.unpack_from("<I", buf, _DESC_AT)[0] != _DESC_MAGIC:
        raise ImageError(BROKEN_IMAGE, "no app description in the first segment")
    version = bytes(buf[_VERSION_AT : _VERSION_AT + _VERSION_LEN])
    end = version.find(b"\0")
    return buf[12] | buf[13] << 8, (version if end < 0 else version[:end]).decode()


def running_partition():
    return Partition(Partition.RUNNING)  # type: ignore[arg-type]  # the stubs type the id as str


def running_build(buf):
    """(chip id, version) of the firmware running now, read from its own app description."""
    running_partition().readblocks(0, buf)
    return _describe(buf)


def confirm():
    """Keep the running image: cancels the bootloader's rollback of a pending-verify boot."""
    Partition.mark_app_valid_cancel_rollback()


class Slot:
    """The partition the next firmware goes to."""

    def __init__(self):
        self.partition = running_partition().get_next_update()
        self.size = self.partition.info()[3]

    def write(self, sector, buf):
        self.partition.writeblocks(sector, buf)

    def read(self, sector, buf):
        self.partition.readblocks(sector, buf)

    def switch(self):
        self.partition.set_boot()

    def verify(self, size, chip, version, buf):
        """Check the image in the first `size` bytes the way the bootloader will, plus the
        chip and version the task promised. buf: one sector of scratch."""
        part = self.partition
        part.readblocks(0, buf)
        got_chip, got_version = _describe(buf)
        if got_chip != chip:
            raise ImageError(WRONG_BUILD, "image is for chip %d, this is chip %d" % (got_chip, chip))
        if got_version != version:
            raise ImageError(WRONG_BUILD, "image is version %r, the task promised %r" % (got_version, version))
        count, hashed = buf[1], buf[23] == 1
        if not 0 < count <= _MAX_SEGMENTS:
            raise ImageError(BROKEN_IMAGE, "image has %d segments" % count)

        # Segment headers first (tiny offset reads), so the data pass below knows its ranges.
        spans = []
        head = bytearray(_SEGMENT_HEADER_LEN)
        pos = _HEADER_LEN
        for _ in range(count):
            if pos + _SEGMENT_HEADER_LEN > size:
                raise ImageError(BROKEN_IMAGE, "segment header beyond the package")
            part.readblocks(pos // SECTOR, head, pos % SECTOR)
            length = struct.unpack_from("<I", head, 4)[0]
            pos += _SEGMENT_HEADER_LEN
            if pos + length > size:
                raise ImageError(BROKEN_IMAGE, "segment of %d bytes overruns the package" % length)
            spans.append((pos, pos + length))
            pos += length
        checksum_at = pos | 15  # padded so the checksum ends a 16-byte block
        end = checksum_at + 1
        if end + (_DIGEST_LEN if hashed else 0) > size:
            raise ImageError(BROKEN_IMAGE, "image truncated")

        # One pass over the sectors: SHA-256 of everything before the digest, XOR of segment data.
        sha = hashlib.sha256()
        acc = _CHECKSUM_SEED
        view = memoryview(buf)
        base = 0
        for sector in range((end + SECTOR - 1) // SECTOR):
            part.readblocks(sector, buf)
            base = sector * SECTOR
            top = base + SECTOR
            for start, stop in spans:
                if start < top and stop > base:
                    acc = xor_range(buf, max(start, base) - base, min(stop, top) - base, acc)
            sha.update(buf if top <= end else view[: end - base])
        if acc != buf[(checksum_at - base)]:
            raise ImageError(BROKEN_IMAGE, "segment checksum mismatch")
        if hashed:
            digest = bytearray(_DIGEST_LEN)
            part.readblocks(end // SECTOR, digest, end % SECTOR)
            if sha.digest() != digest:
                raise ImageError(BROKEN_IMAGE, "appended SHA-256 mismatch")
