"""sim/esp_image.py: real ESP app images, and every way one can be refused."""
import struct

import pytest
from esptool.bin_image import LoadFirmwareImage

from sim.esp_image import CHIPS, app_version, build_app_image, validate_app_image

SIZES = [64 * 1024, 300 * 1000, 1536 * 1024 - 4096]


@pytest.mark.parametrize("chip", ["esp32", "esp32s2", "esp32c3", "esp32s3", "esp32c6"])
@pytest.mark.parametrize("size", SIZES)
def test_round_trip(chip, size):
    image = build_app_image("v1.2.3", size, chip=chip)
    assert abs(len(image) - size) < 64
    assert image[0] == 0xE9 and struct.unpack_from("<H", image, 12)[0] == CHIPS[chip]
    info = validate_app_image(image + b"\xff" * 4096, chip=chip, version="v1.2.3")
    assert info["chip"] == chip and info["version"] == "v1.2.3" and info["size"] == len(image)
    assert info["hash_appended"] and info["project"] == "micropython"
    loaded = LoadFirmwareImage(chip, image)
    assert loaded.calculate_checksum() == loaded.checksum
    assert loaded.stored_digest == loaded.calc_digest
    assert app_version(image) == "v1.2.3"


def test_deterministic_and_seeded():
    assert build_app_image("1.0", 100_000) == build_app_image("1.0", 100_000)
    assert build_app_image("1.0", 100_000) != build_app_image("1.0", 100_000, seed=1)
    assert build_app_image("1.0", 100_000) != build_app_image("1.1", 100_000)


@pytest.fixture(scope="module")
def image():
    return build_app_image("2.0", 200_000)


def _mutate(data, at, value):
    data = bytearray(data)
    data[at] = value
    return bytes(data)


def test_bad_magic(image):
    with pytest.raises(ValueError, match="bad magic 0xe8"):
        validate_app_image(_mutate(image, 0, 0xE8))


def test_wrong_chip(image):
    with pytest.raises(ValueError, match=r"wrong chip id 9 \(esp32s3\), expected 0 \(esp32\)"):
        validate_app_image(_mutate(image, 12, 9), chip="esp32")
    with pytest.raises(ValueError, match="wrong chip id 0"):
        validate_app_image(image, chip="esp32c3")


def test_one_byte_in_a_segment_breaks_the_checksum(image):
    at = 24 + 8 + 1000  # inside the first segment's data
    with pytest.raises(ValueError, match="checksum mismatch"):
        validate_app_image(_mutate(image, at, image[at] ^ 0x01))


def test_checksum_fixed_but_digest_not(image):
    # two flips of the same bit in different bytes keep the XOR checksum: only the SHA-256 sees it
    at = 24 + 8 + 1000
    bad = _mutate(_mutate(image, at, image[at] ^ 0x10), at + 4, image[at + 4] ^ 0x10)
    with pytest.raises(ValueError, match="SHA-256 digest mismatch"):
        validate_app_image(bad)


def test_truncated(image):
    for cut in (10, 1000, len(image) // 2, len(image) - 1):
        with pytest.raises(ValueError, match="truncated"):
            validate_app_image(image[:cut])


def test_version_mismatch(image):
    with pytest.raises(ValueError, match="version mismatch: image has '2.0', expected '2.1'"):
        validate_app_image(image, version="2.1")


def test_segment_count(image):
    with pytest.raises(ValueError, match="bad segment count 17"):
        validate_app_image(_mutate(image, 1, 17))
