# A lean HTTP/1.1 client for the OTA download and the OneNET API calls.
#
# One Client keeps ONE connection alive across requests to the same origin (a download is
# many Range requests; a TLS handshake costs an ESP32 seconds). The server is never trusted:
# lines, header counts and JSON bodies are bounded, lying lengths are errors, and the
# timeout applies to connect, the TLS handshake, every read and the whole response head,
# redirects included. TLS is in _tls.py, imported only for an https URL.
#
# Redirects: never from https to http; a request with an Authorization header follows none
# (its 3xx is the answer), so the header never reaches another host (128 B of heap, 2026-12-04).
#
# Framing (head lines, chunk sizes) is read byte by byte, so nothing is read ahead of the
# body: Response.readinto() goes straight from the socket into the caller's buffer with
# readinto(buf, n), allocating nothing.
#
# Heap: an imported module keeps its code, names and strings in RAM (about 6 KB for this
# one as x64 .mpy; host_tests/test_http_client.py bounds it). So: few functions and error
# strings of at most 10 characters (interned, no object). Names say what they hold: names
# chosen only because the firmware already had them (state, url, raw, pos, stop) saved
# 32 B over the whole download path (160 B for this module alone), measured 2026-12-04.
# readline(mode) stays one function for three kinds of line: split in three (head line,
# chunk size, skipped line) it cost 288 B more.
import json as _json
import socket
import time
from micropython import const


_LINE = const(512)  # longest head, chunk-size or trailer line
_HEADERS = const(32)  # most header (or trailer) lines
_BUF = const(1024)  # the client's receive buffer: head lines, and the bound of json()
# Response.headers keeps only these; other headers are read and dropped
_KEEP = const(" content-length content-range transfer-encoding connection location date content-type ")


# The errors, made with type() (the same classes as class statements, for less heap).
# code: the OneNET report code of a failed download (107 other, 104 timeout).
HTTPError = type("HTTPError", (Exception,), {"code": 107})  # any failed request
Timeout = type("Timeout", (HTTPError,), {"code": 104})  # connect, handshake, a read, the head
ConnectionLost = type("ConnectionLost", (HTTPError,), {})  # none, or closed/reset too early
ProtocolError = type("ProtocolError", (HTTPError,), {})  # the reply broke HTTP or itself
TLSError = type("TLSError", (HTTPError,), {})  # certificate/host refused, or https without CA


def error(e):
    """An OSError of the socket as one of ours (ours pass through): a timeout is ETIMEDOUT
    from read*, EAGAIN from recv, EINPROGRESS from connect (110, 11, 115 on unix; 116, 11,
    119 on an ESP32); the rest is a ConnectionLost. _tls maps its socket errors with it."""
    if isinstance(e, HTTPError):
        return e
    if e.errno in (11, 110, 115, 116, 119):
        return Timeout("timed out")
    return ConnectionLost(e)


class Response:
    """status, headers (lower-case names, a known few), length (Content-Length or None),
    range ((start, end, total) of a 206; total None for "*"), date.
    client is the Client; the body is unread while client.unread is this response."""

    status: int
    headers: "dict[str, str]"
    client: "Client"
    length: "int | None"
    range: "tuple[int, int, int | None] | None"
    date: "str | None"
    length = range = date = None
    count: int
    count = 0  # body bytes left (of the current chunk)
    chunked = 0  # 1: before the first chunk, 2: after one

    def readinto(self, buf, n=None):
        """Up to n (default len(buf)) body bytes into the START of buf; 0 at the end."""
        c = self.client
        if c.unread is not self:  # complete, or dropped
            if self.count:
                raise ConnectionLost("closed")
            return 0
        if n is None or n > len(buf):
            n = len(buf)
        if n < 1:
            return 0
        try:
            if not self.count:  # chunked: "[CRLF]size[;ext]CRLF"; size 0 ends it
                if self.chunked > 1 and c.readline(1) != -1:
                    raise ProtocolError("bad chunk")
                self.chunked = 2
                k = self.count = c.readline(1)  # type: ignore  # int in mode 1
                if k < 0:  # type: ignore
                    raise ProtocolError("bad chunk")
                if not k:
                    for _ in range(_HEADERS + 1):
                        if c.readline(2) == -1:  # trailers, up to the empty line
                            c.unread = None
                            return 0
                    raise ProtocolError("bad chunk")
            k = c.sock.readinto(buf, min(n, self.count))  # type: ignore
            if not k:
                raise ConnectionLost("closed") if k == 0 else Timeout("timed out")
            self.count -= k
            if not (self.count or self.chunked):
                c.unread = None
            return k
        except (OSError, HTTPError) as e:
            self.close()  # a failed body leaves the stream out of step: drop it
            raise error(e)

    def close(self):
        """Done with the response: if its body is not read to the end, the connection is
        dropped (OneNET bodies are read whole: json(), or a download fragment)."""
        c = self.client
        if c.unread is self:
            c.close()

    def json(self):
        """The body as JSON, read into the client's 1 KiB buffer (free once the request
        went out): OneNET replies are a few hundred bytes. Longer, or malformed, is a
        ProtocolError."""
        c = self.client
        b = memoryview(c.buf)
        n = 0
        while c.unread is self and n < _BUF:
            n += self.readinto(b[n:])
        if c.unread is self:
            self.close()
            raise ProtocolError("long JSON")
        try:
            return _json.loads(b[:n])  # type: ignore  # stubs: str only; any buffer works
        except ValueError:
            raise ProtocolError("bad JSON")


class Client:
    """HTTP/1.1 with one kept-alive connection. timeout: seconds for connect, TLS
    handshake, each read and each response head. https verifies the server against the
    CA certificate in cafile (PEM or DER); without one, https is a TLSError."""

    def __init__(self, timeout=10, cafile=None):
        if not timeout > 0:
            raise ValueError("timeout")
        self.buf = bytearray(_BUF)  # receive buffer: head lines, json()
        self.byte = bytearray(1)  # readline reads one byte at a time into it
        self.timeout = timeout
        self.context = cafile  # _tls makes it an SSLContext
        # the stream, its origin (None: not reusable), the Response whose body is unread
        self.sock = self.origin = self.unread = None
        # set per request: answered (a byte of the response arrived), deadline (the head's)

    def close(self):
        """Close the connection (the next request opens a new one)."""
        s = self.sock
        self.sock = self.origin = self.unread = None
        if s:
            s.close()

    def request(self, method, url, headers=None, json=None, data=None):
        """Send a request, follow up to 4 redirects; the Response with its head read.
        A request with an Authorization header follows none (the 3xx is returned): the
        header never goes to another host. A redirect from https to http is a TLSError,
        before anything is sent to the http URL."""
        # (the strings are split so that each is one the firmware already has: no RAM)
        h = ""
        follow = 1
        for k in headers or ():
            h += "%s: %s\r\n" % (k, headers[k])  # type: ignore
            if k.lower() == "authorization":
                follow = 0
        if json is not None:
            data = _json.dumps(json).encode()
            h += "%s: %s\r\n" % ("Content-Type", "application/json")
        if data is not None:
            h += "%s: %s\r\n" % ("Content-Length", len(data))
        for _ in range(5):
            sc, _, path = url.partition("://")
            host, _, path = path.partition("/")
            tls = sc == "https"
            if not (tls or sc == "http"):  # the caller's URL, or a Location (ftp:, //host...)
                raise ProtocolError("bad url")
            if follow > 1 and not tls:  # follow 2: redirected from https
                raise TLSError("downgrade")
            o = sc + "://" + host
            # the head and the body in ONE write: no Nagle/delayed-ACK stall
            req = ("%s %s %s\r\n" % (method, "/" + path, "HTTP/1.1") + "Host: %s\r\n" % host + h + "\r\n").encode()
            if data:
                req += data
            if self.unread:
                self.unread.close()  # drop what the caller left unread
            # a kept connection the server has meanwhile closed fails before any byte of
            # the response arrives: then (only then) send once more on a new one
            while True:
                self.answered = 0
                fresh = self.origin != o
                try:
                    s = self.sock
                    if fresh:
                        self.close()
                        n, _, port = host.partition(":")
                        if tls:
                            from . import _tls

                            _tls.context(self)  # refuses before connecting without a CA
                        ai = socket.getaddrinfo(n, int(port or (443 if tls else 80)))[0]
                        s = self.sock = socket.socket(ai[0])
                        s.settimeout(self.timeout)
                        s.connect(ai[-1])
                        if tls:
                            s = self.sock = _tls.wrap_socket(self, s, n)  # type: ignore
                        self.origin = o
                    s.write(req)  # type: ignore
                    r = self.head(method)
                    break
                except (OSError, HTTPError) as e:
                    self.close()
                    e = error(e)
                    if fresh or self.answered or not isinstance(e, ConnectionLost):
                        raise e
                except ValueError as e:  # _tls refused, or a port that is not a number
                    self.close()
                    raise TLSError(str(e)) if tls else ProtocolError("bad url")
            loc = r.headers.get("location")
            if r.status // 100 != 3 or not loc or not follow:
                return r
            r.close()
            # absolute, absolute-path or relative (no CR/LF inside: readline drops them)
            if "://" not in loc:
                if loc[:1] != "/":
                    path = path.split("?")[0]
                    loc = "/" + path[:path.rfind("/") + 1] + loc
                loc = o + loc
            url = loc
            follow = follow + tls
        raise ProtocolError("redirects")

    def readline(self, mode):
        # One line up to LF (CRs dropped), at most _LINE bytes; an OSError is the caller's
        # to map. mode 0: a head line, stored in buf, -> str, within the head's deadline.
        # mode 1: a chunk-size line "hex[;ext]" -> its value, -1 if empty. mode 2: a
        # trailer, skipped -> -1 if empty. Nothing is stored in modes 1 and 2: json()
        # reads a chunked body into buf.
        buf = self.buf
        n = x = 0
        v = -1
        for _ in range(_LINE + 2):
            if not mode and time.ticks_diff(self.deadline, time.ticks_ms()) < 0:
                raise Timeout("slow head")
            k = self.sock.readinto(self.byte, 1)  # type: ignore
            if not k:
                raise ConnectionLost("closed") if k == 0 else Timeout("timed out")
            self.answered = 1
            b = self.byte[0]
            if b == 10:
                return v if mode else str(buf[:n], "utf-8")
            if b == 13:
                continue
            if not mode:
                buf[n] = b
                n += 1
            elif mode > 1:
                v = -2  # a trailer line, skipped
            elif x:
                pass  # a chunk extension, ignored
            else:
                d = b - 48 if b < 58 else (b | 32) - 87 if (b | 32) > 96 else -1
                if 0 <= d < 16 and v < 0x1000000:  # at most 7 digits: small ints on a board
                    v = d + 16 * v if v > 0 else d
                elif v >= 0 and (b == 59 or b < 33):  # ";", space or tab after the size
                    x = 1
                else:
                    raise ProtocolError("bad chunk")  # at once: no waiting for the LF
        raise ProtocolError("long line")

    def head(self, method):
        # Status line and headers -> Response; how its body is delimited. Every value
        # error (bad UTF-8, number, field) is a ProtocolError.
        self.deadline = time.ticks_add(time.ticks_ms(), int(self.timeout * 1000))
        r = Response()
        r.client = self
        h = r.headers = {}
        try:
            ver, st, *_ = self.readline(0).split(None, 2)  # type: ignore
            r.status = st = int(st)
            if ver[:7] != "HTTP/1." or not 199 < st < 600:  # 1xx: OneNET never sends one
                raise ValueError
            for _ in range(_HEADERS + 1):
                k, c, v = self.readline(0).partition(":")  # type: ignore
                if not (k or c):
                    break
                if not c or k.strip() != k:
                    raise ValueError
                k = k.lower()
                v = v.strip()
                if " %s " % k in _KEEP:
                    if h.get(k, v) != v:
                        raise ValueError
                    h[k] = v
            else:
                raise ValueError
            r.date = h.get("date")
            if "close" in h.get("connection", "").lower():
                self.origin = None  # not reused (an HTTP/1.0 peer that closes: retried once)
            te = h.get("Transfer-Encoding".lower())  # .lower(): a string the firmware has
            if te:
                if te.lower() != "chunked":
                    raise ValueError
                r.chunked = 1
            elif st not in (204, 304):  # a length is required (OneNET never ends by closing)
                cl = h.get("Content-Length".lower(), "")
                if not cl.isdigit() or len(cl) > 9:  # small ints on a board
                    raise ValueError
                r.length = r.count = int(cl)
            if st == 206:
                u, s = h.get("content-range", "").split(" ")  # "bytes a-b/(total|*)"
                s, z = s.split("/")
                a, b = map(int, s.split("-"))
                z = None if z == "*" else int(z)
                if u != "bytes" or b < a or (z is not None and b >= z) or r.length not in (None, b - a + 1):
                    raise ValueError
                r.range = (a, b, z)
        except ValueError:
            raise ProtocolError("bad head")
        self.unread = r if r.count or r.chunked else None
        return r
