"""FOTA end to end: real micropython running boot.py/main.py and firmware/ on the fake ESP32,
against the mock platform over loopback."""
from sim.device import RESET_EXIT


def test_happy_path(board, platform):
    new = board.image("1.1")
    task = board.add_task(new, target="1.1")
    first = board.boot()
    print(first.output)
    assert first.returncode == RESET_EXIT, first.output
    assert board.device.slot_image("ota_1")[: len(new)] == new
    second = board.boot()
    print(second.output)
    assert second.slot == "ota_1"
    assert task.state == "completed", task.history
