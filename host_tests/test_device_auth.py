"""firmware/onenet_ota/auth.py under MicroPython, checked against an independent CPython computation."""
import base64
import calendar
import email.utils
import hashlib
import hmac
import json
import random
import urllib.parse

import pytest

from sim import micropython


def run_device(code, cases=None):
    """Run `code` in micropython with `cases` (JSON) readable from stdin; return its stdout lines."""
    prelude = "import sys, json\nCASES = json.loads(sys.stdin.read())\n"
    res = micropython.run(["-c", prelude + code], input=json.dumps(cases), timeout=30)
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout.splitlines(), res.stdout + res.stderr


def reference(access_key, res, et, method):
    """The header as the OneNET docs describe it, computed with CPython's hmac."""
    version = "2018-10-31"
    msg = "\n".join([str(et), method, res, version]).encode()
    sig = base64.b64encode(hmac.new(base64.b64decode(access_key), msg, method).digest()).decode()
    q = lambda v: urllib.parse.quote(v, safe="")
    return "version=%s&res=%s&et=%s&method=%s&sign=%s" % (q(version), q(res), et, q(method), q(sig))


def keys():
    rnd = random.Random(7)
    found = ["dGVzdGtleQ=="]
    # keys whose base64 holds + / = and signatures that do, short and longer than the HMAC block
    for size in (1, 16, 20, 32, 48, 63, 64, 65, 100):
        found.append(base64.b64encode(bytes(rnd.randrange(256) for _ in range(size))).decode())
    found.append(base64.b64encode(b"\xfb\xff\xbf" * 11).decode())  # '+//' all over
    return found


def test_keys_cover_special_characters():
    joined = "".join(keys())
    assert "+" in joined and "/" in joined and "=" in joined


def test_token_matches_cpython_for_all_methods_and_keys():
    cases = []
    for i, key in enumerate(keys()):
        for method in ("md5", "sha1", "sha256"):
            for res in ("products/385142", "products/385142/devices/dev-01_x"):
                cases.append([key, res, 1700000000 + 977 * i, method])
    out, _ = run_device(
        "import binascii\nfrom onenet_ota import auth\n"
        "for k, r, et, m in CASES:\n"
        "    print(auth.token(binascii.a2b_base64(k), r, et, m))\n", cases)
    expected = [reference(*c) for c in cases]
    assert out == expected
    signs = "".join(urllib.parse.unquote(e.rsplit("sign=", 1)[1]) for e in expected)
    assert "+" in signs and "/" in signs and "=" in signs  # the encoding was really exercised
    assert "%2B" in "".join(out) and "%2F" in "".join(out) and "%3D" in "".join(out)


def test_hmac_matches_cpython_for_long_keys_and_messages():
    cases = [[m, "ab" * n, "cd" * (3 * n)] for m in ("md5", "sha1", "sha256") for n in (0, 1, 64, 65, 200)]
    out, _ = run_device(
        "import binascii\nfrom onenet_ota import auth\n"
        "for m, k, msg in CASES:\n"
        "    print(binascii.hexlify(auth.hmac(m, binascii.unhexlify(k), binascii.unhexlify(msg))).decode())\n",
        cases)
    assert out == [hmac.new(bytes.fromhex(k), bytes.fromhex(msg), m).hexdigest() for m, k, msg in cases]


CLOCK = """
from onenet_ota import auth
T = [CASES["start"]]
auth._unix = lambda: T[0]
a = auth.Auth(CASES["pid"], CASES["key"], method=CASES["method"], lifetime=3600)
def show(tag):
    h = a.header()
    print(tag, a.et, h)
"""


def parse_header(h):
    return dict(kv.split("=", 1) for kv in h.split("&"))


def test_header_is_cached_and_renewed_before_expiry():
    key = keys()[3]
    cases = {"start": 1700000000, "pid": "385142", "key": key, "method": "sha1"}
    out, _ = run_device(CLOCK + """
show("t0")
T[0] += 3299; show("t3299")      # still 301 s left: cached
T[0] += 1; show("t3300")         # within the 300 s margin: renewed
a.renew(); show("forced")        # renew() forces a new header at once
""", cases)
    rows = [line.split(" ", 2) for line in out]
    assert [r[0] for r in rows] == ["t0", "t3299", "t3300", "forced"]
    assert rows[0][1] == rows[1][1] == "1700003600" and rows[0][2] == rows[1][2]
    assert rows[2][1] == str(1700000000 + 3300 + 3600)
    assert rows[2][2] == reference(key, "products/385142", 1700006900, "sha1")
    assert rows[3][1] == rows[2][1]  # same second, same expiry, freshly signed
    assert parse_header(rows[0][2])["res"] == "products%2F385142"


def test_clock_corrected_from_date_header():
    key = keys()[1]
    # a board whose clock is 40 minutes behind the server's (within the 3600 s lifetime)
    cases = {"start": 1700000000 - 2400, "pid": "9", "key": key, "method": "sha256"}
    out, _ = run_device(CLOCK + """
show("wrong")
print("sync", a.sync("Tue, 14 Nov 2023 22:13:20 GMT"), a.offset)
show("synced")
print("bad", a.sync(None), a.sync(""), a.sync("yesterday"), a.sync("Tue, 31 Apr 2023 00:00:00 GMT"))
T[0] += 5; print("jitter", a.sync(b"Tue, 14 Nov 2023 22:13:24 GMT"))
show("kept")
""", cases)
    assert out[0].split()[1] == str(1700000000 - 2400 + 3600)
    assert out[1] == "sync True 2400"
    assert out[2].split()[1] == str(1700000000 + 3600)
    assert out[2].split()[2] == reference(key, "products/9", 1700003600, "sha256")
    assert out[3] == "bad False False False False"
    assert out[4] == "jitter True"
    # a one-second correction does not re-sign: the cached header is still good
    assert out[5].split()[1] == str(1700000000 + 3600)


def test_date_further_than_the_lifetime_is_not_taken():
    """Issue 14, Clock: a Date never moves the clock by more than auth_lifetime, so no Date
    (forged or not) makes the device sign an expiry further ahead than that."""
    key = keys()[1]
    # a board without NTP believes it is 2000-01-01: a 2023 Date is 23 years off
    cases = {"start": 946684800, "pid": "9", "key": key, "method": "sha256"}
    out, both = run_device(CLOCK + """
show("before")
print("far", a.sync("Tue, 14 Nov 2023 22:13:20 GMT"), a.offset, a.synced)
show("after")
T[0] = 1700000000
print("edge", a.sync("Tue, 14 Nov 2023 23:13:20 GMT"), a.offset)    # +3600: taken
print("over", a.sync("Tue, 14 Nov 2023 23:13:21 GMT"), a.offset)    # +3601: not
print("under", a.sync("Tue, 14 Nov 2023 21:13:19 GMT"), a.offset)   # -3601: not
show("edge")
""", cases)
    out = [line for line in out if not line.startswith("ota:")]
    assert out[0].split()[1] == out[2].split()[1] == str(946684800 + 3600)  # not moved, not re-signed
    assert out[1] == "far False 0 True"
    assert "ota: clock: the server's Date is %d s from the device's clock" % (1700000000 - 946684800) in both
    assert out[3:6] == ["edge True 3600", "over False 3600", "under False 3600"]
    assert out[-1].split()[1] == str(1700000000 + 3600 + 3600)  # at most the lifetime ahead


def test_a_clock_set_back_re_signs_a_header_that_runs_too_far_ahead():
    key = keys()[1]
    cases = {"start": 1700000000, "pid": "9", "key": key, "method": "sha256"}
    out, _ = run_device(CLOCK + """
show("t0")
print("back", a.sync("Tue, 14 Nov 2023 22:13:15 GMT"))   # 5 s back: et 3605 s ahead
show("t1")
T[0] += 100; show("t2")                                   # 3505 s ahead again: kept
""", cases)
    assert out[0].split()[1] == "1700003600"
    assert out[1] == "back True"
    assert out[2].split()[1] == str(1700000000 - 5 + 3600)  # re-signed: never beyond the lifetime
    assert out[3].split()[1:] == out[2].split()[1:]


def test_device_level_res():
    key = keys()[5]
    out, _ = run_device(
        "from onenet_ota import auth\nauth._unix = lambda: 1600000000\n"
        "print(auth.Auth('1', CASES, res='products/1/devices/pump 7', method='md5').header())\n", key)
    assert out == [reference(key, "products/1/devices/pump 7", 1600003600, "md5")]
    assert "res=products%2F1%2Fdevices%2Fpump%207" in out[0]


DATES = [
    "Sun, 06 Nov 1994 08:49:37 GMT",
    "Thu, 01 Jan 1970 00:00:00 GMT",
    "Sat, 01 Jan 2000 00:00:00 GMT",
    "Tue, 29 Feb 2000 12:00:00 GMT",  # leap (divisible by 400)
    "Thu, 29 Feb 2024 23:59:59 GMT",  # leap
    "Fri, 28 Feb 2100 00:00:01 GMT",  # 2100 is not leap
    "Mon, 01 Mar 2100 00:00:00 GMT",
    "Tue, 19 Jan 2038 03:14:08 GMT",  # one past 32-bit time_t
    "Sun, 07 Feb 2106 06:28:16 GMT",  # one past unsigned 32 bits
    "Wed, 31 Dec 2399 23:59:59 GMT",
    "Fri, 31 Dec 9999 23:59:59 GMT",
    "Mon, 15 Mar 2027 04:05:06 GMT",
]
BAD_DATES = [
    "Sun, 06 Nov 1994 08:49:37 UTC", "Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994",
    "Fri, 29 Feb 2100 00:00:00 GMT", "Sun, 31 Jun 2024 00:00:00 GMT", "Sun, 00 Jun 2024 00:00:00 GMT",
    "Sun, 06 Nox 1994 08:49:37 GMT", "Sun, 06 Nov 1994 24:00:00 GMT", "Sun, 06 Nov 1994 08:60:00 GMT",
    "Sun, 6 Nov 1994 08:49:37 GMT", "Sun, 06 Nov 94 08:49:37 GMT", "Sun, 06 Nov 1994 08:49 GMT",
    "Sun, +6 Nov 1994 08:49:37 GMT", "", "GMT", "Sun, 06 ov 1994 08:49:37 GMT",
]


def test_parse_date_matches_cpython():
    out, _ = run_device(
        "from onenet_ota import clock\n"
        "for d in CASES[0]:\n    print(clock.parse_date(d))\n"
        "for d in CASES[1]:\n"
        "    try:\n        print('accepted', d, clock.parse_date(d))\n"
        "    except ValueError:\n        print('ValueError')\n", [DATES, BAD_DATES])
    expected = [str(calendar.timegm(email.utils.parsedate_tz(d)[:9])) for d in DATES]
    assert out[:len(DATES)] == expected
    assert out[len(DATES):] == ["ValueError"] * len(BAD_DATES)


def test_key_never_shows():
    key = keys()[2]
    raw = base64.b64decode(key)
    out, both = run_device("""
from onenet_ota import auth
a = auth.Auth("42", CASES)
print(a); print(repr(a)); print(str(a)); print(a.header())
try:
    auth.Auth("42", CASES, method="sha512")
except ValueError as e:
    print("ValueError", e)
try:
    auth.Auth("42", "!!not base64!!")
except ValueError as e:
    print("ValueError", e)
""", key)
    for form in (key, raw.hex(), repr(raw), base64.b64encode(raw).decode().rstrip("=")):
        assert form not in both
    assert urllib.parse.quote(key, safe="") not in both
    assert any(line.startswith("ValueError method") for line in out)


@pytest.mark.parametrize("method", ["md5", "sha1", "sha256"])
def test_auth_class_header_equals_reference(method):
    key = keys()[-1]
    out, _ = run_device(
        "from onenet_ota import auth\nauth._unix = lambda: 1234567890\n"
        "print(auth.Auth('p1', CASES, method='%s', lifetime=100).header())\n" % method, key)
    assert out == [reference(key, "products/p1", 1234567990, method)]
