"""tools.onenet_auth against signatures computed independently of it.

The literal vectors below were produced with ``openssl dgst -<method> -mac HMAC -macopt
hexkey:<base64-decoded key as hex> -binary | base64`` over the message
``et\\nmethod\\nres\\nversion``; ``test_openssl_agrees_now`` recomputes one of them with
openssl at test time when it is installed.
"""
import base64
import shutil
import subprocess

import pytest

from tools import onenet_auth

PRODUCT_ID = "345678"
ACCESS_KEY = "c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seS0wMTIzNDU2Nzg5YWJjZGVm"  # base64 of a test key
ET = 1700000000
VECTORS = {
    "md5": "R4T7xl74oehcS5C/8ni96Q==",
    "sha1": "lFvxXQLECpyaEhGxQxHJHowY+g8=",
    "sha256": "cArPaGcKR1vS/ww0Y+Qeezqi3NsSDFr5ggg5GCH+TfY=",
}
DEVICE_KEY = "ZGV2aWNlLWtleS0wMDAx"
DEVICE_RES = "products/345678/devices/esp32-01"
DEVICE_VECTOR_SHA256 = "T8WQdIviZ3t2VFFbZvSE6TWpAN8tr2KGk6xd8RyZBGk="

KEYS = {"products/345678": ACCESS_KEY}


def url_encode(text):
    """Percent-encode everything but unreserved characters, written out by hand."""
    unreserved = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
    return "".join(c if c in unreserved else "%%%02X" % ord(c) for c in text)


@pytest.mark.parametrize("method", sorted(VECTORS))
def test_make_matches_known_vector(method):
    header = onenet_auth.make(PRODUCT_ID, ACCESS_KEY, ET, method=method)
    assert header == (
        "version=2018-10-31&res=products%2F345678&et=1700000000&method=" + method
        + "&sign=" + url_encode(VECTORS[method])
    )


def test_sign_is_url_encoded():
    header = onenet_auth.make(PRODUCT_ID, ACCESS_KEY, ET, method="sha256")  # sig has + / =
    sign = header.split("&sign=")[1]
    assert "+" not in sign and "/" not in sign and "=" not in sign
    assert "%2B" in sign and "%2F" in sign and sign.endswith("%3D")


def test_device_level_res_vector():
    header = onenet_auth.make(PRODUCT_ID, DEVICE_KEY, 1800000000, method="sha256", res=DEVICE_RES)
    assert "res=products%2F345678%2Fdevices%2Fesp32-01" in header
    assert header.endswith("&sign=" + url_encode(DEVICE_VECTOR_SHA256))
    ok, reason = onenet_auth.verify(header, {DEVICE_RES: DEVICE_KEY}, now=1800000000)
    assert ok, reason
    ok, reason = onenet_auth.verify(header, KEYS, now=1800000000)
    assert not ok and "no key" in reason


@pytest.mark.skipif(not shutil.which("openssl"), reason="openssl not installed")
def test_openssl_agrees_now():
    message = "%d\nsha256\nproducts/%s\n2018-10-31" % (ET, PRODUCT_ID)
    hexkey = base64.b64decode(ACCESS_KEY).hex()
    digest = subprocess.run(
        ["openssl", "dgst", "-sha256", "-mac", "HMAC", "-macopt", "hexkey:" + hexkey, "-binary"],
        input=message.encode(), capture_output=True, check=True,
    ).stdout
    assert onenet_auth.signature(ACCESS_KEY, ET, "sha256", "products/" + PRODUCT_ID) == \
        base64.b64encode(digest).decode()


@pytest.mark.parametrize("method", sorted(VECTORS))
def test_verify_accepts_each_method_until_et(method):
    header = onenet_auth.make(PRODUCT_ID, ACCESS_KEY, ET, method=method)
    assert onenet_auth.verify(header, KEYS, now=ET - 1000) == (True, "ok")
    assert onenet_auth.verify(header, KEYS, now=ET)[0]
    ok, reason = onenet_auth.verify(header, KEYS, now=ET + 1)
    assert not ok and "expired" in reason


def test_verify_accepts_fields_in_any_order_and_lowercase_escapes():
    fields = dict(part.split("=", 1) for part in onenet_auth.make(PRODUCT_ID, ACCESS_KEY, ET).split("&"))
    reordered = "&".join("%s=%s" % (name, fields[name].lower() if name == "res" else fields[name])
                         for name in ("sign", "method", "et", "res", "version"))
    assert onenet_auth.verify(reordered, KEYS, now=ET)[0]


def tamper(header, name, value):
    return "&".join("%s=%s" % (name, value) if part.startswith(name + "=") else part
                    for part in header.split("&"))


@pytest.mark.parametrize("change, reason", [
    (lambda h: tamper(h, "sign", url_encode(VECTORS["md5"])), "bad signature"),
    (lambda h: tamper(h, "et", str(ET + 10)), "bad signature"),
    (lambda h: tamper(h, "method", "md5"), "bad signature"),
    (lambda h: tamper(h, "method", "sha512"), "unsupported method"),
    (lambda h: tamper(h, "version", "2020-01-01"), "unsupported version"),
    (lambda h: tamper(h, "res", "products%2F999"), "no key"),
    (lambda h: tamper(h, "res", "products/345678"), "not URL-encoded"),
    (lambda h: tamper(h, "sign", VECTORS["sha1"]), "not URL-encoded"),
    (lambda h: tamper(h, "et", "soon"), "et is not a Unix time"),
    (lambda h: h + "&et=1", "twice"),
    (lambda h: h + "&extra=1", "unknown field"),
    (lambda h: h.replace("&sign=", "&nosign="), "unknown field"),
    (lambda h: h.split("&sign=")[0], "missing field"),
    (lambda h: "", "malformed"),
])
def test_verify_refuses(change, reason):
    header = change(onenet_auth.make(PRODUCT_ID, ACCESS_KEY, ET, method="sha1"))
    ok, why = onenet_auth.verify(header, KEYS, now=ET - 60)
    assert not ok
    assert reason in why


def test_verify_refuses_other_key():
    other = base64.b64encode(b"another key").decode()
    header = onenet_auth.make(PRODUCT_ID, other, ET)
    assert onenet_auth.verify(header, KEYS, now=ET) == (False, "bad signature")


def test_make_refuses_unknown_method():
    with pytest.raises(ValueError):
        onenet_auth.make(PRODUCT_ID, ACCESS_KEY, ET, method="sha512")
