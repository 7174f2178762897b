"""south.South against scripted servers (plain and TLS, from test_http_client): what a network
or a platform that answers oddly cannot make the API calls do (issue 14, "No downgrade, no
hijack")."""
import json
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


def http_date(t):
    return time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(t))


def expiry(head):
    return int(head.split("&et=", 1)[1].split("&", 1)[0])


AUTH_FAILED = b'{"errno": 1, "error": "token auth failed"}'


@pytest.mark.parametrize("https, ahead, taken", [
    (False, 1800, False),  # plain http: no Date is taken, however near
    (True, 1800, True),  # over TLS, within auth_lifetime (3600): taken
    (True, -1800, True),
    (True, 3601 + 60, False),  # over TLS, but further than auth_lifetime: not taken
    (True, -(3601 + 60), False),
])
@pytest.mark.parametrize("first", ["ok", "errno1"])
def test_server_date_sets_the_clock_only_over_tls_and_within_the_lifetime(serve, pki, https, ahead, taken, first):
    """Issue 14, Clock: the first answer's Date (or that of an errno 1) corrects the clock
    only when it came over TLS, and never by more than auth_lifetime."""
    date = "Date: " + http_date(time.time() + ahead)
    replies = [reply(200, OK if first == "ok" else AUTH_FAILED, [date]), reply(200, OK, [date]), reply(200, OK)]
    s = serve(replies, tls=pki["localhost"] if https else None)
    t0 = time.time()
    got, out = south("""
api("a", lambda: p.report_version("1.0", None))
api("b", lambda: p.report_version("1.0", None))
print("offset", p.auth.offset)
""", s, https=https, ca=pki["ca"] if https else "")
    assert got["a"] == got["b"] == "OK None", out
    heads = [h for h, _ in s.requests]
    assert len(heads) == (3 if first == "errno1" else 2)
    first_et, last_et = expiry(heads[0]), expiry(heads[-1])
    assert abs(first_et - (t0 + 3600)) < 15  # the device's own clock before any answer
    if taken:
        assert int(got["offset"]) == pytest.approx(ahead, abs=15)
        assert abs(last_et - (t0 + ahead + 3600)) < 15
    else:
        assert got["offset"] == "0"
        assert abs(last_et - (t0 + 3600)) < 15  # never further ahead than the lifetime
    assert ("more than auth_lifetime: not taken" in out) == (https and not taken)


def dev_info(dev_id):
    return reply(200, b'{"errno": 0, "error": "succ", "data": {"dev_id": %d}}' % dev_id)


@pytest.mark.parametrize("https", [False, True])
def test_identify_takes_a_dev_id_for_good_only_over_tls(serve, pki, https):
    """Issue 14, Identity: over TLS the id from endpoint 9 is remembered and not asked
    again; over plain http it is asked at every boot and compared with the answer before."""
    s = serve([dev_info(77), dev_info(77), dev_info(66)], tls=pki["localhost"] if https else None)
    got, out = south("""
api("first", lambda: p.identify(None, None))
print("id1", p.dev_id)
api("known", lambda: (south.South(Cfg).identify("77", None)))
p2 = south.South(Cfg); api("again", lambda: p2.identify(None, "77")); print("id2", p2.dev_id)
p3 = south.South(Cfg); api("other", lambda: p3.identify(None, "77")); print("id3", p3.dev_id)
""", s, https=https, ca=pki["ca"] if https else "", dev="")
    assert got["id1"] == "77"
    assert got["known"] == "OK None"  # a dev_id taken over TLS before: not asked
    if https:
        assert got["first"] == "OK ('dev_id_tls', '77')"
        # (the config's https is what identify looks at: over TLS the answer is taken)
        assert got["again"] == "OK ('dev_id_tls', '77')" and got["other"] == "OK ('dev_id_tls', '66')"
    else:
        assert got["first"] == "OK ('dev_id_http', '77')"  # kept only to compare with
        assert got["again"] == "OK None" and got["id2"] == "77"
        assert got["other"] == "ValueError devInfo gave dev_id 66 over plain http, 77 before: refused"
        assert got["id3"] == ""  # no id: no call with it
    assert [h.split(" ")[1].split("?")[0] for h, _ in s.requests] == ["/ota/devInfo"] * 3


def test_a_dev_id_looked_up_over_plain_http_is_asked_again_and_a_changed_one_refused(board, platform):
    """End to end over plain http: the id from endpoint 9 is asked at every boot; when the
    answer changes (a man in the middle, or the platform) the cycle stops before any check or
    download, and the application still starts."""
    from conftest import DEV_ID, UNIQUE_ID
    from test_fota_codes import assert_boot_untouched, result_of, run

    board.install(device_id="", unique_id=UNIQUE_ID)
    first = run(board)
    assert result_of(first.output) is None, first.output
    assert platform.sequence()[:2] == ["dev_info", "version_report"]
    state = json.loads((board.device.fs / "ota_state.json").read_text())
    assert state.get("dev_id_http") == DEV_ID and "dev_id_tls" not in state
    second = run(board)
    assert result_of(second.output) is None, second.output
    assert platform.sequence().count("dev_info") == 2  # asked again: not taken for good
    # the next answer names another device
    platform.devices[DEV_ID].unique_id = "gone"
    platform.add_device("20002", unique_id=UNIQUE_ID)
    board.add_task(board.image("1.1"), target="1.1")
    asked = len(platform.requests)
    third = run(board)
    assert "devInfo gave dev_id 20002 over plain http, %s before: refused" % DEV_ID in third.output
    assert result_of(third.output) == "none"
    assert [r.endpoint for r in platform.requests[asked:]] == ["dev_info"]  # nothing after it
    assert_boot_untouched(board)


def test_a_device_known_by_its_unique_id_confirms_its_upgrade_and_delivers_a_late_report(board, platform):
    """The dev_id is looked up before the first call that names it, whatever the cycle does
    first: before, only the check phase looked it up, so the confirmation after the reboot
    (and a report kept for the next cycle) asked the platform about dev_id None, and every
    upgrade of a device configured by unique_id was rolled back."""
    from conftest import DEV_ID, UNIQUE_ID
    from sim.device import RESET_EXIT
    from test_fota_codes import assert_upgraded, run

    board.install(device_id="", unique_id=UNIQUE_ID)
    new = board.image("1.1")
    task = board.add_task(new, target="1.1")
    first = run(board)
    assert first.returncode == RESET_EXIT, first.output
    assert_upgraded(board, platform, task, new)
    confirming = [r for r in platform.requests if r.endpoint in ("tasking", "report")]
    assert confirming and all(r.query.get("dev_id") == DEV_ID for r in confirming)
