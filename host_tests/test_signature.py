"""Signed firmware (issue 14): espsecure's Secure Boot V2 packages, checked on the device.

Host: `python -m tools package fota --sign/--keygen` writes what `espsecure verify-signature
--version 2` accepts. Device: signature vectors made with espsecure, each in the fake ESP32's
ota_1 and checked by firmware/onenet_ota/signature.py under the unix micropython (DRIVER):
a signed image verifies; a flipped bit in the image, the block's digest, the key or the
signature, a wrong CRC, an untrusted key each fail with their reason; a second block with a
trusted key verifies (rotation). End to end against the mock platform: a signed package whose
key the config trusts is upgraded (201); unsigned, or signed by another key: 206 after the
101, nothing switched, no journal, the old image keeps running.
"""
from __future__ import annotations

import json
import re
import struct
import subprocess
import sys
import zlib

import pytest

from conftest import REPO
from sim.device import RESET_EXIT, Device
from sim.esp_image import build_app_image
from test_fota_codes import (DOWNLOADING, FAILED, TBU, UPGRADING, assert_failed, assert_nothing_more,
                             assert_boot_untouched, assert_no_journal, assert_upgraded, result_of, run,
                             slot_holds)
from tools import package_fota

SECTOR = 4096
BLOCK = 1216
DIGEST_AT, KEY_AT, SIG_AT, CRC_AT = 4, 36, 812, 1196

DRIVER = r'''
import sys, json, gc, time
from onenet_ota import fota
from onenet_ota.codes import Fail
with open(sys.argv[1]) as f:
    cfg = json.load(f)
buf = bytearray(4096)
part = fota.Slot().partition
gc.collect()
gc.disable()  # what the check allocates in all, with no collection to hide it
before = gc.mem_alloc()
t = time.ticks_us()
from onenet_ota import signature
loaded = gc.mem_alloc()
try:
    print("result ok", signature.verify(part, cfg["size"], cfg["trusted"], buf))
except Fail as e:
    print("result fail", e.code, e)
print("took %d us, import %d B, check %d B" % (time.ticks_diff(time.ticks_us(), t), loaded - before,
      gc.mem_alloc() - loaded))
'''


@pytest.fixture(scope="session")
def keys(tmp_path_factory):
    """Three RSA-3072 keys made with espsecure, and their digests."""
    work = tmp_path_factory.mktemp("keys")
    out = {}
    for name in ("a", "b", "c"):
        key = work / (name + ".pem")
        package_fota.keygen(str(key))
        out[name] = (str(key), package_fota.key_digest(str(key)))
    return out


@pytest.fixture(scope="session")
def image(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "app.bin"
    path.write_bytes(build_app_image("1.1", 64 * 1024))
    return path


def signed(image, keys, *names) -> bytes:
    out = image.parent / ("app-%s.bin" % "".join(names))
    if not out.exists():
        package_fota.sign(str(image), [keys[n][0] for n in names], str(out))
    return out.read_bytes()


def mutate(package: bytes, at: int, block: int = 0, crc: bool = True) -> bytes:
    """Flip the low bit at `at` of signature block `block` (negative: of the package), and
    recompute the block's CRC so that the check behind the CRC is the one reached."""
    data = bytearray(package)
    base = len(data) - SECTOR + block * BLOCK
    data[at if at < 0 else base + at] ^= 0x01
    if crc:
        struct.pack_into("<I", data, base + CRC_AT, zlib.crc32(data[base:base + CRC_AT]))
    return bytes(data)


def verify_on_device(tmp_path, compiled, package: bytes, trusted: list[str]):
    device = Device(tmp_path / "dev", image=build_app_image("1.0", 64 * 1024))
    device.flash_image("ota_1", package)
    (tmp_path / "driver.py").write_text(DRIVER)
    (tmp_path / "cfg.json").write_text(json.dumps({"size": len(package), "trusted": trusted}))
    result = device.boot([str(tmp_path / "driver.py"), str(tmp_path / "cfg.json")], extra_path=[compiled])
    print(result.output)
    assert result.returncode == 0 and "Traceback" not in result.output, result.output
    return re.search(r"^result (.*)$", result.output, re.M)[1]


# ---- host: package fota --sign / --keygen ------------------------------------------------------

def test_package_fota_signs_what_espsecure_verifies(tmp_path, image):
    key = tmp_path / "k.pem"
    out = tmp_path / "signed.bin"
    done = subprocess.run([sys.executable, "-m", "tools", "package", "fota", str(image), "--version", "1.1",
                           "--keygen", str(key), "--sign", str(key), "-o", str(out), "--json"],
                          cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    data = out.read_bytes()
    assert result["signed"] == str(out) and result["size"] == len(data)
    assert len(data) == (len(image.read_bytes()) + SECTOR - 1) // SECTOR * SECTOR + SECTOR
    assert data.startswith(image.read_bytes())
    assert result["key_digests"] == [package_fota.key_digest(str(key))]
    assert re.fullmatch(r"[0-9a-f]{64}", result["key_digests"][0])
    check = subprocess.run([sys.executable, "-m", "espsecure", "verify-signature", "--version", "2",
                            "--keyfile", str(key), str(out)], capture_output=True, text=True)
    assert check.returncode == 0 and "verification successful" in check.stdout, check.stdout + check.stderr
    # the digest printed is the SHA-256 of the key as it sits in the block (what the device hashes)
    block = data[-SECTOR:][:BLOCK]
    import hashlib
    assert hashlib.sha256(block[KEY_AT:SIG_AT]).hexdigest() == result["key_digests"][0]


def test_package_fota_text_output_names_the_signed_file_and_digest(tmp_path, image, keys):
    done = subprocess.run([sys.executable, "-m", "tools", "package", "fota", str(image), "--version", "1.1",
                           "--sign", keys["a"][0], "-o", str(tmp_path / "s.bin")],
                          cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert '"trusted_keys": ["%s"]' % keys["a"][1] in done.stdout
    assert "upload s.bin" in done.stdout
    assert "size  %d" % (tmp_path / "s.bin").stat().st_size in done.stdout


def test_package_fota_keygen_refuses_to_overwrite(tmp_path):
    key = tmp_path / "k.pem"
    key.write_text("precious")
    done = subprocess.run([sys.executable, "-m", "tools", "package", "fota", "--keygen", str(key)],
                          cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 2 and "not overwritten" in done.stderr
    assert key.read_text() == "precious"


def test_package_fota_refuses_a_signed_file_and_a_non_key(tmp_path, image, keys):
    (tmp_path / "s.bin").write_bytes(signed(image, keys, "a"))
    twice = subprocess.run([sys.executable, "-m", "tools", "package", "fota", str(tmp_path / "s.bin"), "--version",
                            "1.1", "--sign", keys["a"][0], "-o", str(tmp_path / "t.bin")],
                           cwd=REPO, capture_output=True, text=True)
    assert twice.returncode == 1 and "sign the image alone" in twice.stderr, twice.stderr
    assert not (tmp_path / "t.bin").exists()
    (tmp_path / "junk.pem").write_text("not a key")
    junk = subprocess.run([sys.executable, "-m", "tools", "package", "fota", str(image), "--version", "1.1",
                           "--sign", str(tmp_path / "junk.pem")], cwd=REPO, capture_output=True, text=True)
    assert junk.returncode == 2 and "not a signing key" in junk.stderr, junk.stderr


# ---- device: signature vectors -------------------------------------------------------------------

def test_signed_image_verifies(tmp_path, compiled, image, keys):
    out = verify_on_device(tmp_path, compiled, signed(image, keys, "a"), [keys["a"][1]])
    assert out == "ok 0"


@pytest.mark.parametrize("case, why", [
    ("image", "block 0: the signed SHA-256 is not the image's"),
    ("digest", "block 0: the signed SHA-256 is not the image's"),
    ("key", r"block 0: key [0-9a-f]{16}\.\.\. not trusted"),
    ("key, its digest trusted", "block 0: RSA-PSS: "),
    ("signature", "block 0: RSA-PSS: "),
    ("crc", "block 0: CRC32 mismatch"),
    ("untrusted", r"block 0: key [0-9a-f]{16}\.\.\. not trusted"),
    ("unsigned", r"no signature block \(unsigned package\)"),
    ("unaligned", "unsigned package: 65537 bytes"),
])
def test_a_bad_signature_is_206_with_its_reason(tmp_path, compiled, image, keys, case, why):
    package, trusted = signed(image, keys, "a"), [keys["a"][1]]
    if case == "image":
        package = mutate(package, 5000 - len(package), crc=False)  # a bit of the image
    elif case == "digest":
        package = mutate(package, DIGEST_AT + 7)
    elif case.startswith("key"):
        package = mutate(package, KEY_AT + 100)  # a bit of the modulus
        if case != "key":
            block = package[-SECTOR:][:BLOCK]
            import hashlib
            trusted = [hashlib.sha256(block[KEY_AT:SIG_AT]).hexdigest()]
    elif case == "signature":
        package = mutate(package, SIG_AT + 200)
    elif case == "crc":
        package = mutate(package, CRC_AT, crc=False)
    elif case == "untrusted":
        trusted = [keys["b"][1], keys["c"][1]]
    elif case == "unsigned":
        package = image.read_bytes()
    elif case == "unaligned":
        package = image.read_bytes() + b"\xff"
    out = verify_on_device(tmp_path, compiled, package, trusted)
    assert re.fullmatch(r"fail 206 signature: %s.*|fail 206 %s.*" % (why, why), out), out


def pss_signature(key: str, mhash: bytes, *, ps=False, sep=1, trailer=0xBC, top=False, plus_n=False) -> bytes:
    """An RSA-PSS signature (MGF1-SHA-256, 32-byte salt) made by hand with the key's private
    exponent, so that one rule of the encoding can be broken at a time; little-endian, as the
    block holds it. top: the bit above emBits set (salts are tried until the encoded message
    still is below n, else the RSA alone would garble it); plus_n: the signature s + n, which
    is the same modulo n (salts are tried until it fits 384 bytes)."""
    import hashlib
    import os

    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    numbers = load_pem_private_key(open(key, "rb").read(), None).private_numbers()  # type: ignore[union-attr]
    n = numbers.public_numbers.n
    for _ in range(1000):
        salt = os.urandom(32)
        h = hashlib.sha256(bytes(8) + mhash + salt).digest()
        db = bytearray(318) + bytes([sep]) + salt
        if ps:
            db[100] = 0x01
        mask = b"".join(hashlib.sha256(h + c.to_bytes(4, "big")).digest() for c in range(11))
        em = bytearray(a ^ b for a, b in zip(db, mask))
        em[0] = em[0] & 0x7F | (0x80 if top else 0)
        em += h + bytes([trailer])
        m = int.from_bytes(em, "big")
        if m >= n:
            continue
        sig = pow(m, numbers.d, n) + (n if plus_n else 0)
        if sig < 1 << 3072:
            return sig.to_bytes(384, "big")[::-1]
    raise AssertionError("no salt gave such a signature")


def with_signature(package: bytes, signature: bytes) -> bytes:
    data = bytearray(package)
    base = len(data) - SECTOR
    data[base + SIG_AT:base + CRC_AT] = signature
    struct.pack_into("<I", data, base + CRC_AT, zlib.crc32(data[base:base + CRC_AT]))
    return bytes(data)


@pytest.mark.parametrize("rule, why", [
    (None, None),  # the hand-made encoding itself verifies: each case below breaks one rule
    ("another image", "RSA-PSS: signature does not verify"),
    ("padding not zero", "RSA-PSS: bad padding"),
    ("no 0x01 before the salt", "RSA-PSS: bad padding"),
    ("trailer not 0xBC", "RSA-PSS: signature does not verify"),
    ("top bit set", "RSA-PSS: signature does not verify"),
    ("s + n", "signature out of range"),
])
def test_each_rule_of_rsa_pss_is_checked(tmp_path, compiled, image, keys, rule, why):
    import hashlib

    package = signed(image, keys, "a")
    mhash = hashlib.sha256(package[:-SECTOR]).digest()
    kw = {"padding not zero": dict(ps=True), "no 0x01 before the salt": dict(sep=2),
          "trailer not 0xBC": dict(trailer=0xBB), "top bit set": dict(top=True),
          "s + n": dict(plus_n=True)}.get(rule, {})
    if rule == "another image":
        mhash = hashlib.sha256(b"another image").digest()
    package = with_signature(package, pss_signature(keys["a"][0], mhash, **kw))
    out = verify_on_device(tmp_path, compiled, package, [keys["a"][1]])
    assert out == ("ok 0" if rule is None else "fail 206 signature: block 0: " + why), out


@pytest.mark.parametrize("names, trusted, block", [
    (("c", "a"), "a", 1),  # the first block's key is not trusted, the second's is
    (("a", "b"), "b", 1),  # rotation: signed with the old and the new key, the device trusts the new
    (("a", "b"), "a", 0),  # ... or still the old one
])
def test_a_second_block_with_a_trusted_key_verifies(tmp_path, compiled, image, keys, names, trusted, block):
    out = verify_on_device(tmp_path, compiled, signed(image, keys, *names), [keys[trusted][1]])
    assert out == "ok %d" % block


def test_a_trusted_second_block_with_a_bad_signature_fails(tmp_path, compiled, image, keys):
    package = mutate(signed(image, keys, "c", "a"), SIG_AT + 10, block=1)
    out = verify_on_device(tmp_path, compiled, package, [keys["a"][1]])
    assert re.fullmatch(r"fail 206 signature: block 0: key \w+\.\.\. not trusted; block 1: RSA-PSS: .*", out), out


# ---- end to end: the mock platform, the fake flash ---------------------------------------------

def test_signed_package_with_a_trusted_key_is_upgraded(board, platform, tmp_path, keys):
    raw = tmp_path / "new.bin"
    raw.write_bytes(board.image("1.1"))
    package = signed(raw, keys, "a")
    board.install(trusted_keys=[keys["b"][1], keys["a"][1].upper()])
    task = board.add_task(package, target="1.1")
    first = run(board)
    assert first.returncode == RESET_EXIT, first.output
    assert "ota: signature ok (block 0)" in first.output
    assert task.reports == [(101, 0)]
    assert_upgraded(board, platform, task, package)


@pytest.mark.parametrize("how, why", [
    ("unsigned", r"signature: no signature block \(unsigned package\)"),
    ("another key", r"signature: block 0: key \w+\.\.\. not trusted"),
])
def test_unsigned_or_foreign_package_with_trusted_keys_is_206(board, platform, tmp_path, keys, how, why):
    new = board.image("1.1")
    raw = tmp_path / "new.bin"
    raw.write_bytes(new)
    package = new if how == "unsigned" else signed(raw, keys, "c")
    board.install(trusted_keys=[keys["a"][1]])
    task = board.add_task(package, target="1.1")
    result = run(board)
    assert_failed(board, result, task, 206, why, reports=[(101, 0), (206, 0)],
                  history=[TBU, DOWNLOADING, UPGRADING, FAILED])
    assert slot_holds(board, package)  # downloaded and a sound image, never switched to
    assert_nothing_more(board, platform, task)


def test_without_trusted_keys_a_signed_package_is_just_an_image(board, platform, tmp_path, keys):
    """Today's behaviour: no trusted keys, no check; the signature sector is bytes after the
    image, which the image check leaves alone."""
    raw = tmp_path / "new.bin"
    raw.write_bytes(board.image("1.1"))
    package = signed(raw, keys, "c")
    task = board.add_task(package, target="1.1")
    first = run(board)
    assert first.returncode == RESET_EXIT and "signature" not in first.output, first.output
    assert_upgraded(board, platform, task, package)


# ---- config: "trusted_keys" ------------------------------------------------------------------------

CONFIG = {"https": False, "product_id": "123456", "access_key": "a2V5", "device_id": "20001"}


def config_rules():
    from tools.deploy import load_config_rules

    return load_config_rules()


def test_trusted_keys_default_to_none_and_are_lowercased():
    rules = config_rules()
    assert rules.from_dict(dict(CONFIG)).trusted_keys == []
    assert rules.from_dict(dict(CONFIG, trusted_keys=["AB" * 32, "0f" * 32])).trusted_keys == ["ab" * 32, "0f" * 32]


@pytest.mark.parametrize("value, why", [
    ("ab" * 32, "must be list"),
    (["ab" * 31], "64 hex digits"),
    (["xy" * 32], "64 hex digits"),
    ([7], "64 hex digits"),
    (["ab" * 32] * 4, "more than 3"),
])
def test_bad_trusted_keys_name_the_field(value, why):
    rules = config_rules()
    with pytest.raises(rules.ConfigError, match="field 'trusted_keys' .*%s" % why):
        rules.from_dict(dict(CONFIG, trusted_keys=value))


def test_a_cut_between_the_101_and_the_check_still_checks_at_the_next_boot(board, platform, tmp_path, keys):
    """The state a power cut leaves after the 101, before the signature was checked (made as
    test_fota_powercut makes it: a cut at set_boot, the journal set back to DOWNLOAD): the
    next boot checks the image and the signature again before any switch. Here the key is no
    longer trusted by then: 206, nothing switched."""
    raw = tmp_path / "new.bin"
    raw.write_bytes(board.image("1.1"))
    package = signed(raw, keys, "a")
    board.install(trusted_keys=[keys["a"][1]])
    task = board.add_task(package, target="1.1")
    first = board.boot(cut="set_boot=before")
    assert first.cut and "signature ok" in first.output, first.output
    path = board.device.fs / "ota_journal.json"
    entry = json.loads(path.read_text())
    assert entry["phase"] == "verified"
    entry["phase"] = "download"
    path.write_text(json.dumps(entry))
    board.install(trusted_keys=[keys["b"][1]])
    result = run(board)
    assert_failed(board, result, task, 206, r"signature: block 0: key \w+\.\.\. not trusted",
                  reports=[(101, 0), (101, 21), (206, 0)], history=[TBU, DOWNLOADING, UPGRADING, FAILED])


# ---- a board with hardware Secure Boot V2 (sim/board/esp32.py: FAKE_ESP32_SECURE_BOOT) -------------

def test_a_signed_package_boots_on_a_board_with_hardware_secure_boot(board, platform, tmp_path, keys):
    """The format is the bootloader's: the boot switch of a Secure Boot board takes it."""
    raw = tmp_path / "new.bin"
    raw.write_bytes(board.image("1.1"))
    package = signed(raw, keys, "a")
    task = board.add_task(package, target="1.1")
    first = run(board, env={"FAKE_ESP32_SECURE_BOOT": keys["a"][1]})
    assert first.returncode == RESET_EXIT, first.output
    assert_upgraded(board, platform, task, package)


def test_a_boot_switch_refused_by_secure_boot_is_206_reported_once_and_not_retried(board, platform, keys):
    """set_boot() raises (ESP_ERR_OTA_VALIDATE_FAILED) for an image the eFuse key did not
    sign. Before, the OSError escaped the cycle and the journal said VERIFIED: every boot
    tried the switch again. Now: 206, kept in the journal (the platform's connection was
    closed for the switch) and sent first by the next cycle, which then checks as usual."""
    package = board.image("1.1")
    task = board.add_task(package, target="1.1")
    secure = {"FAKE_ESP32_SECURE_BOOT": keys["a"][1]}
    first = run(board, env=secure)
    out = first.output
    assert first.returncode == 0 and "Traceback" not in out, out
    assert result_of(out) == 206, out
    assert re.search(r"^ota: failed 206 the boot switch was refused: .*5379", out, re.M), out  # 0x1503
    assert "ota: report 206 at the next cycle" in out, out
    assert task.reports == [(101, 0)]
    assert json.loads(board.device.fs.joinpath("ota_journal.json").read_text())["phase"] == "report"
    assert_boot_untouched(board)
    second = run(board, env=secure)
    assert second.returncode == 0 and result_of(second.output) is None, second.output
    assert task.reports == [(101, 0), (206, 0)] and task.state == FAILED
    assert platform.sequence()[-3:] == ["report", "check", "check"]
    assert_no_journal(board)
    assert_boot_untouched(board)
    assert_nothing_more(board, platform, task)
