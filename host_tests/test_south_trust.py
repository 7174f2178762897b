"""south.South against scripted servers (plain and TLS, from test_http_client): what a network
or a platform that answers oddly cannot make the API calls do (issue 14, "No downgrade, no
hijack")."""
import base64
import time

import pytest

from test_http_client import device, pki, reply, serve  # noqa: F401  (fixtures)

SOUTH = r"""
from onenet_ota import south
class Cfg:
    host, port, https, timeout, ca_file = HOST, PORT, HTTPS, 2, CA
    product_id, access_key, auth_method, auth_lifetime = "123456", "c2VjcmV0a2V5c2VjcmV0a2V5", "sha256", 3600
    manuf, model, cdn = 101, 10101, True
    device_id, unique_id = DEV, "uid-1"
p = south.South(Cfg)
def api(name, fn):
    try:
        print(name, "OK", repr(fn()))
    except Exception as e:
        print(name, type(e).__name__, e)
"""


def south(code, server, https=False, ca="", dev="42", **names):
    host = "localhost" if https else "127.0.0.1"
    return device(SOUTH + code, HOST=host, PORT=server.port, HTTPS=https, CA=ca, DEV=dev, **names)


OK = b'{"errno": 0, "error": "succ", "data": {"f_version": "1.0"}}'


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_api_calls_follow_no_redirect(serve, status):
    """A 3xx to an API call is a ServerError: nothing goes to the Location, the header least."""
    other = serve([reply(200, OK)] * 3)
    s = serve([reply(status, headers=["Location: " + other.url("/ota/device/version?dev_id=42")]),
               reply(status, headers=["Location: /ota/device/version?dev_id=42"]),
               reply(200, OK)])
    got, out = south("""
api("other", lambda: p.report_version("1.0", None))
api("same", lambda: p.report_version("1.0", None))
api("after", lambda: p.report_version("1.0", None))
""", s)
    assert got["other"] == got["same"] == "ServerError HTTP status %d" % status, out
    assert got["after"] == "OK None"
    assert other.accepted == 0
    assert len(s.requests) == 3 and all("\r\nAuthorization: " in h for h, _ in s.requests)
