"""The hostile network: a man in the middle on loopback (mitm.py) between the device and the
mock platform forges tasks, images, redirects, Date headers and device ids. Each test is one
attack, and fails if the attack works.

With trusted keys configured nothing the attacker does makes the device switch to an image
that a trusted key did not sign. Without keys (plain HTTP hides nothing and proves nothing) a
forged image IS installed - the first test shows the attack is real - but every check that
needs no key still holds: no downgrade, no https -> http, no clock set from plain HTTP, no
device id swapped.
"""
from __future__ import annotations

import hashlib
import shutil
import time
import urllib.parse

import pytest

from conftest import DEV_ID, UNIQUE_ID
from mitm import Mitm, api, ranged
from sim.device import RESET_EXIT
from test_fota_codes import assert_boot_untouched, result_of, run, slot_holds
from test_http_client import pki  # noqa: F401  (fixture)
from test_signature import keys, signed  # noqa: F401  (fixture)

EVIL = "ota_forged"


@pytest.fixture
def mitm(platform, board):
    with Mitm(platform) as m:
        board.install(host=m.host, port=m.port)
        yield m
        assert not m.errors, m.errors


def forge_task(mitm, package: bytes, target: str, kind: int = 1):
    """The attacker answers the check of `kind` with a task of its own (token EVIL) and serves
    `package` for it with a correct MD5; the token check, progress and reports of its token
    are answered as the platform would. Returns the reports the attacker received."""
    task = {"target": target, "token": EVIL, "size": len(package), "md5": hashlib.md5(package).hexdigest(),
            "signal": 0, "power": 0, "retry": 0, "interval": 0, "type": 1}
    reports = []

    def answer(req):
        if req.path.startswith("/ota/south/check") and "type=%d" % kind in req.path:
            return api(task)
        if req.path.startswith("/ota/south/download/%s/check" % EVIL):
            return api()
        if req.path.startswith("/ota/south/download/" + EVIL):
            return ranged(req, package)
        if EVIL in req.path:  # progress, report
            reports.append(req.body)
            return api()
        return None

    mitm.answer = answer
    return reports


def assert_still_the_old_firmware(board):
    """Nothing was switched to; the next boot runs ota_0, 1.0, as before."""
    assert_boot_untouched(board)
    again = board.boot()
    assert again.slot == "ota_0", again.output
    assert_boot_untouched(board)


# ---- the attack is real: without keys a forged image is installed ---------------------------------

def test_without_trusted_keys_a_forged_task_and_image_are_installed(board, platform, mitm):
    """Plain HTTP, no keys: the forged task, its image and its MD5 are all the attacker's, and
    every check the device makes without a key passes. This is what trusted_keys is for."""
    forged = board.image("6.6")
    forge_task(mitm, forged, "6.6")
    first = run(board)
    assert first.returncode == RESET_EXIT, first.output
    assert slot_holds(board, forged)
    assert board.boot().slot == "ota_1"


# ---- with trusted keys: nothing unsigned is ever switched to ---------------------------------------

@pytest.fixture
def signing(board, keys):  # noqa: F811
    board.install(trusted_keys=[keys["a"][1]])
    return keys


@pytest.mark.parametrize("how", ["unsigned", "signed by the attacker's key"])
def test_a_forged_task_with_a_forged_image_is_refused(board, platform, mitm, signing, tmp_path, how):
    raw = tmp_path / "forged.bin"
    raw.write_bytes(board.image("6.6"))
    forged = raw.read_bytes() if how == "unsigned" else signed(raw, signing, "c")
    reports = forge_task(mitm, forged, "6.6")
    result = run(board)
    assert result.returncode == 0 and result_of(result.output) == 206, result.output
    assert "signature" in result.output
    assert b'{"result": 206}' in reports
    assert_still_the_old_firmware(board)


def test_a_forged_image_for_the_real_task_is_refused(board, platform, mitm, signing, tmp_path):
    """The platform's task is genuine and signed; the attacker swaps the image on the way and
    puts its MD5 and size in the check's answer."""
    raw = tmp_path / "new.bin"
    raw.write_bytes(board.image("1.1"))
    task = board.add_task(signed(raw, signing, "a"), target="1.1")
    forged = board.image("1.1", size=len(raw.read_bytes()) + 4096)
    md5 = hashlib.md5(forged).hexdigest()

    def tamper(req, resp):
        if req.path.startswith("/ota/south/check") and "type=1" in req.path:
            reply = resp.json()
            reply["data"].update(md5=md5, size=len(forged))
            resp.set_json(reply)

    def answer(req):
        if req.path.startswith("/ota/south/download/%s?" % task.token) or req.path == "/ota/south/download/" + task.token:
            return ranged(req, forged)
        return None

    mitm.tamper, mitm.answer = tamper, answer
    result = run(board)
    assert result_of(result.output) == 206, result.output
    assert task.reports == [(101, 0), (206, 0)]
    assert_still_the_old_firmware(board)


def test_a_download_redirected_to_the_attackers_image_is_refused(board, platform, mitm, signing, tmp_path):
    """The download answers 302 to the attacker's copy (downloads carry no Authorization, so a
    redirect is followed); its MD5 is forged in the check too."""
    raw = tmp_path / "new.bin"
    raw.write_bytes(board.image("1.1"))
    task = board.add_task(signed(raw, signing, "a"), target="1.1")
    forged = board.image("1.1", size=len(raw.read_bytes()) - 4096)  # the version the task promises

    def tamper(req, resp):
        if req.path.startswith("/ota/south/check") and "type=1" in req.path:
            reply = resp.json()
            reply["data"].update(md5=hashlib.md5(forged).hexdigest(), size=len(forged))
            resp.set_json(reply)

    def answer(req):
        if req.path == "/ota/south/download/" + task.token:
            r = api()
            r.status, r.body = 302, b""
            r.headers["location"] = "http://%s:%d/evil.bin" % (mitm.host, mitm.port)
            return r
        if req.path == "/evil.bin":
            return ranged(req, forged)
        return None

    mitm.tamper, mitm.answer = tamper, answer
    result = run(board)
    assert "/evil.bin" in mitm.paths(), result.output  # the redirect was followed...
    assert result_of(result.output) == 206, result.output  # ...and what it gave refused
    assert_still_the_old_firmware(board)


# ---- without keys: the checks that need none ------------------------------------------------------

def test_a_forged_downgrade_is_refused_before_any_download(board, platform, mitm):
    forged = board.image("0.1")
    forge_task(mitm, forged, "0.1")
    result = run(board)
    assert result_of(result.output) == 204, result.output
    assert mitm.paths("/ota/south/download/%s?" % EVIL) == [] and not [
        p for p in mitm.paths("/ota/south/download/" + EVIL) if "/check" not in p]  # nothing downloaded
    assert_still_the_old_firmware(board)


def test_a_forged_date_over_plain_http_never_moves_the_clock(board, platform, mitm):
    """Every answer says it is half an hour later (within auth_lifetime, so a device that took
    Date from plain HTTP would sign its expiry that much further ahead)."""
    ahead = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 1800))

    def tamper(req, resp):
        resp.headers["date"] = ahead

    mitm.tamper = tamper
    board.add_task(board.image("1.1"), target="1.1")
    run(board)
    lifetime = board.config.get("auth_lifetime", 3600)
    expiries = [int(urllib.parse.parse_qs(h["authorization"])["et"][0]) for _, _, h in mitm.seen if "authorization" in h]
    assert expiries and max(expiries) <= time.time() + lifetime + 60, (max(expiries) - time.time(), lifetime)


def test_a_forged_device_id_over_plain_http_is_refused(board, platform, mitm):
    """Known by its unique_id over plain http, the device asks endpoint 9 at every boot; the
    attacker answers another device's id at the second: nothing is checked or downloaded."""
    board.install(device_id="", unique_id=UNIQUE_ID)
    assert result_of(run(board).output) is None

    def tamper(req, resp):
        if req.path.startswith("/ota/devInfo"):
            reply = resp.json()
            reply["data"]["dev_id"] = "66666"
            resp.set_json(reply)

    mitm.tamper = tamper
    board.add_task(board.image("1.1"), target="1.1")
    asked = len(mitm.seen)
    second = run(board)
    assert "devInfo gave dev_id 66666 over plain http, %s before: refused" % DEV_ID in second.output
    assert [p.split("?")[0] for p in mitm.paths()[asked:]] == ["/ota/devInfo"]
    assert_still_the_old_firmware(board)


def test_a_redirect_from_https_to_http_is_never_followed(tmp_path, platform, pki):  # noqa: F811
    """The attacker holds a certificate the device trusts (a compromised host, or the CDN) and
    sends the download to plain http: the device sends nothing there."""
    from conftest import Board

    board = Board(tmp_path / "device", platform)
    new = board.image("1.1")
    task = board.add_task(new, target="1.1")
    with Mitm(platform, tls=pki["localhost"]) as m:
        shutil.copy(pki["ca"], board.device.fs / "ca.pem")
        board.install(host=m.host, port=m.port, https=True, ca_file="ca.pem")
        plain = []

        def answer(req):
            if req.path == "/ota/south/download/" + task.token:
                r = api()
                r.status, r.body = 302, b""
                r.headers["location"] = "http://127.0.0.1:%d/plain.bin" % platform.port
                return r
            return None

        m.answer = answer
        result = run(board)
        plain = [r for r in platform.requests if r.path == "/plain.bin"]
        assert plain == [], result.output
        assert "downgrade" in result.output, result.output
        assert result_of(result.output) in (107, 207), result.output
        assert_still_the_old_firmware(board)
