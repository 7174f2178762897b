"""The fake esp32/machine/network modules, run in the real unix micropython, against the
semantics of ports/esp32 and ESP-IDF. Each rule the rig enforces is also shown to fire."""
import pytest

from sim.device import HARD_RESET, NEW, PWRON_RESET, RESET_EXIT, SECTOR, Device, ota_entry
from sim.esp_image import build_app_image

OTA_1 = 0x190000
VFS = 0x310000
HEAP_BUDGET = 7 * 1024 + 512  # measured ~7.1 KiB from .py on the 64-bit unix port


@pytest.fixture(scope="module")
def factory_image():
    return build_app_image("1.0", 128 * 1024)


@pytest.fixture
def device(tmp_path, factory_image):
    """A device after its first boot (the bootloader has written otadata once)."""
    dev = Device(tmp_path / "dev", image=factory_image)
    dev.boot(["-c", "pass"])
    dev.baseline = dev.erase_counts()
    assert dev.baseline == {0xD000 // SECTOR: 1}
    return dev


def new_erases(device):
    now = device.erase_counts()
    return {s: n - device.baseline.get(s, 0) for s, n in now.items() if n != device.baseline.get(s, 0)}


def run(device, code, **kw):
    """Boot the device with `code` as the program; it must print OK and corrupt nothing."""
    result = device.boot(["-c", code], **kw)
    assert result.returncode == 0, result.output
    assert result.output.rstrip().endswith("OK"), result.output
    assert device.corruptions() == []
    return result


def test_partition_table_info_find_repr(device):
    run(device, """
import esp32
from esp32 import Partition as P
assert (P.BOOT, P.RUNNING, P.TYPE_APP, P.TYPE_DATA) == (0, 1, 0, 1)
assert [p.info() for p in P.find()] == [(0, 16, 0x10000, 0x180000, 'ota_0', False),
                                        (0, 17, 0x190000, 0x180000, 'ota_1', False)]
data = [p.info() for p in P.find(P.TYPE_DATA)]
assert data == [(1, 2, 0x9000, 0x4000, 'nvs', False), (1, 0, 0xd000, 0x2000, 'otadata', False),
                (1, 1, 0xf000, 0x1000, 'phy_init', False), (1, 0x81, 0x310000, 0xf0000, 'vfs', False)], data
assert [p.info()[4] for p in P.find(0xff, 0xff, 'vfs')] == ['vfs']
assert P.find(type=P.TYPE_APP, subtype=0x11)[0].info()[4] == 'ota_1'
assert P.find(label='nope') == []
assert repr(P('ota_1')) == '<Partition type=0, subtype=17, address=1638400, size=1572864, label=ota_1, encrypted=0>'
assert P(P.RUNNING).info()[4] == 'ota_0' and P(P.BOOT).info()[4] == 'ota_0'
try:
    P('nope')
    raise AssertionError
except OSError as e:
    assert e.errno == 2
try:
    P(7)
    raise AssertionError
except ValueError:
    pass
print('OK')
""")


def test_get_next_update(device):
    run(device, """
from esp32 import Partition as P
assert P(P.RUNNING).get_next_update().info()[4] == 'ota_1'
assert P('ota_1').get_next_update().info()[4] == 'ota_0'
# as esp_ota_get_next_update_partition(): a non-OTA partition gives the first OTA slot
assert P('vfs').get_next_update().info()[4] == 'ota_0'
print('OK')
""")


def test_ioctl(device):
    run(device, """
from esp32 import Partition as P
p = P('vfs')
assert [p.ioctl(op, 0) for op in (1, 2, 3)] == [0, 0, 0]
assert p.ioctl(4, 0) == 0xf0000 // 4096 and p.ioctl(5, 0) == 4096
assert p.ioctl(6, 3) == 0
assert p.ioctl(99, 0) is None
assert P('vfs', 512).ioctl(4, 0) == 0xf0000 // 512 and P('vfs', 512).ioctl(6, 0) == -22
print('OK')
""")
    assert new_erases(device) == {VFS // SECTOR + 3: 1}


def test_writeblocks_erases_then_writes_and_counts(device):
    run(device, """
from esp32 import Partition as P
p = P('ota_1')
buf = bytearray(8192)
for i in range(8192):
    buf[i] = i & 0xff
p.writeblocks(2, buf)       # erase sectors 2 and 3 of the slot, then write
p.writeblocks(2, buf)       # again: erased first, so no NOR violation
back = bytearray(8192)
p.readblocks(2, back)
assert back == buf
small = bytearray(3)
p.readblocks(2, small, 4093)
assert small == bytes([253, 254, 255])
print('OK')
""")
    sectors = OTA_1 // SECTOR
    assert new_erases(device) == {sectors + 2: 2, sectors + 3: 2}
    assert device.read(OTA_1 + 2 * SECTOR, 4) == bytes([0, 1, 2, 3])


def test_write_with_offset_does_not_erase(device):
    run(device, """
from esp32 import Partition as P
p = P('vfs')
p.ioctl(6, 0)
p.writeblocks(0, b'\\x0f\\xf0', 10)    # on erased flash: fine
p.writeblocks(0, b'\\x0e\\x00', 10)    # only clears bits: fine
buf = bytearray(2)
p.readblocks(0, buf, 10)
assert buf == b'\\x0e\\x00', buf
print('OK')
""")
    assert new_erases(device) == {VFS // SECTOR: 1}


def test_nor_violation_is_recorded(device):
    result = device.boot(["-c", """
from esp32 import Partition as P
p = P('vfs')
p.ioctl(6, 1)
p.writeblocks(1, b'\\x00', 5)
p.writeblocks(1, b'\\x01', 5)   # needs a 0 -> 1 bit without an erase
buf = bytearray(1)
p.readblocks(1, buf, 5)
print(buf[0])
"""])
    assert result.output.split() == ["0"]  # the stored byte is old & new, as NOR flash does
    assert device.corruptions() == [(VFS + SECTOR + 5, 0, 1)]


def test_out_of_range_and_unaligned_raise_like_esp_idf(device):
    run(device, """
from esp32 import Partition as P
p = P('phy_init')
def err(f, *a):
    try:
        f(*a)
    except OSError as e:
        return e.args
    raise AssertionError('no error')
assert err(p.readblocks, 1, bytearray(1)) == (-0x104, 'ESP_ERR_INVALID_SIZE')
assert err(p.readblocks, 2, bytearray(1)) == (-0x102, 'ESP_ERR_INVALID_ARG')
assert err(p.readblocks, 0, bytearray(1), 4096) == (-0x104, 'ESP_ERR_INVALID_SIZE')
assert err(p.writeblocks, 0, bytearray(100)) == (-0x104, 'ESP_ERR_INVALID_SIZE')
assert err(p.writeblocks, 1, bytearray(4096)) == (-0x104, 'ESP_ERR_INVALID_SIZE')
assert err(p.writeblocks, 0, bytearray(2), 4095) == (-0x104, 'ESP_ERR_INVALID_SIZE')
print('OK')
""")
    assert new_erases(device) == {}


def test_small_blocks_keep_the_rest_of_the_sector(device):
    run(device, """
from esp32 import Partition as P
p = P('vfs')
p.writeblocks(0, b'\\xaa' * 4096)
q = P('vfs', 512)
q.writeblocks(3, b'\\x55' * 512)      # erases the whole sector, rewrites the other 3.5 KiB
buf = bytearray(4096)
p.readblocks(0, buf)
assert buf == b'\\xaa' * 1536 + b'\\x55' * 512 + b'\\xaa' * 2048
print('OK')
""")
    assert new_erases(device) == {VFS // SECTOR: 2}


def test_flash_persists_across_processes(device):
    run(device, "from esp32 import Partition as P\nP('nvs').writeblocks(1, b'persist!' * 512)\nprint('OK')")
    run(device, """
from esp32 import Partition as P
buf = bytearray(8)
P('nvs').readblocks(1, buf, 8)
assert buf == b'persist!'
print('OK')
""")


def test_no_allocation_in_block_io(device):
    run(device, """
import gc
from esp32 import Partition as P
def io(p, buf):
    for n in range(8):
        p.writeblocks(n, buf)
        p.readblocks(n, buf)
        p.readblocks(n, buf, 16)
        p.ioctl(6, n)
        p.writeblocks(n, buf, 0)
p = P('vfs')
buf = bytearray(4096)
io(p, buf)    # warm up
gc.collect()
before = after = gc.mem_alloc()
for _ in range(20):
    io(p, buf)
after = gc.mem_alloc()
# 800 calls: a single small allocation per call would show as >= 12 KiB; the VM itself
# may allocate once (32 bytes seen) after a collection
assert after - before <= 32, after - before
print('OK')
""")


def test_import_heap_cost(device):
    result = run(device, """
import gc
gc.collect()
before = gc.mem_alloc()
import esp32
gc.collect()
print(gc.mem_alloc() - before)
print('OK')
""", heapsize="64k")
    cost = int(result.output.split()[0])
    print("heap cost of importing the fake esp32: %d bytes" % cost)
    assert cost < HEAP_BUDGET


def test_littlefs_on_vfs(device):
    run(device, """
import os, esp32
p = esp32.Partition('vfs')
os.VfsLfs2.mkfs(p)
os.mount(os.VfsLfs2(p), '/flash')
with open('/flash/hello.txt', 'w') as f:
    f.write('hello' * 1000)
os.umount('/flash')
print('OK')
""")
    run(device, """
import os, esp32
os.mount(os.VfsLfs2(esp32.Partition('vfs')), '/flash')
with open('/flash/hello.txt') as f:
    assert f.read() == 'hello' * 1000
print('OK')
""")


def test_set_boot_refuses_an_invalid_image(device):
    before = device.boot_state()
    run(device, """
from esp32 import Partition as P
try:
    P('ota_1').set_boot()       # erased slot
    raise AssertionError
except OSError as e:
    assert e.args == (-0x1503, 'ESP_ERR_OTA_VALIDATE_FAILED'), e.args
print('OK')
""")
    assert device.boot_state() == before


@pytest.mark.parametrize("damage", ["byte", "wrong_chip"])
def test_set_boot_refuses_damaged_images(device, damage):
    image = bytearray(build_app_image("2.0", 100_000, chip="esp32s3" if damage == "wrong_chip" else "esp32"))
    if damage == "byte":
        image[5000] ^= 0x01
    device.flash_image("ota_1", bytes(image))
    run(device, """
from esp32 import Partition as P
try:
    P('ota_1').set_boot()
    raise AssertionError
except OSError as e:
    assert e.errno == -0x1503
print('OK')
""")


def test_set_boot_writes_otadata_as_esp_idf(device):
    device.flash_image("ota_1", build_app_image("2.0", 100_000))
    run(device, """
from esp32 import Partition as P
P(P.RUNNING).get_next_update().set_boot()
assert P(P.BOOT).info()[4] == 'ota_1'
assert P(P.RUNNING).info()[4] == 'ota_0'
print('OK')
""")
    state = device.boot_state()
    assert (state[0]["seq"], state[0]["state_name"]) == (1, "VALID")  # written by the bootloader
    assert (state[1]["seq"], state[1]["state_name"], state[1]["crc_ok"]) == (2, "NEW", True)
    assert device.read(0xD000 + SECTOR, 32) == ota_entry(2, NEW)


def test_mark_app_valid(device):
    run(device, """
from esp32 import Partition as P
P.mark_app_valid_cancel_rollback()     # already VALID: no write
print('OK')
""")
    assert new_erases(device) == {}


def test_machine_and_network(device):
    result = device.boot(["-c", """
import machine, network
assert machine.reset_cause() == machine.PWRON_RESET
assert len(machine.unique_id()) == 6
w = network.WLAN(network.STA_IF)
w.active(True)
assert not w.isconnected()
w.connect('ssid', 'key')
assert network.WLAN(network.STA_IF).isconnected()
assert w.status() == network.STAT_GOT_IP and w.status('rssi') == -70
assert w.config('mac') == machine.unique_id()
assert w.ifconfig()[0] != '0.0.0.0' and w.scan() == []
wdt = machine.WDT(timeout=10000)
wdt.feed()
print('resetting')
machine.reset()
print('not reached')
"""], env={"FAKE_ESP32_RSSI": "-70"})
    assert result.returncode == RESET_EXIT and result.reset, result.output
    assert "not reached" not in result.output
    result = device.boot(["-c", "import machine\nprint(machine.reset_cause())"])
    assert result.output.split() == [str(HARD_RESET)]
    assert result.reset_cause == HARD_RESET
    assert device.boot(["-c", "import machine\nprint(machine.reset_cause())"]).output.split() == [str(PWRON_RESET)]


def test_missing_device_dir_is_a_clear_error(tmp_path):
    from sim import micropython
    env = {"FAKE_ESP32_DIR": ""}
    result = micropython.run(["-c", "import esp32"], env=env)
    assert result.returncode == 1 and "FAKE_ESP32_DIR" in result.stderr + result.stdout
