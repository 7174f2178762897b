"""`python -m tools package fota`: a good app image gets the size and MD5 OneNET will show; a
damaged image, another chip, another version or a combined flash image is refused, each with
its reason and exit 1."""
import hashlib
import json
import subprocess
import sys

import pytest

from conftest import REPO
from sim.device import partition_table
from sim.esp_image import HEADER_LEN, build_app_image


def package(*args):
    return subprocess.run([sys.executable, "-m", "tools", "package", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def image():
    return build_app_image("1.2.3", 200 * 1024)


def write(tmp_path, data, name="app.bin"):
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def test_good_image_prints_size_and_md5(tmp_path, image):
    result = package("fota", write(tmp_path, image), "--version", "1.2.3")
    assert result.returncode == 0, result.stderr
    assert "size  %d\n" % len(image) in result.stdout
    assert "md5   %s\n" % hashlib.md5(image).hexdigest() in result.stdout
    assert "app image for esp32, version 1.2.3" in result.stdout


def test_json_output(tmp_path, image):
    result = package("fota", write(tmp_path, image), "--version", "1.2.3", "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["ok"] and info["size"] == len(image) and info["md5"] == hashlib.md5(image).hexdigest()
    assert info["chip"] == "esp32" and info["version"] == "1.2.3" and info["sha256_appended"]


def test_other_chip_with_chip_option(tmp_path):
    data = build_app_image("2.0", 64 * 1024, chip="esp32c3")
    result = package("fota", write(tmp_path, data), "--version", "2.0", "--chip", "esp32c3")
    assert result.returncode == 0, result.stderr
    assert "md5   %s" % hashlib.md5(data).hexdigest() in result.stdout


def refused(result, *words):
    assert result.returncode == 1, result.stdout + result.stderr
    assert "REFUSED" in result.stderr
    for word in words:
        assert word in result.stderr, result.stderr
    assert "md5" not in result.stdout


def test_corrupt_checksum(tmp_path, image):
    bad = bytearray(image)
    bad[HEADER_LEN + 8 + 300] ^= 0x01  # a byte of the first segment's data
    refused(package("fota", write(tmp_path, bytes(bad)), "--version", "1.2.3"), "checksum mismatch", "damaged")


def test_corrupt_digest(tmp_path, image):
    bad = bytearray(image)
    bad[-1] ^= 0xFF  # the appended SHA-256
    refused(package("fota", write(tmp_path, bytes(bad)), "--version", "1.2.3"), "SHA-256 digest mismatch")


def test_not_an_image(tmp_path):
    refused(package("fota", write(tmp_path, b"PK\x03\x04" + bytes(5000)), "--version", "1.0"), "bad magic")


def test_wrong_chip(tmp_path):
    data = build_app_image("1.2.3", 64 * 1024, chip="esp32s3")
    refused(package("fota", write(tmp_path, data), "--version", "1.2.3"),
            "wrong chip id 9 (esp32s3), expected 0 (esp32)", "--chip esp32s3")


def test_version_mismatch(tmp_path, image):
    refused(package("fota", write(tmp_path, image), "--version", "1.2.4"),
            "version mismatch", "'1.2.3'", "'1.2.4'")


def combined(app, base):
    """bootloader + partition table at flash 0x8000 + app at 0x10000, from flash address `base`."""
    flash = bytearray(b"\xff" * (0x10000 - base))
    boot = build_app_image("bootloader", 16 * 1024)
    flash[0:len(boot)] = boot
    flash[0x8000 - base:0x8000 - base + 0xC00] = partition_table()
    return bytes(flash) + app


def test_combined_image_at_0x1000(tmp_path, image):
    result = package("fota", write(tmp_path, combined(image, 0x1000)), "--version", "1.2.3")
    refused(result, "combined flash image", "partition table at file offset 0x7000",
            "micropython.bin", "'ota_0' at file offset 0xf000")


def test_combined_image_at_0(tmp_path):
    app = build_app_image("1.0", 64 * 1024, chip="esp32c3")
    result = package("fota", write(tmp_path, combined(app, 0)), "--version", "1.0", "--chip", "esp32c3")
    refused(result, "combined flash image", "at file offset 0x8000")


def test_combined_image_hint_extracts_the_app(tmp_path, image):
    """The hint's tail command cuts out exactly the app, which then passes."""
    path = write(tmp_path, combined(image, 0x1000), "firmware.bin")
    hint = package("fota", path, "--version", "1.2.3").stderr
    command = hint[hint.index("tail -c"):].split(" > ")[0].split()
    app = subprocess.run(command, capture_output=True, check=True).stdout
    assert app == image


def test_too_big_for_the_slot(tmp_path, image):
    refused(package("fota", write(tmp_path, image), "--version", "1.2.3", "--slot-size", "0x10000"),
            "do not fit the OTA slot")


def test_usage(tmp_path):
    assert package("fota", str(tmp_path / "missing.bin"), "--version", "1.0").returncode == 2
    assert package("fota", str(tmp_path / "x.bin")).returncode == 2  # --version is required
    assert package("fota", "x.bin", "--version", "bad version!").returncode == 2
    assert package().returncode == 2
    helped = package("fota", "--help")
    assert helped.returncode == 0 and "combined flash image" in helped.stdout
