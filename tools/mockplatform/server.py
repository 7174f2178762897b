"""HTTP/1.1 on a plain or TLS socket, written out by hand so every byte is under control.

Why not ``http.server``: the faults need the raw socket (drop mid-body, endless header lines,
head and body in one ``sendall``), and the device's client must meet a server that keeps a
connection alive across requests exactly as nginx does.

* Requests: the head is read up to ``MAX_HEAD`` bytes (431 and close beyond that), the body by
  ``Content-Length`` or chunked, up to ``MAX_BODY`` (413 and close beyond that). Requests may
  be pipelined; what follows a request stays buffered for the next one.
* Keep-alive: HTTP/1.1 keeps the connection unless the request says ``Connection: close``;
  HTTP/1.0 closes unless it says ``Connection: keep-alive``.
* Responses: status line, headers and a small body leave in one ``sendall`` and every socket
  has ``TCP_NODELAY`` (a split write stalls ~40 ms on Nagle + delayed ACK).
"""
import socketserver
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Optional
from urllib.parse import parse_qsl, urlsplit

MAX_HEAD = 64 * 1024
MAX_BODY = 1 << 20
RECEIVE_SIZE = 64 * 1024
ENDLESS_HEADER_LIMIT = 1 << 20  # the endless-header fault stops here if the client never does


class BadRequest(Exception):
    def __init__(self, status, reason):
        super().__init__(reason)
        self.status = status


@dataclass
class Request:
    """One request as the platform saw it. ``headers`` has lower-case names (the last of a
    repeated header wins); ``query`` likewise. ``status``/``errno`` are what was answered;
    ``note`` says why a request was refused."""
    connection: int
    method: str
    target: str
    path: str
    query: dict
    headers: dict
    body: bytes
    time: float
    version: str = "HTTP/1.1"
    endpoint: str = ""
    status: int = 0
    errno: Optional[int] = None
    note: str = ""
    raw_headers: list = field(default_factory=list, repr=False)

    @property
    def keep_alive(self):
        connection = self.headers.get("connection", "").lower()
        if self.version == "HTTP/1.0":
            return connection == "keep-alive"
        return connection != "close"


def reason_phrase(status):
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Status %d" % status


def response_head(status, headers):
    lines = ["HTTP/1.1 %d %s" % (status, reason_phrase(status))]
    lines += ["%s: %s" % (name, value) for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def chunked(body, piece=16):
    """``body`` in chunked transfer coding, split into several small chunks on purpose."""
    out = bytearray()
    for start in range(0, len(body), piece):
        chunk = body[start:start + piece]
        out += b"%x\r\n" % len(chunk) + chunk + b"\r\n"
    return bytes(out + b"0\r\n\r\n")


class Connection:
    """One accepted socket, numbered in order of acceptance (from 1)."""

    def __init__(self, sock, number):
        self.sock = sock
        self.number = number
        self.local_address = sock.getsockname()
        self._buffer = bytearray()

    def _receive(self):
        data = self.sock.recv(RECEIVE_SIZE)
        if not data:
            raise EOFError
        self._buffer += data

    def _take(self, size):
        while len(self._buffer) < size:
            self._receive()
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def _take_line(self, limit):
        while True:
            end = self._buffer.find(b"\r\n")
            if end >= 0:
                return self._take(end + 2)[:-2]
            if len(self._buffer) > limit:
                raise BadRequest(400, "line too long")
            self._receive()

    def read_request(self):
        """The next request, or None when the client closed the connection between requests."""
        try:
            while True:
                end = self._buffer.find(b"\r\n\r\n")
                if 0 <= end <= MAX_HEAD:
                    break
                if end > MAX_HEAD or len(self._buffer) > MAX_HEAD:
                    raise BadRequest(431, "request head over %d bytes" % MAX_HEAD)
                self._receive()
        except EOFError:
            if self._buffer.strip():
                raise BadRequest(400, "connection closed inside a request head")
            return None
        received = time.time()
        head = self._take(end + 4)[:-4].decode("latin-1")
        # A stray CRLF between requests is allowed before the request line (RFC 9112 2.2).
        lines = head.lstrip("\r\n").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise BadRequest(400, "bad request line %r" % lines[0])
        method, target, version = parts
        raw_headers = []
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon or not name or name != name.strip():
                raise BadRequest(400, "bad header line %r" % line)
            raw_headers.append((name, value.strip()))
        headers = {name.lower(): value for name, value in raw_headers}
        url = urlsplit(target)
        request = Request(
            connection=self.number, method=method, target=target, path=url.path,
            query=dict(parse_qsl(url.query, keep_blank_values=True)), headers=headers,
            body=b"", time=received, version=version, raw_headers=raw_headers,
        )
        try:
            request.body = self._read_body(headers)
        except EOFError:
            raise BadRequest(400, "connection closed inside a request body")
        return request

    def _read_body(self, headers):
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = bytearray()
            while True:
                size_line = self._take_line(64).split(b";")[0].strip()
                try:
                    size = int(size_line, 16)
                except ValueError:
                    raise BadRequest(400, "bad chunk size %r" % size_line)
                if len(body) + size > MAX_BODY:
                    raise BadRequest(413, "body over %d bytes" % MAX_BODY)
                if size == 0:
                    while self._take_line(MAX_HEAD):  # trailer fields, up to the empty line
                        pass
                    return bytes(body)
                body += self._take(size)
                if self._take(2) != b"\r\n":
                    raise BadRequest(400, "chunk not followed by CRLF")
        length = headers.get("content-length", "0").strip()
        if not length.isdigit():
            raise BadRequest(400, "bad Content-Length %r" % length)
        if int(length) > MAX_BODY:
            raise BadRequest(413, "body over %d bytes" % MAX_BODY)
        return self._take(int(length))

    def send(self, status, headers, body=b"", *, close=False, chunked_body=False):
        """One response, head and body in a single ``sendall``."""
        headers = list(headers)
        if chunked_body:
            headers.append(("Transfer-Encoding", "chunked"))
            body = chunked(body)
        else:
            headers.append(("Content-Length", str(len(body))))
        if close:
            headers.append(("Connection", "close"))
        self.sock.sendall(response_head(status, headers) + body)

    def send_endless_header(self, stop_event):
        """A status line, then a header line that never ends: non-CRLF bytes until
        ``ENDLESS_HEADER_LIMIT`` or until the client gives up."""
        self.sock.sendall(b"HTTP/1.1 200 OK\r\nX-Endless: ")
        sent = 0
        filler = b"x" * 4096
        try:
            while sent < ENDLESS_HEADER_LIMIT and not stop_event.is_set():
                self.sock.sendall(filler)
                sent += len(filler)
        except OSError:
            pass  # the client closed: exactly what a bounded client should do
        return sent


class _Handler(socketserver.BaseRequestHandler):
    def handle(self):
        self.server.handle_connection(self.request)


class ThreadedServer(socketserver.ThreadingTCPServer):
    """Accepts connections in one thread and serves each in its own daemon thread."""
    allow_reuse_address = True
    daemon_threads = True
    block_on_close = False

    def __init__(self, address, handle_connection):
        self.handle_connection = handle_connection
        super().__init__(address, _Handler)
