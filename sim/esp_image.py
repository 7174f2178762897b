"""Build and validate ESP app images (what an OTA slot holds), with esptool's Python API.

``build_app_image`` makes a real, bootable-looking app image: a flash-mapped DROM segment
that starts with the ``esp_app_desc_t`` (so the version sits where ESP-IDF reads it), RAM
segments, a large flash-mapped IROM segment filled deterministically, the XOR checksum
and the appended SHA-256, all laid out by ``esptool.bin_image`` exactly as for a real
firmware. ``validate_app_image`` checks what ESP-IDF's ``esp_image_verify`` checks and
says precisely why an image is refused (``ValueError``); esptool's ``image-info`` is not
enough, since it exits 0 even for a bad checksum.
"""
from __future__ import annotations

import hashlib
import random
import struct

from esptool.bin_image import ELFSection, LoadFirmwareImage, ESP32FirmwareImage
from esptool.targets import CHIP_DEFS

IMAGE_MAGIC = 0xE9
CHECKSUM_SEED = 0xEF
APP_DESC_MAGIC = 0xABCD5432
HEADER_LEN = 24  # common header (8) + extended header (16)
SEGMENT_HEADER_LEN = 8
APP_DESC_LEN = 256
MAX_SEGMENTS = 16
MMU_PAGE = 0x10000

CHIPS = {name: rom.IMAGE_CHIP_ID for name, rom in CHIP_DEFS.items() if hasattr(rom, "IMAGE_CHIP_ID")}
CHIP_NAMES = {chip_id: name for name, chip_id in CHIPS.items()}


def _image_class(chip: str):
    rom = CHIP_DEFS[chip]
    for cls in _subclasses(ESP32FirmwareImage):
        if cls.ROM_LOADER is rom:
            return cls
    raise ValueError(f"esptool has no app image class for {chip}")


def _subclasses(cls):
    yield cls
    for sub in cls.__subclasses__():
        yield from _subclasses(sub)


def _ram_ranges(rom):
    return {name: (start, end) for start, end, name in rom.MEMORY_MAP}


def app_desc(version: str, project: str = "micropython", secure_version: int = 0) -> bytes:
    """esp_app_desc_t: magic, secure_version, reserv1[2], version[32], project_name[32],
    time[16], date[16], idf_ver[32], app_elf_sha256[32], efuse revs, mmu page (log2), reserved."""
    if len(version.encode()) > 31:
        raise ValueError("version longer than 31 bytes does not fit esp_app_desc_t")
    desc = struct.pack(
        "<II8x32s32s16s16s32s32sHHB3x72x",
        APP_DESC_MAGIC, secure_version,
        version.encode(), project.encode()[:31], b"00:00:00", b"Jan  1 2025", b"v5.5.1",
        hashlib.sha256(f"{project}-{version}".encode()).digest(),
        0, 0xFFFF, 16,
    )
    assert len(desc) == APP_DESC_LEN
    return desc


def build_app_image(version: str, size: int | None = None, *, chip: str = "esp32",
                    project: str = "micropython", seed: int = 0, secure_version: int = 0) -> bytes:
    """A valid app image for `chip` carrying `version`, about `size` bytes long (>= 16 KiB,
    default 256 KiB).

    The same arguments always give the same bytes.
    """
    if chip not in CHIPS:
        raise ValueError(f"unknown chip {chip!r}")
    size = size or 256 * 1024
    cls = _image_class(chip)
    rom = cls.ROM_LOADER
    ram = _ram_ranges(rom)
    rng = random.Random(f"{seed}:{chip}:{version}")
    dram = rng.randbytes(0x1000)
    iram = rng.randbytes(0x2000)
    desc = app_desc(version, project, secure_version)
    # An image below ~96 KiB cannot hold an IROM segment (it starts on the second MMU
    # page), so small images keep all filler in the DROM segment.
    with_text = size >= 0x18000
    rodata_len = (size // 4 if with_text else size - 0x3100) & ~3
    text_len = (size - rodata_len) & ~3
    for _ in range(4):  # padding depends on the layout: converge on the asked size
        image = cls()
        image.entrypoint = ram["IRAM"][0] + 0x100 if "IRAM" in ram else rom.IROM_MAP_START
        image.segments = [
            ELFSection(b".flash.appdesc", rom.DROM_MAP_START + 0x20,
                       desc + _filler(seed, "rodata", max(0, rodata_len - APP_DESC_LEN)), 0),
            ELFSection(b".dram0.data", ram["DRAM"][0] + 0x10000, dram, 0),
            ELFSection(b".iram0.text", ram["IRAM"][0], iram, 0),
        ]
        if with_text:
            image.segments.append(
                ELFSection(b".flash.text", rom.IROM_MAP_START + 0x20, _filler(seed, "text", text_len), 0))
        data = image.save(None)
        miss = (size - len(data)) & ~3 if size >= len(data) else -((len(data) - size + 3) & ~3)
        if abs(miss) < 64:
            break
        if with_text:
            text_len = max(0x1000, text_len + miss)
        else:
            rodata_len = max(APP_DESC_LEN, rodata_len + miss)
    return data


def _filler(seed: int, what: str, n: int) -> bytes:
    # deterministic for (seed, what, n): a fresh generator per length keeps retries reproducible
    return random.Random(f"{what}:{seed}:{n}").randbytes(n)


def _xor_bytes(b: bytes) -> int:
    # XOR of all bytes, by folding the number in halves (fast for megabytes)
    n = int.from_bytes(b, "little")
    width = len(b)
    while width > 1:
        half = (width + 1) // 2
        n = (n & ((1 << 8 * half) - 1)) ^ (n >> 8 * half)
        width = half
    return n


def app_version(data: bytes) -> str:
    """The version string of the app description (bytes 16..48 of the first segment's data)."""
    at = HEADER_LEN + SEGMENT_HEADER_LEN
    if len(data) < at + APP_DESC_LEN:
        raise ValueError("truncated: no room for the app description")
    magic, = struct.unpack_from("<I", data, at)
    if magic != APP_DESC_MAGIC:
        raise ValueError(f"no app description: magic {magic:#010x}, expected {APP_DESC_MAGIC:#010x}")
    return _cstr(data[at + 16:at + 48])


def _cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def validate_app_image(data: bytes, *, chip: str | None = None, version: str | None = None) -> dict:
    """Check an app image as ESP-IDF does before booting it; `data` may be a whole partition
    (trailing bytes after the image are ignored). Returns chip, chip_id, version, project,
    size (bytes incl. checksum and digest), segments, entry, hash_appended, sha256.
    Raises ValueError with the reason."""
    data = bytes(data)
    if len(data) < HEADER_LEN:
        raise ValueError(f"truncated: {len(data)} bytes, shorter than the image header")
    if data[0] != IMAGE_MAGIC:
        raise ValueError(f"bad magic {data[0]:#04x}, expected {IMAGE_MAGIC:#04x}")
    nseg = data[1]
    chip_id, = struct.unpack_from("<H", data, 12)
    name = CHIP_NAMES.get(chip_id)
    if chip is not None and chip_id != CHIPS[chip]:
        raise ValueError(f"wrong chip id {chip_id} ({name or 'unknown'}), expected {CHIPS[chip]} ({chip})")
    if name is None:
        raise ValueError(f"unknown chip id {chip_id}")
    if nseg == 0 or nseg > MAX_SEGMENTS:
        raise ValueError(f"bad segment count {nseg} (1..{MAX_SEGMENTS})")
    if data[23] not in (0, 1):
        raise ValueError(f"bad hash_appended byte {data[23]:#04x}")
    hashed = data[23] == 1
    rom = CHIP_DEFS[name]
    pos = HEADER_LEN
    checksum = CHECKSUM_SEED
    for i in range(nseg):
        if pos + SEGMENT_HEADER_LEN > len(data):
            raise ValueError(f"truncated: segment {i} header at {pos:#x} is past the end")
        addr, length = struct.unpack_from("<II", data, pos)
        pos += SEGMENT_HEADER_LEN
        if length & 3:
            raise ValueError(f"segment {i} length {length:#x} is not a multiple of 4")
        if pos + length > len(data):
            raise ValueError(f"truncated: segment {i} ({length:#x} bytes at {pos:#x}) runs past the end")
        mapped = (rom.IROM_MAP_START <= addr < rom.IROM_MAP_END
                  or rom.DROM_MAP_START <= addr < rom.DROM_MAP_END)
        if mapped and pos % MMU_PAGE != addr % MMU_PAGE:
            raise ValueError(f"segment {i} at {addr:#x} is not MMU-page aligned with its file offset {pos:#x}")
        checksum ^= _xor_bytes(data[pos:pos + length])
        pos += length
    end = (pos + 16) & ~15  # the checksum is the last byte of the 16-byte padded image
    if end + 32 * hashed > len(data):
        raise ValueError("truncated: checksum or SHA-256 digest missing")
    if data[end - 1] != checksum:
        raise ValueError(f"checksum mismatch: stored {data[end - 1]:#04x}, computed {checksum:#04x}")
    digest = hashlib.sha256(data[:end]).digest()
    if hashed and data[end:end + 32] != digest:
        raise ValueError("SHA-256 digest mismatch")
    try:
        LoadFirmwareImage(name, data[:end + 32 * hashed])
    except Exception as e:  # esptool must accept it too
        raise ValueError(f"esptool refuses the image: {e}") from e
    found = app_version(data)
    if version is not None and found != version:
        raise ValueError(f"version mismatch: image has {found!r}, expected {version!r}")
    at = HEADER_LEN + SEGMENT_HEADER_LEN
    return {
        "chip": name, "chip_id": chip_id, "version": found,
        "project": _cstr(data[at + 48:at + 80]),
        "size": end + 32 * hashed, "segments": nseg,
        "entry": struct.unpack_from("<I", data, 4)[0],
        "hash_appended": hashed, "sha256": digest.hex(),
    }
