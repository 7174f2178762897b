"""OneNET's ``Authorization`` header, host side: make one, or verify one as the platform does.

Header::

    version=2018-10-31&res=products%2F{pid}&et={expiry}&method={md5|sha1|sha256}&sign={sig}

    sig = base64(HMAC_method(key=base64decode(access_key),
                             msg=et + "\\n" + method + "\\n" + res + "\\n" + version))

Every value is URL-encoded (``/`` -> ``%2F``, ``+`` -> ``%2B``, ``=`` -> ``%3D``). ``res`` is
``products/{pid}`` for the product access key, or ``products/{pid}/devices/{name}`` for a
device key. ``et`` is the Unix time after which the header is refused.

``verify`` is deliberately strict, so that the device code is held to the letter of the spec:
exactly the five fields, each once, each value URL-encoded (a raw ``/``, ``+`` or ``=`` in a
value is refused even though a lenient server might decode it), version ``2018-10-31``, a
known method, ``now <= et``, a ``res`` we hold a key for, and the signature compared in
constant time.
"""
import base64
import binascii
import hashlib
import hmac
import re
from urllib.parse import quote, unquote

VERSION = "2018-10-31"
METHODS = ("md5", "sha1", "sha256")
FIELDS = ("version", "res", "et", "method", "sign")

# A URL-encoded value holds only unreserved characters and %XX escapes.
_ENCODED_VALUE = re.compile(r"(?:[A-Za-z0-9._~-]|%[0-9A-Fa-f]{2})*\Z")


def product_res(product_id) -> str:
    return "products/%s" % product_id


def device_res(product_id, device_name) -> str:
    return "products/%s/devices/%s" % (product_id, device_name)


def signature(access_key: str, et, method: str, res: str, version: str = VERSION) -> str:
    """The base64 signature (not yet URL-encoded) for these values."""
    if method not in METHODS:
        raise ValueError("method must be one of %s, not %r" % (", ".join(METHODS), method))
    key = base64.b64decode(access_key, validate=True)
    message = "%s\n%s\n%s\n%s" % (et, method, res, version)
    digest = hmac.new(key, message.encode(), getattr(hashlib, method)).digest()
    return base64.b64encode(digest).decode()


def make(product_id, access_key: str, et, method: str = "sha1", res: str = None) -> str:
    """The header value for ``product_id`` signed with ``access_key`` (base64), valid until ``et``."""
    res = res or product_res(product_id)
    et = str(int(et))
    values = (
        ("version", VERSION),
        ("res", res),
        ("et", et),
        ("method", method),
        ("sign", signature(access_key, et, method, res)),
    )
    return "&".join("%s=%s" % (name, quote(value, safe="")) for name, value in values)


def parse(header: str) -> dict:
    """The decoded fields of a header; ``ValueError`` saying why when it is malformed."""
    fields = {}
    for part in (header or "").strip().split("&"):
        name, equals, raw = part.partition("=")
        if not equals:
            raise ValueError("field without '=': %r" % part)
        if name not in FIELDS:
            raise ValueError("unknown field %r" % name)
        if name in fields:
            raise ValueError("field %r given twice" % name)
        if not _ENCODED_VALUE.match(raw):
            raise ValueError("value of %r is not URL-encoded: %r" % (name, raw))
        fields[name] = unquote(raw)
    missing = [name for name in FIELDS if name not in fields]
    if missing:
        raise ValueError("missing field(s): %s" % ", ".join(missing))
    return fields


def verify(header: str, keys_by_res: dict, now: float):
    """``(ok, reason)``: is ``header`` a valid signature, by a key of ``keys_by_res``
    (res -> base64 access key), not expired at Unix time ``now``?"""
    try:
        fields = parse(header)
    except ValueError as error:
        return False, "malformed: %s" % error
    if fields["version"] != VERSION:
        return False, "unsupported version %r" % fields["version"]
    if fields["method"] not in METHODS:
        return False, "unsupported method %r" % fields["method"]
    if not fields["et"].isdigit():
        return False, "et is not a Unix time: %r" % fields["et"]
    if now > int(fields["et"]):
        return False, "expired: et %s is before now %d" % (fields["et"], now)
    key = keys_by_res.get(fields["res"])
    if key is None:
        return False, "no key for res %r" % fields["res"]
    try:
        expected = signature(key, fields["et"], fields["method"], fields["res"], fields["version"])
    except (binascii.Error, ValueError) as error:
        return False, "access key is not base64: %s" % error
    if not hmac.compare_digest(expected.encode(), fields["sign"].encode()):
        return False, "bad signature"
    return True, "ok"
