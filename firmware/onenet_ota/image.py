# The image check before the boot switch, as ESP-IDF's bootloader does it (esp_image_format):
# the header, the segment table, the XOR checksum of the segment data and the appended
# SHA-256, plus the chip and the version the task promised. Imported for one check and
# dropped again: a download never has it in the heap.
#
# Software anti-rollback: the app description's secure_version (ESP-IDF's
# CONFIG_BOOTLOADER_APP_SECURE_VERSION, 0 when unused) must not be lower than the running
# image's. A build that fixes a security hole raises it, and no allow_downgrade brings an
# older one back (hardware anti-rollback, with the version in eFuse, does the same at boot).
from micropython import const
import hashlib
import struct

from onenet_ota.codes import Fail, WRONG_BUILD, UPGRADE_FAILED
from onenet_ota.fota import SECTOR, describe, running_partition

_HEADER_LEN = const(24)
_SEGMENT_HEADER_LEN = const(8)
_MAX_SEGMENTS = const(16)  # ESP-IDF refuses more
_CHECKSUM_SEED = const(0xEF)
_DIGEST_LEN = const(32)
_SECURE_AT = const(36)  # esp_app_desc_t.secure_version: after the headers and the desc's magic

try:
    from onenet_ota._xor import xor_range
except (ImportError, SyntaxError, ValueError):  # no native emitter, or .mpy for another arch

    def xor_range(buf, start, end, acc):
        for i in range(start, end):
            acc ^= buf[i]
        return acc


def verify(part, size, chip, version, buf):
    """Check the image in the first `size` bytes of partition `part` the way the bootloader
    will, plus the chip and version the task promised and a secure_version not below the
    running image's. Fail if it fails: 204 for another chip, version or a lower
    secure_version (a sound image, but not a build to take), 206 for an image
    that is not sound. buf: one sector of scratch."""
    running_partition().readblocks(0, buf)
    floor = struct.unpack_from("<I", buf, _SECURE_AT)[0]
    part.readblocks(0, buf)
    got_chip, got_version = describe(buf)
    if got_chip != chip:
        raise Fail(WRONG_BUILD, "image is for chip %d, this is chip %d" % (got_chip, chip))
    if got_version != version:
        raise Fail(WRONG_BUILD, "image is version %r, the task promised %r" % (got_version, version))
    secure = struct.unpack_from("<I", buf, _SECURE_AT)[0]
    if secure < floor:
        raise Fail(WRONG_BUILD, "image has secure_version %d, the running one %d" % (secure, floor))
    count, hashed = buf[1], buf[23] == 1
    if not 0 < count <= _MAX_SEGMENTS:
        raise Fail(UPGRADE_FAILED, "image has %d segments" % count)

    # Segment headers first (tiny offset reads), so the data pass below knows its ranges.
    spans = []
    head = bytearray(_SEGMENT_HEADER_LEN)
    pos = _HEADER_LEN
    for _ in range(count):
        if pos + _SEGMENT_HEADER_LEN > size:
            raise Fail(UPGRADE_FAILED, "segment header beyond the package")
        part.readblocks(pos // SECTOR, head, pos % SECTOR)
        length = struct.unpack_from("<I", head, 4)[0]
        pos += _SEGMENT_HEADER_LEN
        if pos + length > size:
            raise Fail(UPGRADE_FAILED, "segment of %d bytes overruns the package" % length)
        spans.append((pos, pos + length))
        pos += length
    checksum_at = pos | 15  # padded so the checksum ends a 16-byte block
    end = checksum_at + 1
    if end + (_DIGEST_LEN if hashed else 0) > size:
        raise Fail(UPGRADE_FAILED, "image truncated")

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
        raise Fail(UPGRADE_FAILED, "segment checksum mismatch")
    if hashed:
        digest = bytearray(_DIGEST_LEN)
        part.readblocks(end // SECTOR, digest, end % SECTOR)
        if sha.digest() != digest:
            raise Fail(UPGRADE_FAILED, "appended SHA-256 mismatch")
