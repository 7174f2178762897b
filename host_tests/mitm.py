"""A man in the middle on loopback, between the device and the mock platform.

The device's config points at the proxy; the proxy forwards every request to the mock over
one kept-alive connection per device connection, and a test's attack sees each exchange on
the way: ``answer(req)`` may answer a request itself (the mock never sees it), and
``tamper(req, resp)`` may change what the mock answered. It speaks HTTP/1.1 with keep-alive
(the device keeps one connection), plain or TLS (a server context: the attacker holds a
certificate the device trusts, as a compromised host would).

    with Mitm(platform) as mitm:
        mitm.tamper = lambda req, resp: ...   # resp.status / resp.headers / resp.body
        board.install(host=mitm.host, port=mitm.port)

``mitm.seen`` holds every request as the device sent it: (method, path, headers).
"""
from __future__ import annotations

import http.client
import json
import re
import socket
import ssl
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Req:
    method: str
    path: str
    headers: dict
    body: bytes


@dataclass
class Resp:
    status: int
    headers: dict = field(default_factory=dict)  # lower-case names
    body: bytes = b""

    def json(self):
        return json.loads(self.body)

    def set_json(self, value):
        self.body = json.dumps(value).encode()
        self.headers["content-type"] = "application/json"


def api(data=None, errno=0, error="succ"):
    """A south API answer."""
    r = Resp(200)
    r.set_json({"errno": errno, "error": error, "data": data})
    return r


def ranged(req: Req, body: bytes) -> Resp:
    """The answer a download server gives to req's Range over body (206, or 200 without one)."""
    m = re.fullmatch(r"bytes=(\d+)-(\d*)", req.headers.get("range", ""))
    if not m:
        return Resp(200, {}, body)
    a = int(m.group(1))
    b = min(int(m.group(2)) if m.group(2) else len(body) - 1, len(body) - 1)
    return Resp(206, {"content-range": "bytes %d-%d/%d" % (a, b, len(body))}, body[a:b + 1])


class Mitm:
    def __init__(self, platform, tls: ssl.SSLContext | None = None):
        self.upstream = (platform.host, platform.port)
        self.tls = tls
        self.answer = lambda req: None
        self.tamper = lambda req, resp: None
        self.seen: list[tuple[str, str, dict]] = []
        self.errors: list[BaseException] = []
        self.host = "localhost" if tls else "127.0.0.1"
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.mitm = self
        self.port = self._server.server_address[1]

    def __enter__(self):
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()

    def paths(self, prefix=""):
        return [p for _, p, _ in self.seen if p.startswith(prefix)]

    def exchange(self, req: Req, upstream: http.client.HTTPConnection) -> Resp:
        self.seen.append((req.method, req.path, req.headers))
        resp = self.answer(req)
        if resp is None:
            headers = {k: v for k, v in req.headers.items() if k not in ("host", "connection")}
            upstream.request(req.method, req.path, body=req.body or None, headers=headers)
            got = upstream.getresponse()
            resp = Resp(got.status, {k.lower(): v for k, v in got.getheaders()}, got.read())
            changed = self.tamper(req, resp)
            resp = changed or resp
        return resp


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    mitm: Mitm

    def get_request(self):
        sock, addr = super().get_request()
        if self.mitm.tls:
            sock = self.mitm.tls.wrap_socket(sock, server_side=True)
        return sock, addr


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, *args):
        pass

    def setup(self):
        super().setup()
        self.upstream = http.client.HTTPConnection(*self.server.mitm.upstream, timeout=30)

    def _any(self):
        mitm = self.server.mitm
        try:
            n = int(self.headers.get("Content-Length") or 0)
            req = Req(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, self.rfile.read(n))
            resp = mitm.exchange(req, self.upstream)
            self.send_response_only(resp.status)
            for k, v in resp.headers.items():
                if k not in ("content-length", "transfer-encoding", "connection"):
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(resp.body)))
            self.end_headers()
            self.wfile.write(resp.body)
        except (OSError, ssl.SSLError, http.client.HTTPException) as e:
            if not isinstance(e, (ConnectionError, socket.timeout)):
                mitm.errors.append(e)
            self.close_connection = True

    do_GET = do_POST = _any
