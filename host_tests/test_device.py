"""sim/device.py: the board runner and ESP-IDF's bootloader with app rollback."""
import pytest

from sim.device import (ABORTED, CUT_EXIT, HARD_RESET, NEW, PENDING_VERIFY, PWRON_RESET,
                          RESET_EXIT, SECTOR, SOFT_RESET, SOFT_RESET_EXIT, VALID, Device)
from sim.esp_image import build_app_image

SWITCH = """
import esp32, machine
esp32.Partition(esp32.Partition.RUNNING).get_next_update().set_boot()
machine.reset()
"""
CONFIRM = "import esp32\nesp32.Partition.mark_app_valid_cancel_rollback()\nprint('confirmed')"
WHO = "import esp32\nprint(esp32.Partition(esp32.Partition.RUNNING).info()[4])"


@pytest.fixture(scope="module")
def images():
    return {v: build_app_image(v, 96 * 1024) for v in ("1.0", "2.0")}


@pytest.fixture
def device(tmp_path, images):
    return Device(tmp_path / "dev", image=images["1.0"])


def states(device):
    return [(e["seq"], e["state"]) if e["crc_ok"] else None for e in device.boot_state()]


def test_empty_otadata_boots_ota_0_and_records_it(device):
    assert states(device) == [None, None]
    result = device.boot(["-c", WHO])
    assert (result.slot, result.output.split(), result.bricked) == ("ota_0", ["ota_0"], False)
    assert result.reset_cause == PWRON_RESET
    assert states(device) == [(1, VALID), None]  # set_actual_ota_seq()
    assert "No factory image, trying OTA 0" in device.bootloader_log()


def test_reopening_keeps_the_flash(device, images):
    device.boot(["-c", "pass"])
    again = Device(device.root, image=images["2.0"])
    assert again.slot_image("ota_0") == images["1.0"]
    assert states(again) == [(1, VALID), None]


def test_board_runs_boot_then_main_like_pyexec(device):
    (device.fs / "boot.py").write_text("shared = 'from boot'\nprint('boot.py')")
    (device.fs / "main.py").write_text("print('main.py', shared, __name__)\n1/0")
    result = device.boot()
    assert result.returncode == 0
    assert result.output.splitlines()[:2] == ["boot.py", "main.py from boot __main__"]
    assert "ZeroDivisionError" in result.output
    (device.fs / "boot.py").write_text("raise OSError(5)")
    result = device.boot()
    assert "OSError: [Errno 5] EIO" in result.output and "main.py" not in result.output  # as main.c


def test_new_image_boots_pending_then_stays_when_confirmed(device, images):
    device.flash_image("ota_1", images["2.0"])
    switch = device.boot(["-c", SWITCH])
    assert switch.returncode == RESET_EXIT and switch.reset
    assert states(device) == [(1, VALID), (2, 0)]  # NEW
    first = device.boot(["-c", WHO + "\n" + CONFIRM])
    assert first.slot == "ota_1" and first.reset_cause == HARD_RESET
    assert first.output.split() == ["ota_1", "confirmed"]
    assert states(device) == [(1, VALID), (2, VALID)]
    for _ in range(2):
        result = device.boot(["-c", WHO])
        assert (result.slot, result.rolled_back) == ("ota_1", False)
    assert device.corruptions() == []


def test_the_first_boot_of_a_new_image_runs_pending_verify(device, images):
    device.flash_image("ota_1", images["2.0"])
    device.boot(["-c", SWITCH])
    result = device.boot(["-c", "import esp32\nprint(esp32.Partition(esp32.Partition.BOOT).info()[4])"])
    assert result.output.split() == ["ota_1"]
    assert states(device) == [(1, VALID), (2, PENDING_VERIFY)]  # until the next reset


def test_unconfirmed_image_rolls_back(device, images):
    device.flash_image("ota_1", images["2.0"])
    device.boot(["-c", SWITCH])
    assert device.boot(["-c", "import machine\nmachine.reset()"]).slot == "ota_1"  # never confirms
    back = device.boot(["-c", WHO])
    assert (back.slot, back.rolled_back, back.output.split()) == ("ota_0", True, ["ota_0"])
    assert states(device) == [(1, VALID), (2, ABORTED)]
    assert device.boot(["-c", WHO]).slot == "ota_0"


def test_power_cut_before_confirmation_rolls_back(device, images):
    device.flash_image("ota_1", images["2.0"])
    device.boot(["-c", SWITCH])
    running = device.start(["-c", "print('up')\nimport time\ntime.sleep(30)"])
    assert running.kill_when("up").split() == ["up"]
    result = device.boot(["-c", "import machine\nprint(machine.reset_cause())"])
    assert (result.slot, result.rolled_back, result.output.split()) == ("ota_0", True, [str(PWRON_RESET)])


def test_soft_reset_does_not_pass_the_bootloader(device, images):
    device.flash_image("ota_1", images["2.0"])
    device.boot(["-c", SWITCH])
    soft = device.boot(["-c", "import machine\nmachine.soft_reset()"])
    assert (soft.slot, soft.returncode) == ("ota_1", SOFT_RESET_EXIT)
    again = device.boot(["-c", "import machine\nprint(machine.reset_cause())"])
    assert (again.slot, again.rolled_back, again.output.split()) == ("ota_1", False, [str(SOFT_RESET)])
    assert states(device)[1] == (2, PENDING_VERIFY)


def test_invalid_image_is_never_booted(device, images):
    device.flash_image("ota_1", images["2.0"])
    device.boot(["-c", SWITCH])
    damaged = bytearray(images["2.0"])
    damaged[40_000] ^= 0xFF
    device.flash_image("ota_1", bytes(damaged))  # damaged after set_boot
    result = device.boot(["-c", WHO])
    assert result.slot == "ota_0" and result.output.split() == ["ota_0"]
    assert any("slot 1 is not bootable: checksum mismatch" in line for line in result.bootlog)


def test_wrong_chip_image_is_not_booted(tmp_path):
    device = Device(tmp_path / "s3", image=build_app_image("1.0", 96 * 1024, chip="esp32s3"))
    assert device.boot(["-c", "pass"]).bricked
    s3 = Device(tmp_path / "s3b", image=build_app_image("1.0", 96 * 1024, chip="esp32s3"), chip="esp32s3")
    assert s3.boot(["-c", WHO]).output.split() == ["ota_0"]


def test_no_valid_image_bricks(tmp_path):
    device = Device(tmp_path / "blank")
    result = device.boot(["-c", "print('ran')"])
    assert result.bricked and result.returncode is None and result.output == ""
    assert "No bootable app partitions" in device.bootloader_log()


def test_inspection(device, images):
    device.boot(["-c", "pass"])
    assert device.partition("otadata")[:4] == b"\x01\0\0\0"
    assert device.slot_image("ota_0") == images["1.0"]
    with pytest.raises(ValueError, match="bad magic"):
        device.slot_image("ota_1")
    assert device.erase_counts() == {0xD000 // 4096: 1}
    assert device.running_slot() == "ota_0" and device.corruptions() == []
    assert [p[0] for p in device.partitions()] == ["nvs", "otadata", "phy_init", "ota_0", "ota_1", "vfs"]


def test_kill_when_reports_a_device_that_ended(device):
    running = device.start(["-c", "print('done')"])
    with pytest.raises(RuntimeError, match="before 'never'"):
        running.kill_when("never", timeout=10)


# ---- power cuts at a chosen point (cut=..., $FAKE_ESP32_CUT in sim/board/esp32.py)

OTA_1 = 0x190000
OTADATA = 0xD000
# three sectors of ota_1 written with writeblocks (erase + program each), then a marker
THREE = """
import esp32
p = esp32.Partition('ota_1')
for n in range(3):
    print('sector', n)
    p.writeblocks(n, bytes([n + 1]) * 4096)
print('after')
"""


def erases_in_ota_1(device):
    return {s - OTA_1 // SECTOR: n for s, n in device.erase_counts().items()
            if OTA_1 // SECTOR <= s < OTA_1 // SECTOR + 8}


def test_cut_inside_a_write_leaves_a_half_written_sector(device):
    result = device.boot(["-c", "try:\n" + "".join("    " + ln + "\n" for ln in THREE.splitlines())
                          + "finally:\n    print('finally')"], cut="writes=2:1000")
    assert result.cut and result.returncode == CUT_EXIT == -10
    assert result.output.split() == ["sector", "0", "sector", "1"]  # no finally: the power is gone
    ota_1 = device.read(OTA_1, 3 * SECTOR)
    assert ota_1[:SECTOR] == b"\1" * SECTOR
    assert ota_1[SECTOR:2 * SECTOR] == b"\2" * 1000 + b"\xff" * (SECTOR - 1000)
    assert ota_1[2 * SECTOR:] == b"\xff" * SECTOR
    assert erases_in_ota_1(device) == {0: 1, 1: 1}
    again = device.boot(["-c", THREE])  # the next run writes the sector again: erase first
    assert again.returncode == 0 and device.corruptions() == []
    assert erases_in_ota_1(device) == {0: 2, 1: 2, 2: 1}


@pytest.mark.parametrize("cut, output, first, second", [
    ("writes=1", ["sector", "0"], b"\xff" * SECTOR, b"\xff" * SECTOR),
    ("writes=3:4096", ["sector", "0", "sector", "1", "sector", "2"], b"\1" * SECTOR, b"\2" * SECTOR),
])
def test_cut_before_or_after_a_whole_write(device, cut, output, first, second):
    result = device.boot(["-c", THREE], cut=cut)
    assert result.cut and result.output.split() == output
    assert device.read(OTA_1, 2 * SECTOR) == first + second


def test_cut_inside_an_erase_leaves_a_half_erased_sector(device):
    device.flash_image("ota_1", b"\0" * 2 * SECTOR)
    result = device.boot(["-c", THREE], cut="erases=2:512")
    assert result.cut and result.output.split() == ["sector", "0", "sector", "1"]
    assert device.read(OTA_1, 2 * SECTOR) == b"\1" * SECTOR + b"\xff" * 512 + b"\0" * (SECTOR - 512)
    assert erases_in_ota_1(device) == {0: 2, 1: 2}  # flash_image, then the run (cut short)
    assert device.boot(["-c", THREE]).returncode == 0 and device.corruptions() == []


def test_the_countdown_starts_again_at_every_run(device):
    assert device.boot(["-c", THREE], cut="writes=3").cut
    assert device.boot(["-c", THREE], cut="writes=3").cut
    assert device.boot(["-c", THREE]).output.split()[-1] == "after"


@pytest.mark.parametrize("when, states_after, boots", [
    # the image was checked, otadata untouched: the old app stays
    ("before", [(1, VALID), None], "ota_0"),
    # the inactive otadata sector is erased: the bootloader keeps the active one
    ("erased", [(1, VALID), None], "ota_0"),
    # the new entry is written (NEW): the next reset boots it, pending verification
    ("after", [(1, VALID), (2, NEW)], "ota_1"),
])
def test_cut_inside_set_boot(device, images, when, states_after, boots):
    device.boot(["-c", "pass"])
    device.flash_image("ota_1", images["2.0"])
    result = device.boot(["-c", SWITCH], cut="set_boot=" + when)
    assert result.cut, result.output
    assert [(e["seq"], e["state"]) if e["valid"] else None for e in device.boot_state()] == states_after
    assert device.boot(["-c", WHO]).output.split() == [boots]


def test_set_boot_alone_is_before(device, images):
    device.flash_image("ota_1", images["2.0"])
    assert device.boot(["-c", SWITCH], cut="set_boot").cut
    assert device.boot(["-c", WHO]).slot == "ota_0"


@pytest.mark.parametrize("when, boots, rolled_back", [
    ("before", "ota_0", True),    # still PENDING_VERIFY at the reset: rollback
    # mark-valid rewrites the active entry in place: erased, the bootloader falls back to the
    # other entry (the old app, VALID) and nothing is ABORTED
    ("erased", "ota_0", False),
    ("after", "ota_1", False),    # VALID: the new app stays
])
def test_cut_inside_mark_valid(device, images, when, boots, rolled_back):
    device.flash_image("ota_1", images["2.0"])
    device.boot(["-c", SWITCH])
    result = device.boot(["-c", CONFIRM], cut="mark_valid=" + when)
    assert result.slot == "ota_1" and result.cut and "confirmed" not in result.output
    again = device.boot(["-c", WHO])
    assert (again.output.split(), again.rolled_back) == ([boots], rolled_back)
    assert device.corruptions() == []


def test_a_cut_is_no_kill(device):
    """A run without cut= ignores a FAKE_ESP32_CUT of the host environment; a SIGKILL from
    outside is not a cut."""
    import os
    os.environ["FAKE_ESP32_CUT"] = "writes=1"
    try:
        assert device.boot(["-c", THREE]).returncode == 0
    finally:
        del os.environ["FAKE_ESP32_CUT"]
    running = device.start(["-c", "print('up')\nimport time\ntime.sleep(30)"])
    running.kill_when("up")
    assert not running.wait().cut


@pytest.mark.parametrize("bad", ["writes=0", "writes=x", "reads=1", "set_boot=later", "writes=1:"])
def test_a_cut_that_names_no_point_is_refused(device, bad):
    with pytest.raises(ValueError, match="cut="):
        device.boot(["-c", "pass"], cut=bad)
    result = device.boot(["-c", "import esp32"], env={"FAKE_ESP32_CUT": bad})
    assert result.returncode == 1 and "ValueError: FAKE_ESP32_CUT=" + bad in result.output


def test_an_armed_cut_costs_no_allocation_on_the_hot_path(device):
    result = device.boot(["-c", """
import esp32, gc
p = esp32.Partition('vfs')
buf = bytearray(4096)
p.writeblocks(0, buf)
gc.collect()
before = gc.mem_alloc()
for n in range(64):
    p.writeblocks(n, buf)
    p.ioctl(6, n)
print(gc.mem_alloc() - before)
"""], cut="writes=100000", heapsize="64k")
    assert result.returncode == 0, result.output
    assert int(result.output.split()[-1]) <= 32


def test_start_takes_a_cut_too(device):
    running = device.start(["-c", THREE], cut="erases=2")
    result = running.wait()
    assert result.cut and result.output.split() == ["sector", "0", "sector", "1"]
