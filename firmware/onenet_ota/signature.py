# The signature check before the boot switch: ESP-IDF's Secure Boot V2 format, as
# `espsecure sign-data --version 2` writes it, checked against the digests of the keys the
# device trusts (config "trusted_keys"). Imported by the cycle after the download code left
# the heap, for one check, and dropped again.
#
# A signed package: the image, padded with 0xFF to a multiple of 4 KiB, then one 4 KiB
# signature sector of up to 3 blocks of 1216 bytes (the rest 0xFF). A block, little-endian:
#     0 magic 0xE7, 1 version 2 (RSA-3072), 2-3 pad
#     4 SHA-256 of everything before the signature sector
#    36 the public key: modulus n (384), exponent e (4), R (384), M' (4); the SHA-256 of
#       these 776 bytes is the key's digest (what espsecure digest-sbv2-public-key prints
#       and what hardware Secure Boot burns into eFuse)
#   812 the RSA-PSS signature (384): MGF1-SHA-256, salt 32 bytes, over the digest at 4
#  1196 CRC32 of bytes 0-1195, then 16 bytes of zeros
# Any block whose key is trusted and whose signature verifies accepts the package (key
# rotation: sign with the old and the new key while devices trust either).
#
# Cost: the slot is read a sector at a time into the caller's sector buffer (the signature
# sector twice, the image once, for its SHA-256); beyond that only the 3072-bit ints of one
# block and their temporaries (a few KB) are allocated. The RSA is pow(s, 65537, n): 16
# modular squarings and 2 multiplications of 3072 bits per block checked.
from micropython import const
import binascii
import hashlib

from onenet_ota.codes import Fail, UPGRADE_FAILED
from onenet_ota.fota import SECTOR

_BLOCK = const(1216)
_BLOCKS = const(3)
_MAGIC = const(0xE7)
_RSA = const(2)  # the version of an RSA-3072 block
_DIGEST_AT = const(4)
_KEY_AT = const(36)  # n, then e at 420
_KEY_END = const(812)  # the signature from here
_CRC_AT = const(1196)
_LEN = const(384)  # bytes of n and of the signature
_E = const(65537)
_HASH = const(32)
_DB = const(351)  # the masked part of the encoded message: 384 - 32 - 1
_SALT_AT = const(319)  # 0x01 before the 32-byte salt: _DB - _HASH - 1 + 1


def verify(part, size, trusted, buf):
    """Check the signature of the first `size` bytes of partition `part` (a signed package:
    a multiple of 4 KiB, the last 4 KiB its signature sector). trusted: the hex SHA-256
    digests of the trusted public keys. Returns the number of the block that verified;
    Fail 206 with the reason otherwise. buf: one sector of scratch."""
    if size % SECTOR or size < 2 * SECTOR:
        raise Fail(UPGRADE_FAILED, "unsigned package: %d bytes are not an image padded to 4 KiB and a signature sector" % size)
    last = size // SECTOR - 1
    part.readblocks(last, buf)
    view = memoryview(buf)
    why = []
    found = []  # the blocks that are sound and carry a trusted key
    for i in range(_BLOCKS):
        block = view[i * _BLOCK : (i + 1) * _BLOCK]
        if block[0] != _MAGIC:  # unused (0xFF), or no signature sector at all
            continue
        if binascii.crc32(block[:_CRC_AT]) != int.from_bytes(block[_CRC_AT : _CRC_AT + 4], "little"):
            why.append("block %d: CRC32 mismatch" % i)
        elif block[1] != _RSA:
            why.append("block %d: version %d, not RSA-3072" % (i, block[1]))
        else:
            key = binascii.hexlify(hashlib.sha256(block[_KEY_AT:_KEY_END]).digest()).decode()
            if key in trusted:
                found.append(i)
            else:
                why.append("block %d: key %s... not trusted" % (i, key[:16]))
    if not found:
        raise Fail(UPGRADE_FAILED, "signature: " + ("; ".join(why) if why else "no signature block (unsigned package)"))

    sha = hashlib.sha256()
    for sector in range(last):
        part.readblocks(sector, buf)
        sha.update(buf)
    digest = sha.digest()
    part.readblocks(last, buf)
    for i in found:
        reason = _check(view[i * _BLOCK : (i + 1) * _BLOCK], digest)
        if reason is None:
            return i
        why.append("block %d: %s" % (i, reason))
    raise Fail(UPGRADE_FAILED, "signature: " + "; ".join(why))


def _check(block, digest):
    """None if the block signs `digest` (the SHA-256 of the image), else why not."""
    if bytes(block[_DIGEST_AT : _DIGEST_AT + _HASH]) != digest:
        return "the signed SHA-256 is not the image's"
    # the trusted digest pins n and e: e is 65537 (espsecure's), n 3072 bits
    n = int.from_bytes(block[_KEY_AT : _KEY_AT + _LEN], "little")
    s = int.from_bytes(block[_KEY_END : _KEY_END + _LEN], "little")
    if s >= n:
        return "signature out of range"
    em = bytearray(pow(s, _E, n).to_bytes(_LEN, "big"))
    n = s = None
    # EMSA-PSS (RFC 8017 9.1.2), emBits 3071: maskedDB (351) | H (32) | 0xBC
    if em[_LEN - 1] != 0xBC or em[0] & 0x80:
        return "RSA-PSS: signature does not verify"
    h = bytes(em[_DB : _DB + _HASH])
    for c in range((_DB + _HASH - 1) // _HASH):  # MGF1-SHA-256: 11 blocks of mask
        mask = hashlib.sha256(h)
        mask.update(c.to_bytes(4, "big"))
        at = c * _HASH
        for j, m in enumerate(mask.digest()):
            if at + j < _DB:
                em[at + j] ^= m
    em[0] &= 0x7F
    for k in range(_SALT_AT - 1):
        if em[k]:
            return "RSA-PSS: bad padding"
    if em[_SALT_AT - 1] != 1:
        return "RSA-PSS: bad padding"
    check = hashlib.sha256(bytes(8))
    check.update(digest)
    check.update(em[_SALT_AT:_DB])
    if check.digest() != h:
        return "RSA-PSS: signature does not verify"
    return None
