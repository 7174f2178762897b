# The OneNET Authorization header, computed on the device.
#
#   version=2018-10-31&res=products%2F{pid}&et={et}&method={m}&sign={sig}
#   sig = base64(HMAC_m(base64decode(access_key), et "\n" m "\n" res "\n" version))
#
# MicroPython has hashlib but no hmac, so HMAC is done here over hashlib. The device clock
# may be a little off: Auth.sync() corrects it from the server's HTTP Date header (parsed by
# clock.py, imported for that and dropped again), which the caller takes only from an answer
# over TLS, and never by more than the lifetime: a forged Date cannot make the device sign
# an expiry further ahead than that. The access key is kept only as raw bytes in a private
# attribute and never printed.
import binascii
import hashlib
import time
from micropython import const

VERSION = "2018-10-31"
METHODS = ("md5", "sha1", "sha256")
_BLOCK = const(64)  # HMAC block size of md5, sha1 and sha256
_SKEW = const(10)  # a clock correction larger than this renews the header at once
_MARGIN = const(300)  # a header is renewed this many seconds before it runs out
# Older ports count time.time() from 2000-01-01; the header needs Unix seconds.
_SHIFT = 946684800 if time.gmtime(0)[0] == 2000 else 0


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


class Auth:
    """The Authorization header for one product (or device) key, cached until near expiry.

    res defaults to "products/{product_id}"; device-level keys pass
    res="products/{pid}/devices/{name}". The header lives `lifetime` seconds and is
    renewed 5 minutes before it runs out.
    """

    def __init__(self, product_id, access_key, res=None, method="sha256",
                 lifetime=3600):
        if method not in METHODS:
            raise ValueError("method must be md5, sha1 or sha256")
        self.res = res or "products/%s" % product_id
        self.method = method
        self.lifetime = lifetime
        self.offset = 0  # server clock minus device clock, seconds (at most the lifetime)
        self.synced = False  # a server's Date was read (taken or not)
        self.et = 0  # expiry of the cached header
        self._key = binascii.a2b_base64(access_key)
        self._hdr = None

    def now(self):
        """Unix seconds on the device clock, corrected by the last sync()."""
        return _unix() + self.offset

    def header(self):
        """The Authorization header value; a new one when the cached one is about to expire,
        or runs further ahead than the lifetime (the clock was set back since)."""
        now = self.now()
        if self._hdr is None or not now + _MARGIN < self.et <= now + self.lifetime:
            self.et = now + self.lifetime
            self._hdr = token(self._key, self.res, self.et, self.method)
        return self._hdr

    def renew(self):
        """Forget the cached header: the next header() signs a new one."""
        self._hdr = None

    def sync(self, date):
        """Correct the clock from an HTTP Date header value (take it only from an answer over
        TLS); False if it was absent or bad, or further from the device's own clock than the
        lifetime (not taken, and logged)."""
        if not date:
            return False
        from onenet_ota import clock
        from onenet_ota.codes import drop, log

        try:
            offset = clock.parse_date(date) - _unix()
        except ValueError:
            return False
        finally:
            del clock
            drop("clock")
        self.synced = True  # a Date was read: the first answer's is not looked at again
        if abs(offset) > self.lifetime:
            log("clock: the server's Date is %d s from the device's clock, more than auth_lifetime: not taken" % offset)
            return False
        if abs(offset - self.offset) > _SKEW:
            self.renew()
        self.offset = offset
        return True
