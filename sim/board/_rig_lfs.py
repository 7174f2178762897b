# Test rig, device side (not firmware): the LittleFS a board mounts over its "vfs" partition,
# here over the fake flash, and a bundle file put into sota.Stage the way a download fills it.
# Shared by host_tests/test_sota_unit.py and the bench's sota row.
import os

import esp32


def mount(mkfs=False):
    part = esp32.Partition("vfs")
    if mkfs:
        os.VfsLfs2.mkfs(part)
    os.mount(os.VfsLfs2(part), "/flash")
    os.chdir("/flash")


def stage(sota, path, buf):
    """The file at path into a sota.Stage, a sector at a time, the last one padded with 0xFF as
    the download pads it. Returns its size."""
    with open(path, "rb") as src:
        src.seek(0, 2)
        size = src.tell()
        src.seek(0)
        st = sota.Stage(size)
        at = 0
        while at < size:
            n = src.readinto(buf)
            for i in range(n, len(buf)):
                buf[i] = 0xFF
            st.write(at // 4096, buf)
            at += n
        st.close()
    return size
