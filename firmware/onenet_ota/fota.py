# The firmware slot: the next OTA app partition, written a sector at a time, checked as an ESP
# app image before the boot switch (image.py), confirmed after the reboot.
#
# Every sector is written with writeblocks(n, buf) without an offset, which erases that one
# sector and writes it: each sector is erased exactly once per download, and NOR flash never
# sees a write over data that was not erased.
from esp32 import Partition
from micropython import const
import struct

from onenet_ota.codes import Fail, UPGRADE_FAILED

SECTOR = const(4096)

_IMAGE_MAGIC = const(0xE9)
_DESC_MAGIC = const(0xABCD5432)
_HEADER_LEN = const(24)
_SEGMENT_HEADER_LEN = const(8)  # the first segment's header precedes its data
# esp_app_desc_t sits at the start of the first segment's data; its version is 32 bytes at +16
_DESC_AT = const(_HEADER_LEN + _SEGMENT_HEADER_LEN)
_VERSION_AT = const(_DESC_AT + 16)
_VERSION_LEN = const(32)

def describe(buf):
    """(chip id, version) of the image whose first sector is in buf. Not an app image:
    Fail 206 (the package is not a sound image at all)."""
    if buf[0] != _IMAGE_MAGIC:
        raise Fail(UPGRADE_FAILED, "not an ESP app image (magic 0x%02x)" % buf[0])
    if struct.unpack_from("<I", buf, _DESC_AT)[0] != _DESC_MAGIC:
        raise Fail(UPGRADE_FAILED, "no app description in the first segment")
    version = bytes(buf[_VERSION_AT : _VERSION_AT + _VERSION_LEN])
    end = version.find(b"\0")
    return buf[12] | buf[13] << 8, (version if end < 0 else version[:end]).decode()


def running_partition():
    return Partition(Partition.RUNNING)  # type: ignore[arg-type]  # the stubs type the id as str


def running_build(buf):
    """(chip id, version) of the firmware running now, read from its own app description."""
    running_partition().readblocks(0, buf)
    return describe(buf)


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
