"""The mock OneNET platform over real sockets: endpoints, errno, state machine, Range, faults.

Each test fails if the rule it names is broken; the mock is the yardstick the device code is
measured against, so it is held to the spec here.
"""
import base64
import hashlib
import http.client
import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tools import onenet_auth
from tools.mockplatform import MockPlatform, download

REPO = Path(__file__).resolve().parent.parent
PRODUCT = "345678"
KEY = base64.b64encode(b"product key for the mock tests").decode()
DEV = "1234"
OTHER_DEV = "5678"
PACKAGE = hashlib.sha256(b"seed").digest() * 8000  # 256000 bytes, no two neighbours alike
CHECK_FOTA = "/ota/south/check?dev_id=%s&manuf=101&model=10101&type=1&version=1.0&cdn=false" % DEV


@pytest.fixture
def platform():
    with MockPlatform(PRODUCT, KEY, host="127.0.0.1", port=0) as platform:
        platform.add_device(DEV, unique_id="aabbcc", f_version="1.0", s_version="2.0")
        platform.add_device(OTHER_DEV, unique_id="ddeeff")
        yield platform
    assert platform.errors == []


@pytest.fixture
def task(platform):
    return platform.add_task(DEV, PACKAGE, "1.1")


class Client:
    """A kept-alive http.client connection that speaks the API."""

    def __init__(self, platform):
        self.platform = platform
        self.http = http.client.HTTPConnection(platform.host, platform.port, timeout=10)

    def raw(self, method, path, body=None, headers=None):
        self.http.request(method, path, body=body, headers=headers or {})
        response = self.http.getresponse()
        return response.status, dict(response.getheaders()), response.read()

    def api(self, method, path, body=None, auth=None, headers=None):
        """``(errno, data)``; asserts HTTP 200 and the body shape on the way."""
        headers = dict(headers or {})
        headers["Authorization"] = auth or self.platform.auth_header()
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        status, _, payload = self.raw(method, path, body, headers)
        assert status == 200, payload
        answer = json.loads(payload)
        assert set(answer) <= {"errno", "error", "data"}
        assert (answer["error"] == "succ") == (answer["errno"] == 0)
        return answer["errno"], answer.get("data")

    def check(self, ota_type=1, dev=DEV, manuf="101", model="10101", version="1.0"):
        return self.api("GET", "/ota/south/check?dev_id=%s&manuf=%s&model=%s&type=%s&version=%s"
                        % (dev, manuf, model, ota_type, version))

    def token_check(self, token, dev=DEV):
        return self.api("GET", "/ota/south/download/%s/check?dev_id=%s" % (token, dev))[0]

    def progress(self, token, body, dev=DEV):
        return self.api("POST", "/ota/south/device/download/%s/progress?dev_id=%s" % (token, dev), body)[0]

    def report(self, token, body, dev=DEV):
        return self.api("POST", "/ota/south/report?dev_id=%s&token=%s" % (dev, token), body)[0]

    def tasking(self, ota_type="1", dev=DEV):
        return self.api("GET", "/ota/south/tasking?dev_id=%s&type=%s&cdn=true" % (dev, ota_type))

    def version(self, body, dev=DEV):
        return self.api("POST", "/ota/device/version?dev_id=%s" % dev, body)[0]

    def download(self, token, range_header=None, path="/ota/south/download/"):
        headers = {"Range": range_header} if range_header else {}
        return self.raw("GET", path + token, headers=headers)


@pytest.fixture
def client(platform):
    client = Client(platform)
    yield client
    client.http.close()


def raw_exchange(platform, request: bytes, limit=8 << 20):
    """Send ``request`` on a fresh socket and read until the server closes (or ``limit``)."""
    with socket.create_connection((platform.host, platform.port), timeout=10) as sock:
        sock.sendall(request)
        received = bytearray()
        while len(received) < limit:
            data = sock.recv(65536)
            if not data:
                break
            received += data
    return bytes(received)


def split_response(raw):
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def get_request(path, *headers):
    return ("GET %s HTTP/1.1\r\nHost: mock\r\n%s\r\n" % (path, "".join(h + "\r\n" for h in headers))).encode()


# -- Authorization --------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["md5", "sha1", "sha256"])
def test_each_signing_method_is_accepted(platform, client, task, method):
    assert client.api("GET", CHECK_FOTA, auth=platform.auth_header(method=method))[0] == 0


@pytest.mark.parametrize("auth", [
    lambda p: None,
    lambda p: p.auth_header().replace("&sign=", "&sign=A"),
    lambda p: p.auth_header(et=int(time.time()) - 5),
    lambda p: p.auth_header(res="products/999"),
    lambda p: p.auth_header(key=base64.b64encode(b"wrong key").decode()),
    lambda p: p.auth_header().replace("%2F", "/"),
])
def test_bad_authorization_is_errno_1(platform, client, task, auth):
    header = auth(platform)
    headers = {"Authorization": header} if header else {}
    status, _, body = client.raw("GET", CHECK_FOTA, headers=headers)
    assert status == 200
    assert json.loads(body) == {"errno": 1, "error": "token auth failed"}
    assert platform.requests[-1].note  # the reason is recorded
    assert task.state == "to-be-upgraded"


def test_device_level_key_signs_only_for_its_device(platform, client):
    device_key = base64.b64encode(b"device key").decode()
    platform.add_device("777", name="esp32-a", key=device_key)
    auth = platform.auth_header(method="sha256", res="products/%s/devices/esp32-a" % PRODUCT, key=device_key)
    assert client.api("GET", "/ota/device/version?dev_id=777", auth=auth)[0] == 0
    assert client.api("GET", "/ota/device/version?dev_id=%s" % DEV, auth=auth)[0] == 1


def test_download_needs_no_authorization(platform, client, task):
    status, _, body = client.download(task.token)
    assert status == 200 and body == PACKAGE
    assert "authorization" not in platform.requests[-1].headers


# -- endpoint 1 and 8: versions --------------------------------------------------------------------

def test_version_report_and_query(platform, client):
    assert client.version({"f_version": "1.2-rc_3.x"}) == 0
    assert client.api("GET", "/ota/device/version?dev_id=%s" % DEV) == (0, {"f_version": "1.2-rc_3.x", "s_version": "2.0"})
    assert client.version({"s_version": "2.1"}) == 0
    assert platform.devices[DEV].s_version == "2.1"


@pytest.mark.parametrize("query, body, errno", [
    ("", {"f_version": "1.1"}, 2),
    ("dev_id=abc", {"f_version": "1.1"}, 2),
    ("dev_id=999", {"f_version": "1.1"}, 4),
    ("dev_id=" + DEV, "not json", 2),
    ("dev_id=" + DEV, {}, 2),
    ("dev_id=" + DEV, [1], 2),
    ("dev_id=" + DEV, {"f_version": "x" * 21}, 2),
    ("dev_id=" + DEV, {"f_version": ""}, 2),
    ("dev_id=" + DEV, {"f_version": "1.0 beta"}, 2),
    ("dev_id=" + DEV, {"s_version": 2}, 2),
])
def test_version_report_refusals(platform, client, query, body, errno):
    assert client.api("POST", "/ota/device/version?" + query, body)[0] == errno
    assert platform.devices[DEV].f_version == "1.0"


def test_version_query_unknown_device(client):
    assert client.api("GET", "/ota/device/version?dev_id=42") == (4, None)


# -- endpoint 2: check ------------------------------------------------------------------------------

def test_check_answers_the_task_data(platform, client, task):
    errno, data = client.check()
    assert errno == 0
    assert data == {"target": "1.1", "token": task.token, "size": len(PACKAGE),
                    "md5": hashlib.md5(PACKAGE).hexdigest(), "signal": 0, "power": 0,
                    "retry": 3, "interval": 1, "type": 1}
    assert task.token.startswith("ota_")


def test_check_carries_task_settings(platform, client):
    platform.add_task(DEV, PACKAGE, "3.0", ota_type=2, package_type=2, retry=5, interval=30,
                      signal=12, power=40, ip_port="10.0.0.9:8002")
    errno, data = client.check(ota_type=2, version="2.0")
    assert (errno, data["target"], data["type"], data["retry"], data["interval"]) == (0, "3.0", 2, 5, 30)
    assert (data["signal"], data["power"], data["ipPort"]) == (12, 40, "10.0.0.9:8002")
    assert client.check(ota_type=1)[0] == 4  # tasks are per type


def test_ip_port_auto_is_this_server(platform, client):
    platform.add_task(DEV, PACKAGE, "1.1", ip_port="auto")
    assert client.check()[1]["ipPort"] == "127.0.0.1:%d" % platform.port


@pytest.mark.parametrize("args, errno", [
    (dict(dev="999"), 4),
    (dict(dev=""), 2),
    (dict(manuf="100"), 4),
    (dict(model="10001"), 4),
    (dict(manuf="esp"), 2),
    (dict(ota_type="3"), 2),
    (dict(ota_type=""), 2),
    (dict(version=""), 2),
    (dict(version="v" * 21), 2),
])
def test_check_refusals(client, task, args, errno):
    assert client.check(**args) == (errno, None)


def test_check_bad_cdn_is_errno_2(client, task):
    assert client.api("GET", CHECK_FOTA.replace("cdn=false", "cdn=maybe")) == (2, None)


def test_check_without_task_is_errno_4_without_data(client):
    assert client.check() == (4, None)


def test_check_offers_open_states_only(platform, client, task):
    assert client.token_check(task.token) == 0
    assert client.check()[0] == 0  # downloading
    assert client.progress(task.token, {"step": 100}) == 0
    assert client.check()[0] == 0  # upgrading
    task.pause()
    assert client.check() == (4, None)
    task.resume()
    assert task.state == "upgrading" and client.check()[0] == 0
    assert client.report(task.token, {"result": 201}) == 0
    assert client.check() == (4, None)


def test_check_matches_manuf_and_model_of_the_task(platform, client):
    platform.add_task(DEV, PACKAGE, "1.1", manuf="100", model="10001")
    assert client.check()[0] == 4
    assert client.check(manuf="100", model="10001")[0] == 0


def test_two_devices_have_their_own_tasks(platform, client, task):
    other = platform.add_task(OTHER_DEV, b"other package", "9.9")
    assert client.check(dev=OTHER_DEV)[1]["token"] == other.token
    assert client.check()[1]["token"] == task.token
    assert client.token_check(other.token, dev=DEV) == 4


def test_add_task_refuses_a_second_open_task_of_a_type(platform, task):
    with pytest.raises(ValueError):
        platform.add_task(DEV, PACKAGE, "1.2")


# -- endpoint 3: token check ---------------------------------------------------------------------

def test_token_check_starts_the_download(client, task):
    assert client.token_check(task.token) == 0
    assert client.token_check(task.token) == 0
    assert task.history == ["to-be-upgraded", "downloading"]


@pytest.mark.parametrize("prepare, errno", [
    (lambda c, t: None, 4),  # (unknown token: the test asks for another one)
    (lambda c, t: t.expire(), 12),
    (lambda c, t: (c.token_check(t.token), c.progress(t.token, {"step": 100})), 17),
    (lambda c, t: t.pause(), 17),
    (lambda c, t: (c.token_check(t.token), c.report(t.token, {"result": 104})), 17),
    (lambda c, t: c.version({"f_version": "1.1"}), 20),
    (lambda c, t: t.cancel(), 22),
])
def test_token_check_errno(client, task, prepare, errno):
    prepare(client, task)
    token = "ota_unknown" if errno == 4 else task.token
    assert client.token_check(token) == errno


def test_token_check_of_another_device_and_missing_dev_id(client, task):
    assert client.token_check(task.token, dev=OTHER_DEV) == 4
    assert client.api("GET", "/ota/south/download/%s/check" % task.token)[0] == 2
    assert task.state == "to-be-upgraded"


def test_internal_error_fault_is_errno_7(platform, client, task):
    platform.set_fault("errno", ("token_check", 7))
    assert client.token_check(task.token) == 7
    assert task.state == "to-be-upgraded"  # the platform failed: nothing changed
    assert client.token_check(task.token) == 0


# -- endpoints 5 and 6: progress and report; the state machine -------------------------------------

def test_happy_path_history(platform, client, task):
    assert client.version({"f_version": "1.0"}) == 0
    assert client.check()[0] == 0
    assert client.token_check(task.token) == 0
    assert client.download(task.token, "bytes=0-")[0] == 206
    for step in (10, 50, 100):
        assert client.progress(task.token, {"step": step}) == 0
    assert client.report(task.token, {"result": 101}) == 21  # already upgrading after step 100
    assert client.report(task.token, {"result": 201}) == 0
    assert task.history == ["to-be-upgraded", "downloading", "upgrading", "completed"]
    assert task.progress == [(10, 0), (50, 0), (100, 0)]
    assert task.reports == [(101, 21), (201, 0)]
    assert platform.devices[DEV].f_version == "1.1"
    assert platform.sequence() == ["version_report", "check", "token_check", "download",
                                   "progress", "progress", "progress", "report", "report"]


def test_result_101_moves_to_upgrading(client, task):
    assert client.token_check(task.token) == 0
    assert client.report(task.token, {"result": 101}) == 0
    assert task.state == "upgrading"


def test_first_download_starts_the_task_without_token_check(client, task):
    client.download(task.token, "bytes=0-99")
    assert task.history == ["to-be-upgraded", "downloading"]
    assert client.report(task.token, {"result": 101}) == 0


@pytest.mark.parametrize("code", [102, 103, 104, 105, 106, 107])
def test_download_failure_codes_allowed_in_downloading(client, task, code):
    client.token_check(task.token)
    assert client.report(task.token, {"result": code}) == 0
    assert task.state == "failed"


@pytest.mark.parametrize("code, state", [(201, "completed"), (205, "failed"), (207, "failed")])
def test_upgrade_codes_allowed_in_downloading(client, task, code, state):
    client.token_check(task.token)
    assert client.report(task.token, {"result": code}) == 0
    assert task.state == state


@pytest.mark.parametrize("code", [101, 102, 107])
def test_download_codes_refused_in_upgrading(client, task, code):
    client.token_check(task.token)
    client.progress(task.token, {"step": 100})
    assert client.report(task.token, {"result": code}) == 21
    assert task.state == "upgrading"
    assert client.report(task.token, {"result": 204}) == 0
    assert task.state == "failed"


def test_early_refusal_before_download_and_nothing_after_failure(client, task):
    assert client.report(task.token, {"result": 101}) == 21  # nothing downloaded yet
    assert client.report(task.token, {"result": 201}) == 21
    assert client.report(task.token, {"result": 102}) == 0   # not enough space: refused early
    assert task.state == "failed"
    assert client.report(task.token, {"result": 206}) == 21


def test_report_after_completion_is_20_and_after_cancel_22(platform, client, task):
    client.token_check(task.token)
    assert client.report(task.token, {"result": 201}) == 0
    assert client.report(task.token, {"result": 201}) == 20
    assert client.progress(task.token, {"step": 5}) == 20
    second = platform.add_task(DEV, PACKAGE, "1.2")
    client.token_check(second.token)
    second.cancel()
    assert client.report(second.token, {"result": 107}) == 22
    assert client.progress(second.token, {"step": 5}) == 22


@pytest.mark.parametrize("code", [0, 100, 108, 150, 200, 209, 301, 999])
def test_unknown_result_code_is_2(client, task, code):
    client.token_check(task.token)
    assert client.report(task.token, {"result": code}) == 2
    assert task.state == "downloading"


@pytest.mark.parametrize("body", ["not json", "", "[101]", {}, {"result": "101"}, {"result": True},
                                  {"result": 101.0}, {"result": None}, {"code": 101}])
def test_bad_report_body_is_24(client, task, body):
    client.token_check(task.token)
    assert client.report(task.token, body) == 24
    assert task.state == "downloading"


def test_report_refusals_on_parameters(client, task):
    assert client.report("ota_nope", {"result": 101}) == 4
    assert client.report(task.token, {"result": 101}, dev=OTHER_DEV) == 4
    assert client.api("POST", "/ota/south/report?dev_id=%s" % DEV, {"result": 101})[0] == 2


def test_progress_rules(client, task):
    assert client.progress(task.token, {"step": 10}) == 21  # not downloading yet
    client.token_check(task.token)
    for body in ({"step": -1}, {"step": "10"}, {}, "garbage"):
        assert client.progress(task.token, body) == 24
    assert client.progress(task.token, {"step": 60}) == 0
    assert client.progress(task.token, {"step": 100}) == 0
    assert client.progress(task.token, {"step": 100}) == 21  # upgrading takes no steps
    assert client.progress(task.token, {"step": 201}) == 0   # a step above 100 is a result code
    assert task.state == "completed"
    assert task.reports == [(201, 0)]


def test_progress_step_above_100_is_a_result_code(client, task):
    client.token_check(task.token)
    assert client.progress(task.token, {"step": 101}) == 0
    assert task.state == "upgrading"
    assert client.progress(task.token, {"step": 150}) == 2


@pytest.mark.parametrize("ota_type, field", [(1, "f_version"), (2, "s_version")])
def test_reporting_the_target_version_completes_the_task(platform, client, ota_type, field):
    task = platform.add_task(DEV, PACKAGE, "7.0", ota_type=ota_type)
    other = "s_version" if field == "f_version" else "f_version"
    assert client.version({other: "7.0"}) == 0  # the other kind of version: no effect
    assert task.state == "to-be-upgraded"
    client.token_check(task.token)
    assert client.version({field: "7.0"}) == 0
    assert task.history == ["to-be-upgraded", "downloading", "completed"]
    assert client.report(task.token, {"result": 201}) == 20


def test_paused_task_refuses_reports(client, task):
    client.token_check(task.token)
    task.pause()
    assert client.report(task.token, {"result": 101}) == 21
    assert client.download(task.token)[0] == 404
    task.resume()
    assert client.report(task.token, {"result": 101}) == 0


# -- tokens expire ------------------------------------------------------------------------------------

def test_token_lifetime_per_task(platform, client):
    task = platform.add_task(DEV, PACKAGE, "1.1", token_lifetime=0)
    assert client.check() == (4, None)
    assert client.tasking() == (12, None)
    assert client.report(task.token, {"result": 101}) == 12
    assert task.history == ["to-be-upgraded", "expired"]


def test_expire_token_fault(platform, client, task):
    client.token_check(task.token)
    platform.set_fault("expire-token")
    assert client.token_check(task.token) == 12
    assert client.progress(task.token, {"step": 50}) == 12
    status, _, body = client.download(task.token)
    assert status == 404 and json.loads(body)["errno"] == 12
    assert task.state == "expired"


# -- endpoint 7: tasking; endpoint 9: devInfo ------------------------------------------------------------

def test_tasking(platform, client, task):
    errno, data = client.tasking()
    assert errno == 0 and data["token"] == task.token and data["md5"] == task.md5
    assert client.tasking(ota_type="2") == (4, None)
    assert client.tasking(ota_type="x") == (2, None)
    assert client.tasking(dev=OTHER_DEV) == (4, None)
    platform.set_fault("errno", "tasking:7")
    assert client.tasking() == (7, None)
    task.expire()
    assert client.tasking() == (12, None)


def test_dev_info(client):
    assert client.api("GET", "/ota/devInfo?pid=%s&authInfo=ddeeff" % PRODUCT) == (0, {"dev_id": int(OTHER_DEV)})
    assert client.api("GET", "/ota/devInfo?pid=%s&authInfo=nobody" % PRODUCT) == (4, None)
    assert client.api("GET", "/ota/devInfo?pid=1&authInfo=ddeeff") == (4, None)
    assert client.api("GET", "/ota/devInfo?pid=%s" % PRODUCT) == (2, None)
    assert client.api("GET", "/ota/devInfo?authInfo=ddeeff") == (2, None)


# -- HTTP -------------------------------------------------------------------------------------------------

def test_unknown_path_and_method(client):
    status, _, body = client.raw("GET", "/ota/south/nothing")
    assert status == 404 and json.loads(body)["errno"] == 4
    assert client.raw("POST", "/ota/south/check")[0] == 405
    assert client.platform.sequence() == ["unknown", "method_not_allowed"]


def test_keep_alive_serves_many_requests_on_one_connection(platform, client, task):
    client.check()
    client.token_check(task.token)
    for start in range(0, len(PACKAGE), 100000):
        status, _, body = client.download(task.token, "bytes=%d-%d" % (start, start + 99999))
        assert status == 206 and body == PACKAGE[start:start + 100000]
    client.report(task.token, {"result": 101})
    assert platform.connections == 1
    assert {request.connection for request in platform.requests} == {1}
    assert len(platform.requests) == 6


def test_small_requests_on_a_kept_alive_connection_do_not_stall(client, task):
    started = time.monotonic()
    for _ in range(20):
        client.progress(task.token, {"step": 1})
    # 20 round trips; a 40 ms Nagle/delayed-ACK stall each would take 0.8 s
    assert time.monotonic() - started < 0.5


def test_connection_close_is_honoured(platform, task):
    raw = raw_exchange(platform, get_request("/ota/south/download/" + task.token, "Range: bytes=0-9",
                                             "Connection: close"))
    status, headers, body = split_response(raw)
    assert (status, headers["connection"], body) == (206, "close", PACKAGE[:10])


def test_http_1_0_closes_unless_kept_alive(platform, task):
    raw = raw_exchange(platform, b"GET /ota/south/download/%s HTTP/1.0\r\nRange: bytes=0-3\r\n\r\n"
                       % task.token.encode())
    assert split_response(raw)[2] == PACKAGE[:4]


def test_request_record(platform, client, task):
    client.report(task.token, {"result": 101})  # nothing downloaded yet: 21
    request = platform.requests[-1]
    assert (request.method, request.path, request.endpoint) == ("POST", "/ota/south/report", "report")
    assert request.query == {"dev_id": DEV, "token": task.token}
    assert request.headers["authorization"].startswith("version=2018-10-31&res=products%2F")
    assert request.headers["content-length"] == str(len(request.body))
    assert json.loads(request.body) == {"result": 101}
    assert (request.status, request.errno, request.connection) == (200, 21, 1)
    assert abs(request.time - time.time()) < 5


def test_chunked_request_body_is_read(platform, task):
    body = b'{"result": 102}'
    request = (b"POST /ota/south/report?dev_id=%s&token=%s HTTP/1.1\r\nAuthorization: %s\r\n"
               b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n%x\r\n%s\r\n0\r\n\r\n"
               % (DEV.encode(), task.token.encode(), platform.auth_header().encode(), len(body), body))
    assert json.loads(split_response(raw_exchange(platform, request))[2])["errno"] == 0
    assert platform.requests[-1].body == body and task.state == "failed"


def test_oversized_request_head_is_refused(platform):
    raw = raw_exchange(platform, b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n")
    assert split_response(raw)[0] == 431


def test_tls(tmp_path, task):
    trustme = pytest.importorskip("trustme")
    import ssl
    authority = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    authority.configure_trust(client_context)
    with MockPlatform(PRODUCT, KEY, ssl_context=server_context) as secure:
        secure.add_device(DEV)
        secure_task = secure.add_task(DEV, PACKAGE, "1.1")
        assert secure.url.startswith("https://")
        connection = http.client.HTTPSConnection(secure.host, secure.port, context=client_context, timeout=10)
        connection.request("GET", "/ota/south/download/" + secure_task.token, headers={"Range": "bytes=-5"})
        response = connection.getresponse()
        assert (response.status, response.read()) == (206, PACKAGE[-5:])
        connection.close()


# -- endpoint 4: download and the Range rules ------------------------------------------------------------

L = len(PACKAGE)


@pytest.mark.parametrize("header, start, end", [
    ("bytes=0-", 0, L - 1),
    ("bytes=100-", 100, L - 1),
    ("bytes=%d-" % L, 0, L - 1),           # start >= len -> start = 0
    ("bytes=%d-" % (L + 50), 0, L - 1),
    ("bytes=10-19", 10, 19),
    ("bytes=10-%d" % (L + 5), 10, L - 1),  # end >= len clamped
    ("bytes=50-40", 0, 40),                # start > end -> start = 0
    ("bytes=%d-%d" % (L + 1, L + 9), 0, L - 1),
    ("bytes=-10", L - 10, L - 1),
    ("bytes=-%d" % (L + 1), 0, L - 1),     # -n > len -> the whole file
    ("bytes=-%d" % L, 0, L - 1),
    ("10-19", 10, 19),                     # the bare form of OneNET's C SDK
    ("100-", 100, L - 1),
    ("-7", L - 7, L - 1),
    ("bytes=5-5", 5, 5),
    ("bytes=1-2,5-9", 1, 2),               # only the first range is served
])
def test_range_rules(client, task, header, start, end):
    status, headers, body = client.download(task.token, header)
    assert status == 206
    assert headers["Content-Range"] == "bytes %d-%d/%d" % (start, end, L)
    assert headers["Content-Length"] == str(end - start + 1)
    assert body == PACKAGE[start:end + 1]


@pytest.mark.parametrize("header", [None, "bytes=abc", "lines=1-2", "bytes=-", "bytes=1-2-3"])
def test_no_or_unusable_range_sends_the_whole_file(client, task, header):
    status, headers, body = client.download(task.token, header)
    assert status == 200 and "Content-Range" not in headers
    assert headers["Content-Length"] == str(L) and body == PACKAGE


def test_parse_range_edges():
    assert download.parse_range("bytes=-0", 10) == (0, 9)
    assert download.parse_range("bytes=0-0", 0) is None


def test_download_of_unknown_token_is_404_with_errno(client):
    status, headers, body = client.download("ota_nosuchtoken")
    assert status == 404 and json.loads(body) == {"errno": 4, "error": "not found"}


def test_download_after_cancel_or_completion_is_404(client, task, platform):
    task.cancel()
    assert json.loads(client.download(task.token)[2])["errno"] == 22
    second = platform.add_task(DEV, PACKAGE, "1.2")
    assert client.version({"f_version": "1.2"}) == 0
    assert json.loads(client.download(second.token)[2])["errno"] == 20


def test_big_download_from_a_file_is_fast(platform, client, tmp_path):
    package = os.urandom(4 << 20) + b"tail"
    path = tmp_path / "firmware.bin"
    path.write_bytes(package)
    task = platform.add_task(DEV, path, "1.1")
    assert task.md5 == hashlib.md5(package).hexdigest() and task.size == len(package)
    started = time.monotonic()
    status, headers, body = client.download(task.token)
    elapsed = time.monotonic() - started
    assert status == 200 and body == package
    assert elapsed < 1.0
    assert client.download(task.token, "bytes=-4")[2] == b"tail"


# -- faults -------------------------------------------------------------------------------------------------

def test_drop_at_several_offsets_each_once(platform, task):
    platform.faults.drop_at = [1000, 5000]
    path = "/ota/south/download/" + task.token
    status, headers, body = split_response(raw_exchange(platform, get_request(path, "Range: bytes=0-")))
    assert status == 206 and headers["content-length"] == str(L) and body == PACKAGE[:1000]
    status, _, body = split_response(raw_exchange(platform, get_request(path, "Range: bytes=1000-")))
    assert body == PACKAGE[1000:5000]
    status, _, body = split_response(raw_exchange(platform, get_request(path, "Range: bytes=5000-",
                                                                          "Connection: close")))
    assert body == PACKAGE[5000:]
    assert platform.faults.drop_at == []
    assert platform.connections == 3


def test_drop_with_set_fault_and_dropped_range_outside(platform, task):
    platform.set_fault("drop", 65536)
    path = "/ota/south/download/" + task.token
    body = split_response(raw_exchange(platform, get_request(path, "Range: bytes=0-99", "Connection: close")))[2]
    assert body == PACKAGE[:100]  # 65536 is not in this range: kept for later
    body = split_response(raw_exchange(platform, get_request(path)))[2]
    assert body == PACKAGE[:65536]


def test_stall_before_head(platform, client, task):
    platform.set_fault("stall", ("check", 0.3))
    started = time.monotonic()
    assert client.check()[0] == 0
    assert time.monotonic() - started >= 0.25
    started = time.monotonic()
    assert client.check()[0] == 0
    assert time.monotonic() - started < 0.2  # once only


def test_stall_in_body(platform, task):
    platform.set_fault("stall-body", "1000:0.3")
    with socket.create_connection((platform.host, platform.port), timeout=10) as sock:
        sock.sendall(get_request("/ota/south/download/" + task.token, "Connection: close"))
        received = bytearray()
        while b"\r\n\r\n" not in received or len(received.partition(b"\r\n\r\n")[2]) < 1000:
            received += sock.recv(65536)
        assert len(received.partition(b"\r\n\r\n")[2]) == 1000  # the stall holds the rest back
        started = time.monotonic()
        while True:
            data = sock.recv(65536)
            if not data:
                break
            received += data
        assert time.monotonic() - started >= 0.2
    assert received.partition(b"\r\n\r\n")[2] == PACKAGE


def test_http_error_for_the_next_requests(platform, client, task):
    platform.set_fault("http-error", "download:503:2")
    assert client.download(task.token, "bytes=0-9")[0] == 503
    assert client.download(task.token, "bytes=0-9")[0] == 503
    assert client.download(task.token, "bytes=0-9")[:3:2] == (206, PACKAGE[:10])
    platform.set_fault("http-error", ("api", 500))
    assert client.raw("GET", CHECK_FOTA, headers={"Authorization": platform.auth_header()})[0] == 500
    assert client.check()[0] == 0
    assert [r.status for r in platform.requests] == [503, 503, 206, 500, 200]


def test_ignore_range(platform, client, task):
    platform.faults.ignore_range = True
    status, headers, body = client.download(task.token, "bytes=100-199")
    assert status == 200 and body == PACKAGE and "Content-Range" not in headers


def test_corrupt_byte(platform, client, task):
    platform.set_fault("corrupt", 12345)
    body = client.download(task.token)[2]
    differs = [i for i in range(L) if body[i] != PACKAGE[i]]
    assert differs == [12345] and body[12345] == PACKAGE[12345] ^ 0xFF
    assert client.download(task.token, "bytes=12340-12349")[2][5] == PACKAGE[12345] ^ 0xFF
    assert client.download(task.token, "bytes=0-99")[2] == PACKAGE[:100]


def test_wrong_md5_and_size_advertised(platform, client, task):
    platform.set_fault("wrong-md5")
    platform.set_fault("wrong-size", -10)
    data = client.check()[1]
    assert data["md5"] != task.md5 and len(data["md5"]) == 32
    assert data["size"] == L - 10
    assert client.download(task.token)[2] == PACKAGE  # what is served stays right


def test_cancel_mid_download(platform, client, task):
    platform.set_fault("cancel-at", 50000)
    client.token_check(task.token)
    status, _, body = client.download(task.token)
    assert status == 200 and body == PACKAGE  # the response under way completes
    assert task.state == "cancelled"
    assert client.report(task.token, {"result": 101}) == 22
    assert client.download(task.token)[0] == 404


def test_bad_json(platform, client, task):
    platform.set_fault("bad-json", "check")
    status, _, body = client.raw("GET", CHECK_FOTA, headers={"Authorization": platform.auth_header()})
    assert status == 200
    with pytest.raises(ValueError):
        json.loads(body)
    assert client.check()[0] == 0  # once


def test_endless_header_is_bounded(platform, task):
    platform.set_fault("endless-header", "download:2")
    raw = raw_exchange(platform, get_request("/ota/south/download/" + task.token))
    assert raw.startswith(b"HTTP/1.1 200 OK\r\nX-Endless: ")
    assert b"\r\n" not in raw[len(b"HTTP/1.1 200 OK\r\n"):]
    assert (1 << 20) <= len(raw) <= (1 << 20) + 4096 + 100
    # a client that gives up early just closes; the server copes
    with socket.create_connection((platform.host, platform.port), timeout=10) as sock:
        sock.sendall(get_request("/ota/south/download/" + task.token))
        assert sock.recv(100).startswith(b"HTTP/1.1 200 OK")


def test_chunked_json(platform, client, task):
    platform.set_fault("chunked")
    status, headers, body = client.raw("GET", CHECK_FOTA, headers={"Authorization": platform.auth_header()})
    assert headers["Transfer-Encoding"] == "chunked" and "Content-Length" not in headers
    assert json.loads(body)["data"]["token"] == task.token
    raw = raw_exchange(platform, get_request("/ota/device/version?dev_id=" + DEV, "Connection: close"))
    assert raw.count(b"\r\n10\r\n") >= 2  # really several chunks


@pytest.mark.parametrize("kind", ["absolute", "relative"])
def test_redirect(platform, client, task, kind):
    platform.set_fault("redirect", kind)
    status, headers, body = client.download(task.token, "bytes=0-9")
    location = headers["Location"]
    assert status == 302 and body == b""
    if kind == "absolute":
        assert location == "http://%s:%d/mock/file/%s" % (platform.host, platform.port, task.token)
    else:
        assert location == "/mock/file/" + task.token
    status, _, body = client.download(task.token, "bytes=0-9", path="/mock/file/")
    assert (status, body) == (206, PACKAGE[:10])


def test_task_data_overrides_check_and_tasking(platform, client, task):
    platform.set_fault("task-data", {"size": -1, "md5": None, "token": "a/b c"})
    platform.set_fault("task-data", '{"target": "not a version!"}')  # JSON text merges too
    for errno, data in (client.check(), client.tasking()):
        assert errno == 0
        assert data["size"] == -1 and data["token"] == "a/b c" and data["target"] == "not a version!"
        assert "md5" not in data  # null removes the field
        assert data["retry"] == task.retry  # the rest as it was
    assert task.state == "to-be-upgraded"
    assert client.download(task.token)[2] == PACKAGE  # the real token still serves the package
    platform.clear_faults()
    assert client.check()[1]["size"] == L and client.check()[1]["token"] == task.token


def test_task_data_applies_after_the_advertising_faults(platform, client, task):
    platform.set_fault("wrong-size", 5)
    platform.set_fault("task-data", {"md5": "0" * 32})
    data = client.check()[1]
    assert data["size"] == L + 5 and data["md5"] == "0" * 32


def test_task_data_must_be_an_object(platform):
    for arg in ("[1, 2]", "size=1", None):
        with pytest.raises(ValueError):
            platform.set_fault("task-data", arg)


def test_unknown_fault_and_endpoint_are_refused(platform):
    with pytest.raises(ValueError):
        platform.set_fault("explode")
    with pytest.raises(ValueError):
        platform.set_fault("bad-json", "nowhere")


# -- standalone -------------------------------------------------------------------------------------------

def test_serve_help_lists_flags_and_faults():
    result = subprocess.run([sys.executable, "-m", "tools", "serve", "--help"], cwd=REPO,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    for word in ("--port", "--product-id", "--access-key", "--package", "--ip-port", "--certfile",
                 "--fault", "drop=OFF", "endless-header", "redirect=absolute|relative"):
        assert word in result.stdout


def test_serve_standalone_start_fetch_stop():
    process = subprocess.Popen(
        [sys.executable, "-m", "tools", "serve", "--host", "127.0.0.1", "--port", "0",
         "--product-id", PRODUCT, "--access-key", KEY, "--device-id", DEV, "--size", "1000",
         "--fault", "wrong-size=5"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    output = []
    try:
        port = None
        while port is None:
            line = lines.get(timeout=20)
            output.append(line)
            if line.startswith("device configuration:"):
                port = int(line.split(" port=")[1].split()[0])
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        auth = onenet_auth.make(PRODUCT, KEY, int(time.time()) + 60)
        connection.request("GET", CHECK_FOTA, headers={"Authorization": auth})
        answer = json.loads(connection.getresponse().read())
        connection.close()
        assert answer["errno"] == 0 and answer["data"]["size"] == 1005
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0
    while True:
        try:
            output.append(lines.get(timeout=5))
        except queue.Empty:
            break
        if output[-1].startswith("task 1:"):
            break
    text = "".join(output)
    assert "GET /ota/south/check" in text and "task 1: to-be-upgraded" in text
