# The OneNET Authorization header, computed on the device.
#
#   version=2018-10-31&res=products%2F{pid}&et={et}&method={m}&sign={sig}
#   sig = base64(HMAC_m(base64decode(access_key), et "\n" m "\n" res "\n" version))
#
# MicroPython has hashlib but no hmac, so HMAC is done here over hashlib. The device clock
# may be wrong (no NTP yet, or a port counting from 2000): Auth.sync() corrects it from the
# server's HTTP Date header. The access key is kept only as raw bytes in a private
# attribute and never printed.
import binascii
import hashlib
import time
from micropython import const

VERSION = "2018-10-31"
METHODS = ("md5", "sha1", "sha256")
_BLOCK = const(64)  # HMAC block size of md5, sha1 and sha256
_SKEW = const(10)  # a clock correction larger than this renews the header at once
# Older ports count time.time() from 2000-01-01; the header needs Unix seconds.
_SHIFT = 946684800 if time.gmtime(0)[0] == 2000 else 0
_MONTHS = "JanFebMarAprMayJunJulAugSepOctNovDec"
_MDAYS = b"\x1f\x1c\x1f\x1e\x1f\x1e\x1f\x1f\x1e\x1f\x1e\x1f"


def hmac(method, key, msg):
    """HMAC (RFC 2104) of msg under key with hashlib.<method>, as raw bytes."""
    h = getattr(hashlib, method)
    if len(key) > _BLOCK:
        key = h(key).digest()
    key = bytes(key) + bytes(_BLOCK - len(key))
    inner = h(bytes(b ^ 0x36 for b in key))
    inner.update(msg)
    outer = h(bytes(b ^ 0x5C for b in key))
    outer.update(inner.digest())
    return outer.digest()


def quote(s):
    """Percent-encode all but RFC 3986 unreserved characters (so / = + become %2F %3D %2B)."""
    out = bytearray()
    for b in s.encode():
        if 47 < b < 58 or 64 < b < 91 or 96 < b < 123 or b in b"-_.~":
            out.append(b)
        else:
            out.extend(b"%%%02X" % b)
    return out.decode()


def token(key, res, et, method="sha256"):
    """The header value for raw key bytes (already base64-decoded) and expiry et."""
    msg = "%d\n%s\n%s\n%s" % (et, method, res, VERSION)
    sign = binascii.b2a_base64(hmac(method, key, msg.encode()))[:-1].decode()
    return "version=%s&res=%s&et=%d&method=%s&sign=%s" % (
        VERSION, quote(res), et, method, quote(sign))


def _unix():
    return int(time.time()) + _SHIFT


def _digits(s, n):
    if len(s) != n or not s.isdigit():
        raise ValueError("bad date")
    return int(s)


def parse_date(s):
    """Unix seconds of an RFC 7231 IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT").

    Own civil-date arithmetic: time.mktime's epoch differs between ports.
    Anything else raises ValueError.
    """
    if isinstance(s, (bytes, bytearray)):
        s = bytes(s).decode()
    p = s.split()
    if len(p) != 6 or len(p[0]) != 4 or p[0][3] != "," or p[5] != "GMT" or len(p[2]) != 3:
        raise ValueError("bad date")
    m = _MONTHS.find(p[2])
    if m < 0 or m % 3:
        raise ValueError("bad date")
    m = m // 3 + 1
    y = _digits(p[3], 4)
    d = _digits(p[1], 2)
    hms = p[4].split(":")
    if len(hms) != 3:
        raise ValueError("bad date")
    hh, mi, ss = _digits(hms[0], 2), _digits(hms[1], 2), _digits(hms[2], 2)
    leap = m == 2 and y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)
    if not 1 <= d <= _MDAYS[m - 1] + leap or hh > 23 or mi > 59 or ss > 60:
        raise ValueError("bad date")
    # days since 1970-01-01 in the proleptic Gregorian calendar (H. Hinnant's days_from_civil)
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m - 3 if m > 2 else m + 9) + 2) // 5 + d - 1
    days = era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468
    return days * 86400 + hh * 3600 + mi * 60 + ss


class Auth:
    """The Authorization header for one product (or device) key, cached until near expiry.

    res defaults to "products/{product_id}"; device-level keys pass
    res="products/{pid}/devices/{name}". The header lives `lifetime` seconds and is
    renewed `margin` seconds before it runs out.
    """

    def __init__(self, product_id, access_key, res=None, method="sha256",
                 lifetime=3600, margin=300):
        if method not in METHODS:
            raise ValueError("method must be md5, sha1 or sha256")
        self.res = res or "products/%s" % product_id
        self.method = method
        self.lifetime = lifetime
        self.margin = margin
        self.offset = 0  # server clock minus device clock, seconds
        self.et = 0  # expiry of the cached header
        self._key = binascii.a2b_base64(access_key)
        self._hdr = None

    def now(self):
        """Unix seconds on the device clock, corrected by the last sync()."""
        return _unix() + self.offset

    def header(self):
        """The Authorization header value; a new one when the cached one is about to expire."""
        now = self.now()
        if self._hdr is None or now + self.margin >= self.et:
            self.et = now + self.lifetime
            self._hdr = token(self._key, self.res, self.et, self.method)
        return self._hdr

    def renew(self):
        """Forget the cached header: the next header() signs a new one."""
        self._hdr = None

    def sync(self, date):
        """Correct the clock from an HTTP Date header value; False if it was absent or bad."""
        if not date:
            return False
        try:
            offset = parse_date(date) - _unix()
        except ValueError:
            return False
        if abs(offset - self.offset) > _SKEW:
            self.renew()
        self.offset = offset
        return True
