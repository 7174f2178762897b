"""Fixtures shared by the device tests: a mock OneNET platform on loopback, a fake ESP32 with
the firmware installed, and a board that boots the two together.

    def test_x(board, platform):
        task = board.add_task(board.image("1.1"), target="1.1")
        result = board.boot()            # a reset: bootloader, boot.py, main.py
        assert result.reset              # machine.reset() after the switch
        board.boot()                     # the new image confirms itself
        assert task.state == "completed"

Every fixture checks at teardown what must never happen in any test: a write that NOR flash
cannot do, and an exception inside the mock platform.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tools import firmware  # noqa: E402
from sim.device import Device  # noqa: E402
from sim.esp_image import build_app_image  # noqa: E402
from tools.mockplatform import DEFAULT_ACCESS_KEY, DEFAULT_PRODUCT_ID, MockPlatform  # noqa: E402

DEV_ID = "20001"
UNIQUE_ID = "a0b1c2d3e4f5"
OLD_VERSION = "1.0"
# A realistic image size, small enough to keep the suite fast; memory and speed tests ask
# for larger ones explicitly.
IMAGE_SIZE = 192 * 1024


@pytest.fixture
def platform():
    with MockPlatform(product_id=DEFAULT_PRODUCT_ID, access_key=DEFAULT_ACCESS_KEY) as mock:
        mock.add_device(DEV_ID, unique_id=UNIQUE_ID, f_version=OLD_VERSION)
        yield mock
        assert not mock.errors, "the mock platform itself failed: %r" % mock.errors


@pytest.fixture(scope="session")
def compiled(tmp_path_factory):
    """firmware/ and the fakes compiled to .mpy for the running micropython (x64 for the
    PyPI unix port), as a board would get them (firmware.compile_board)."""
    return firmware.compile_board(tmp_path_factory.mktemp("mpy"))


class Board:
    """A fake ESP32 running this project's boot.py/main.py against the mock platform."""

    def __init__(self, root: Path, platform: MockPlatform, image_size: int = IMAGE_SIZE):
        self.platform = platform
        self.image_size = image_size
        self.device = Device(root, image=self.image(OLD_VERSION))
        # "https": false for the plain mock (true, with a ca_file, for a TLS one)
        self.config = platform.device_config(
            DEV_ID,
            timeout=5,
            fragment_size=65536,  # several fragments even in a small image
        )
        self.install()

    def image(self, version: str, size: int | None = None, **kw) -> bytes:
        return build_app_image(version, size or self.image_size, **kw)

    def install(self, **config) -> None:
        self.config.update(config)
        firmware.install(self.device.fs, self.config)

    def add_task(self, package: bytes, target: str, **kw):
        kw.setdefault("retry", 3)
        kw.setdefault("interval", 0)
        return self.platform.add_task(DEV_ID, package, target, **kw)

    def boot(self, **kw):
        return self.device.boot(**kw)

    def start(self, **kw):
        return self.device.start(**kw)


@pytest.fixture
def board(tmp_path, platform):
    b = Board(tmp_path / "device", platform)
    yield b
    assert b.device.corruptions() == [], "NOR flash: a write needed a 0 -> 1 bit"


def request_ranges(size, drops=(), fragment=65536, chunk=4096):
    """The Range requests (start, end) a full download of `size` bytes makes with the test
    config: one per fragment. A connection dropped at a package offset in `drops` is asked
    again from the start of the chunk being read (the sector at or below the drop) to the
    end of the same fragment."""
    out, drops = [], sorted(drops)
    for at in range(0, size, fragment):
        stop = min(at + fragment, size)
        out.append((at, stop - 1))
        while drops and drops[0] < stop:
            out.append((drops.pop(0) // chunk * chunk, stop - 1))
    return out


def download_sequence(size, fragment=65536, step=10):
    """The platform calls of a full download of `size` bytes, from the first Range request
    to the last progress report (the 101 follows): every step is reported, in order, at the
    end of the fragment that passed it, and the steps passed by the last one after it."""
    out, reported = [], 0
    for at in range(0, size, fragment):
        out.append("download")
        percent = min(at + fragment, size) * 100 // size
        while reported + step <= percent and reported + step < 100:
            reported += step
            out.append("progress")
    return out
