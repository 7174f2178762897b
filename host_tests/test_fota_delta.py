"""Differential firmware tasks end to end: the mock platform serves a delta package (task
data type 2), the device applies it from its running image into the spare slot while the
patch streams in, checks MD5 and the image, switches and confirms."""
import pytest

from conftest import OLD_VERSION
from sim.device import RESET_EXIT
from sim.esp_image import build_app_image
from tools.package_delta import make_patch

SIZE = 192 * 1024


def settle(board):
    first = board.boot()
    assert first.returncode == RESET_EXIT, first.output
    second = board.boot()
    assert "ota: result 201" in second.output, second.output
    return first, second


@pytest.mark.parametrize("compression", ["zlib", "heatshrink", "none"])
@pytest.mark.parametrize("seed", [0, 7])
def test_delta_upgrade_is_byte_exact(board, platform, compression, seed):
    """seed 0: a new release of the same build (version and RAM segments differ); seed 7: a
    wholly different image, the worst case for a patch."""
    old = board.device.slot_image("ota_0")[:SIZE]
    new = build_app_image("1.1", SIZE, seed=seed)
    patch = make_patch(old, new, compression)
    if seed == 0 and compression != "none":
        assert len(patch) < len(new) // 4
    task = board.add_task(patch, target="1.1", package_type=2)
    settle(board)
    assert board.device.slot_image("ota_1")[:len(new)] == new
    assert board.device.running_slot() == "ota_1"
    assert task.state == "completed" and task.reports == [(101, 0), (201, 0)]


def test_delta_with_esp_header_checks_the_base(board, platform):
    old = board.device.slot_image("ota_0")[:SIZE]
    new = build_app_image("1.1", SIZE, seed=3)
    task = board.add_task(make_patch(old, new, "zlib", header=True), target="1.1", package_type=2)
    settle(board)
    assert board.device.slot_image("ota_1")[:len(new)] == new
    assert task.state == "completed"


def test_delta_for_another_base_is_204_and_nothing_switches(board, platform):
    other = build_app_image(OLD_VERSION, SIZE, seed=99)  # not what the device runs
    new = build_app_image("1.1", SIZE, seed=3)
    task = board.add_task(make_patch(other, new, "zlib", header=True), target="1.1", package_type=2)
    result = board.boot()
    assert result.returncode == 0, result.output
    assert task.reports == [(204, 0)]
    assert board.device.running_slot() == "ota_0"
    assert board.boot().slot == "ota_0"
    assert not (board.device.fs / "ota_journal.json").exists()


def test_corrupt_delta_is_205_and_truncated_is_caught(board, platform):
    old = board.device.slot_image("ota_0")[:SIZE]
    new = build_app_image("1.1", SIZE, seed=5)
    patch = make_patch(old, new, "none")
    platform.set_fault("corrupt", [len(patch) // 2])
    task = board.add_task(patch, target="1.1", package_type=2)
    result = board.boot()
    assert result.returncode == 0, result.output
    assert task.reports[-1][0] in (205, 206), task.reports
    assert board.boot().slot == "ota_0"


def test_truncated_delta_is_206(board, platform):
    old = board.device.slot_image("ota_0")[:SIZE]
    new = build_app_image("1.1", SIZE, seed=5)
    patch = make_patch(old, new, "zlib")[:-40]  # the platform's MD5 is of what it serves
    task = board.add_task(patch, target="1.1", package_type=2)
    board.boot()
    assert task.reports == [(206, 0)]
    assert board.boot().slot == "ota_0"


def test_unsupported_delta_format_is_206_before_any_write(board, platform):
    patch = bytes([0x01]) + b"\x00" * 64  # detools type "in-place"
    task = board.add_task(patch, target="1.1", package_type=2)
    board.boot()
    assert task.reports == [(206, 0)]
    assert all(count == 0 for sector, count in board.device.erase_counts().items()
               if 0x190000 // 4096 <= sector < 0x310000 // 4096)


def test_delta_dropped_connection_resumes_the_stream(board, platform):
    old = board.device.slot_image("ota_0")[:SIZE]
    new = build_app_image("1.1", SIZE, seed=11)
    patch = make_patch(old, new, "none")
    platform.set_fault("drop", [len(patch) // 3])
    task = board.add_task(patch, target="1.1", package_type=2)
    settle(board)
    assert board.device.slot_image("ota_1")[:len(new)] == new
    assert task.state == "completed"


def test_delta_cut_by_power_restarts_the_patch(board, platform):
    old = board.device.slot_image("ota_0")[:SIZE]
    new = build_app_image("1.1", SIZE, seed=13)
    patch = make_patch(old, new, "none")
    task = board.add_task(patch, target="1.1", package_type=2, retry=1)
    cut = board.device.boot(cut="writes=20")
    assert cut.cut, cut.output
    settle(board)
    starts = [r.headers.get("range") for r in platform.requests if r.endpoint == "download"]
    # the patch is asked from its first byte again: the decoder's state is not saved
    assert starts.count(starts[0]) == 2 and starts[0].startswith("bytes=0-"), starts
    assert board.device.slot_image("ota_1")[:len(new)] == new
    assert task.state == "completed"
