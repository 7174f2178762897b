# A lean HTTP/1.1 client for the OTA download and the OneNET API calls.
#
# One Client keeps ONE connection alive across requests to the same origin: a download is
# many Range requests, and a TLS handshake costs an ESP32 seconds. The server is never
# trusted: every line, header count and JSON body is bounded, lying lengths are errors,
# and a timeout applies to connect, the TLS handshake and every read, redirects included.
#
# Reading: the response head comes in with recv() (it returns what has arrived, so a short
# reply never waits for the timeout); body bytes that came with the head are served first,
# then Response.readinto() reads straight from the socket into the caller's buffer with
# stream readinto(buf, n): no slicing, nothing allocated per call.
import binascii
import errno
import json as _json
import socket
import time
from micropython import const

_LINE = const(512)  # longest status, header, chunk-size or trailer line accepted
_HEADERS = const(32)  # most header (or trailer) lines in one response
_INTERIM = const(4)  # most 1xx responses skipped before the real one
_REDIRECTS = const(4)
_DRAIN = const(1024)  # unread body worth draining to keep a connection; more -> reconnect
_JSON = const(4096)  # default bound of json()
_TX = const(1024)  # request buffer: the head and a small body, sent in ONE write
_CHUNK_DIGITS = const(7)  # chunk sizes up to 256 MiB stay small ints on an ESP32
_REDIRECT_CODES = (301, 302, 303, 307, 308)
# Response.headers keeps only these (lower-case); all others are read and dropped.
_KEEP = (b"content-type", b"content-length", b"content-range", b"transfer-encoding",
         b"connection", b"location", b"date", b"retry-after", b"etag")
# A timeout shows as ETIMEDOUT from readinto/read (110 on unix, the port's own value
# elsewhere), EAGAIN (11) from recv, and EINPROGRESS from a connect that ran out of time.
_TIMEOUTS = (errno.ETIMEDOUT, errno.EAGAIN, errno.EINPROGRESS, 110, 11)


class HTTPError(Exception):
    """Any failed request. `code` is the OneNET report code for a failed download."""
    code = 107


class Timeout(HTTPError):
    """Connect, TLS handshake, or a read took longer than the timeout."""
    code = 104


class ConnectionLost(HTTPError):
    """No connection, or the peer closed/reset it before the response was complete."""


class ProtocolError(HTTPError):
    """The reply broke HTTP or its own headers: oversized or malformed line, lying
    Content-Length/Content-Range, bad chunk, bad or oversized JSON, redirect loop."""


class TLSError(HTTPError):
    """The server certificate or host name was refused, or https has no CA configured."""


def _fail(e):
    # An OSError from the socket or TLS layer as one of ours. mbedtls errors are < -256.
    n = e.args[0] if e.args else 0
    if n in _TIMEOUTS:
        return Timeout("timed out")
    if isinstance(n, int) and n < -256:
        return TLSError("TLS error %d" % n)
    return ConnectionLost("connection lost (%s)" % n)


def _number(s, what):
    # A decimal header field: digits only (no sign, no spaces), at most 15 of them.
    if not s or len(s) > 15 or not s.isdigit():
        raise ProtocolError("bad " + what)
    return int(s)


def _split(url):
    # "http[s]://host[:port][/path][?query]" -> (tls, host, port, path)
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("http", "https"):
        raise ValueError("unsupported URL " + url)
    tls = scheme == "https"
    i = 0
    while i < len(rest) and rest[i] not in "/?":
        i += 1
    host, colon, port = rest[:i].partition(":")
    path = rest[i:]
    if path[:1] != "/":
        path = "/" + path
    return tls, host, int(port) if colon else (443 if tls else 80), path


def _join(base, loc):
    # The URL a redirect Location (absolute, scheme-relative, absolute-path or relative) means.
    for c in loc:
        if c <= " ":
            raise ProtocolError("bad redirect")
    if "://" in loc:
        return loc
    if loc[:2] == "//":
        return base[:base.find(":") + 1] + loc
    i = base.find("/", base.find("://") + 3)
    if i < 0:
        base, i = base + "/", len(base)
    if loc[:1] == "/":
        return base[:i] + loc
    path = base[i:].split("?")[0]
    return base[:i] + path[:path.rfind("/") + 1] + loc


def _put(buf, n, s):
    # Append s to the request buffer at n; the head must fit (it is sent in one write).
    if isinstance(s, str):
        s = s.encode()
    e = n + len(s)
    if e > len(buf):
        raise ValueError("request head longer than the buffer")
    buf[n:e] = s
    return e


class Response:
    """One response. `status` int, `headers` dict (lower-case names, only a known set),
    `length` Content-Length or None, `range` (start, end, total) of a 206 (total None for
    "*"), `url` the final URL after redirects. Read the body with readinto() or json()."""

    def __init__(self, client, status):
        self._c = client
        self.status = status
        self.headers = {}
        self.length = None
        self.range = None
        self.url = None
        self._left = 0  # body bytes left: of the body, or of the current chunk; -1 until close
        self._chunked = False  # chunks still to come
        self._chunks = 0  # chunks begun (each after the first is preceded by CRLF)
        self._keep = True  # the connection may serve another request

    @property
    def date(self):
        """The server's Date header (for auth.Auth.sync), or None."""
        return self.headers.get("date")

    def readinto(self, buf, nbytes=None):
        """Read up to nbytes (default len(buf)) body bytes into the START of buf.

        Returns the count; 0 at the end of the body. Allocates nothing.
        """
        n = len(buf)
        if nbytes is not None and nbytes < n:
            n = nbytes
        try:
            if self._left == 0 and self._chunked:
                self._next_chunk()
            if self._left == 0 or n <= 0:
                return 0
            if 0 < self._left < n:
                n = self._left
            c = self._c
            if c is None:
                raise ConnectionLost("response closed before its body was read")
            got = c._readinto(buf, n)
            if got == 0:
                if self._left > 0:
                    raise ConnectionLost("body ended early")
                self._left = 0  # read until close: this is the end
                self._end()
                return 0
            if self._left > 0:
                self._left -= got
                if self._left == 0 and not self._chunked:
                    self._end()
            return got
        except HTTPError:
            self._keep = False
            self.close()  # a body that failed leaves the stream unusable: drop it
            raise

    def _next_chunk(self):
        # Start the next chunk: "[CRLF]size[;ext]CRLF"; size 0 ends the body (trailers skipped).
        c = self._c
        if c is None:
            raise ConnectionLost("response closed before its body was read")
        if self._chunks and (c._byte() != 13 or c._byte() != 10):
            raise ProtocolError("no CRLF after chunk")
        self._chunks += 1
        size = c._chunk_size()
        if size:
            self._left = size
            return
        self._chunked = False
        for _ in range(_HEADERS + 1):
            if c._skip_line():
                self._end()
                return
        raise ProtocolError("too many trailers")

    def _end(self):
        # The body is complete: the connection is free for the next request (or closed).
        c = self._c
        self._c = None
        if c is not None:
            c._resp = None
            if not self._keep:
                c.close()

    def close(self):
        """Done with this response: drain a small rest of the body, else drop the connection."""
        c = self._c
        if c is None:
            return
        if self._keep and (self._chunked or 0 < self._left <= _DRAIN):
            budget = _DRAIN
            try:
                while budget > 0:
                    k = self.readinto(c._tx, budget)
                    if not k:
                        break
                    budget -= k
            except HTTPError:
                pass  # readinto has dropped the connection: the next request reconnects
            if self._c is None:
                return  # the whole body was read (the connection is kept), or dropped
        self._c = None
        c._resp = None
        c.close()

    def json(self, limit=_JSON):
        """The body parsed as JSON; ProtocolError if longer than limit bytes or malformed."""
        if self.length is not None and self.length > limit:
            self.close()
            raise ProtocolError("JSON body of %d bytes, limit %d" % (self.length, limit))
        buf = bytearray(limit + 1 if self.length is None else self.length)
        mv = memoryview(buf)
        n = 0
        while n < len(buf):
            k = self.readinto(mv[n:])
            if not k:
                break
            n += k
        if n > limit:
            self.close()
            raise ProtocolError("JSON body longer than %d bytes" % limit)
        try:
            return _json.loads(mv[:n])  # type: ignore  # stubs: str only; any buffer works
        except ValueError:
            raise ProtocolError("malformed JSON")


class Client:
    """HTTP/1.1 client with one kept-alive connection (urequests-like request()).

    timeout: seconds for connect, TLS handshake and each read (always applies).
    TLS: https verifies the server certificate and host name against `cadata` (PEM or DER
    bytes) or `cafile` (path). Without a CA, https raises TLSError unless insecure=True is
    passed explicitly (then the server is not authenticated at all).
    """

    def __init__(self, timeout=10, cadata=None, cafile=None, insecure=False, bufsize=_TX):
        self._tx = bytearray(bufsize)  # first: the one big buffer, also the drain scratch
        self._one = bytearray(1)
        self.timeout = timeout
        self._cadata = cadata
        self._cafile = cafile
        self._insecure = insecure
        self._ctx = None
        self._sock = None  # the stream we read and write (TLS or plain)
        self._raw = None  # the plain socket under it (settimeout lives here)
        self._origin = None
        self._resp = None  # the response whose body is still being read
        self._pend = b""  # bytes received after a response head, served before the socket
        self._pp = 0
        self._rxd = False  # any byte of the current response received
        self._ms = 0

    def close(self):
        """Close the connection (the next request opens a new one)."""
        s = self._sock
        self._sock = self._raw = self._origin = self._resp = None
        self._pend = b""
        self._pp = 0
        if s is not None:
            s.close()

    def request(self, method, url, headers=None, json=None, data=None, timeout=None):
        """Send a request, follow up to a few redirects, return the Response (head read)."""
        t = self.timeout if timeout is None else timeout
        if not t or t <= 0:
            raise ValueError("a timeout is required")
        self._ms = int(t * 1000)
        ctype = None
        if json is not None:
            data = _json.dumps(json)
            ctype = "application/json"
        if isinstance(data, str):
            data = data.encode()
        for _ in range(_REDIRECTS + 1):
            tls, host, port, path = _split(url)
            r = self._exchange(method, (tls, host, port), path, headers, data, ctype, t)
            loc = r.headers.get("location")
            if r.status not in _REDIRECT_CODES or not loc:
                r.url = url
                return r
            r.close()
            url = _join(url, loc)
            if r.status == 303 and method != "HEAD":
                method, data, ctype = "GET", None, None
        raise ProtocolError("too many redirects")

    def _exchange(self, method, origin, path, headers, data, ctype, t):
        if self._resp is not None:
            self._resp.close()  # drain or drop what the caller left unread
        if self._pp < len(self._pend):
            self.close()  # bytes beyond the last body: this stream cannot be trusted
        n, rest = self._build(method, origin, path, headers, data, ctype)
        # A kept-alive connection the server has meanwhile closed fails before any byte
        # of the response arrives: then (only then) send once more on a new connection.
        retry = self._sock is not None and self._origin == origin
        while True:
            s, raw = self._sock, self._raw
            if s is None or raw is None or self._origin != origin:
                s = self._connect(origin, t)
            else:
                raw.settimeout(t)
            try:
                try:
                    s.write(self._tx, n)  # type: ignore  # stubs lack write(buf, n)
                    if rest:
                        s.write(rest)
                except OSError as e:
                    raise _fail(e)
                return self._response(method)
            except HTTPError as e:
                self.close()  # whatever failed, this stream is out of step now
                if not retry or self._rxd or not isinstance(e, ConnectionLost):
                    raise
                retry = False

    def _build(self, method, origin, path, headers, data, ctype):
        # The whole head (and a body that fits) in the preallocated buffer: ONE write,
        # no Nagle/delayed-ACK stall per header.
        tls, host, port = origin
        tx = self._tx
        n = _put(tx, 0, "%s %s HTTP/1.1\r\nHost: %s" % (method, path, host))
        if port != (443 if tls else 80):
            n = _put(tx, n, ":%d" % port)
        n = _put(tx, n, "\r\nConnection: keep-alive\r\n")
        if headers:
            for k in headers:
                n = _put(tx, n, "%s: %s\r\n" % (k, headers[k]))
        if data is not None:
            if ctype:
                n = _put(tx, n, "Content-Type: %s\r\n" % ctype)
            n = _put(tx, n, "Content-Length: %d\r\n" % len(data))
        n = _put(tx, n, "\r\n")
        if data and n + len(data) <= len(tx):
            return _put(tx, n, data), None
        return n, data

    def _context(self):
        if self._ctx is None:
            import ssl  # only https pays for it

            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ca = self._cadata
            if ca is None and self._cafile:
                with open(self._cafile, "rb") as f:
                    ca = f.read()
            if ca:
                ctx.verify_mode = ssl.CERT_REQUIRED
                if isinstance(ca, str):
                    ca = ca.encode()
                try:
                    # PEM is turned into DER here: not every build has mbedtls' PEM parser.
                    # Each certificate of a bundle is added to the trusted chain.
                    if b"-----BEGIN" in ca:
                        p = ca.split(b"-----")
                        for i in range(1, len(p) - 1):
                            if p[i] == b"BEGIN CERTIFICATE":
                                ctx.load_verify_locations(cadata=binascii.a2b_base64(p[i + 1]))
                    else:
                        ctx.load_verify_locations(cadata=ca)
                except ValueError:
                    raise TLSError("bad CA certificate")
            elif self._insecure:
                ctx.verify_mode = ssl.CERT_NONE
            else:
                raise TLSError("https needs cadata= or cafile= (or insecure=True)")
            self._ctx = ctx
        return self._ctx

    def _connect(self, origin, t):
        self.close()
        tls, host, port = origin
        ctx = self._context() if tls else None
        try:
            ai = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)[0]
        except OSError as e:
            raise ConnectionLost("cannot resolve %s (%s)" % (host, e.args[0]))
        s = socket.socket(ai[0], socket.SOCK_STREAM, ai[2])
        self._sock = self._raw = s
        try:
            s.settimeout(t)
            s.connect(ai[-1])
            if ctx:
                # the handshake runs here, so a refused certificate or host name stops
                # the request before any of its bytes are sent
                self._sock = ctx.wrap_socket(s, server_hostname=host)
        except OSError as e:
            self.close()
            raise _fail(e)
        except ValueError as e:  # mbedtls: the certificate was refused (message says why)
            self.close()
            raise TLSError(str(e))
        self._origin = origin
        return self._sock

    def _stream(self):
        s = self._sock
        if s is None:
            raise ConnectionLost("connection closed")
        return s

    def _line(self, deadline):
        # One CRLF-terminated line (without CRLF) of at most _LINE bytes. Bytes after it stay
        # pending. An endless line is an error after reading _LINE + 2 bytes; a dribble that
        # would stretch the head past one timeout is a Timeout.
        while True:
            p = self._pend
            i = p.find(b"\r\n", self._pp)
            if i >= 0:
                if i - self._pp > _LINE:
                    break
                line = p[self._pp:i]
                self._pp = i + 2
                return line
            have = len(p) - self._pp
            if have >= _LINE + 2:
                break
            if time.ticks_diff(deadline, time.ticks_ms()) <= 0:
                raise Timeout("response head too slow")
            try:
                more = self._stream().recv(_LINE + 2 - have)
            except OSError as e:
                raise _fail(e)
            if not more:
                raise ConnectionLost("closed before the response was complete")
            self._rxd = True
            self._pend = p[self._pp:] + more
            self._pp = 0
        raise ProtocolError("line longer than %d bytes" % _LINE)

    def _response(self, method):
        # Read a status line and headers; skip interim 1xx responses.
        self._rxd = False
        deadline = time.ticks_add(time.ticks_ms(), self._ms)
        for _ in range(_INTERIM + 1):
            line = self._line(deadline)
            parts = line.split(None, 2)
            if len(parts) < 2 or parts[0][:7] != b"HTTP/1." or len(parts[1]) != 3 \
                    or not parts[1].isdigit() or parts[1] < b"100":
                raise ProtocolError("bad status line")
            status = int(parts[1])
            r = Response(self, status)
            h = r.headers
            for _ in range(_HEADERS + 1):
                line = self._line(deadline)
                if not line:
                    break
                name, sep, value = line.partition(b":")
                if not sep or not name or name[-1:] in b" \t" or line[:1] in b" \t":
                    raise ProtocolError("bad header line")
                name = name.lower()
                if name in _KEEP:
                    try:
                        key, value = name.decode(), value.strip().decode()
                    except ValueError:
                        raise ProtocolError("bad header value")
                    if key in h and h[key] != value and key != "connection":
                        raise ProtocolError("conflicting " + key)
                    h[key] = value
            else:
                raise ProtocolError("too many header lines")
            if status >= 200:
                self._frame(r, method, parts[0] == b"HTTP/1.0")
                return r
        raise ProtocolError("too many interim responses")

    def _frame(self, r, method, http10):
        # How the body is delimited, and whether the connection survives it.
        h = r.headers
        conn = h.get("connection", "").lower()
        r._keep = "keep-alive" in conn if http10 else "close" not in conn
        te = h.get("transfer-encoding")
        if method == "HEAD" or r.status in (204, 304):
            r._left = 0
        elif te:
            if te.lower().split(",")[-1].strip() != "chunked":
                raise ProtocolError("unsupported transfer-encoding " + te)
            r._chunked = True
        elif "content-length" in h:
            r.length = r._left = _number(h["content-length"], "content-length")
        else:
            r._left = -1  # the body runs until the server closes
            r._keep = False
        cr = h.get("content-range")
        if r.status == 206:
            if not cr:
                raise ProtocolError("206 without content-range")
            unit, _, spec = cr.partition(" ")
            span, _, total = spec.partition("/")
            a, _, b = span.partition("-")
            start, end = _number(a, "content-range"), _number(b, "content-range")
            size = None if total == "*" else _number(total, "content-range")
            if unit != "bytes" or end < start or (size is not None and end >= size) or \
                    (r.length is not None and r.length != end - start + 1):
                raise ProtocolError("inconsistent content-range " + cr)
            r.range = (start, end, size)
        self._resp = r
        if r._left == 0 and not r._chunked:
            r._end()

    def _readinto(self, buf, n):
        # Body bytes into the start of buf: first what came with the head (copied byte by
        # byte, since a slice would allocate), then straight from the socket.
        p = self._pend
        i = self._pp
        k = len(p) - i
        if k > 0:
            if k > n:
                k = n
            for j in range(k):
                buf[j] = p[i + j]
            self._pp = i + k
            if self._pp == len(p):
                self._pend = b""
                self._pp = 0
            return k
        try:
            got = self._stream().readinto(buf, n)
        except OSError as e:
            raise _fail(e)
        if got is None:
            raise Timeout("timed out")
        return got

    def _byte(self):
        # One byte (chunk framing): read singly so that no chunk data is read ahead.
        if self._pp < len(self._pend):
            b = self._pend[self._pp]
            self._pp += 1
            return b
        if self._readinto(self._one, 1) != 1:
            raise ConnectionLost("closed inside chunk framing")
        return self._one[0]

    def _skip_line(self):
        # Skip a trailer line byte by byte (nothing read ahead, nothing allocated);
        # True if it was the empty line that ends the message.
        for i in range(_LINE + 2):
            if self._byte() == 10:
                return i <= 1
        raise ProtocolError("trailer line too long")

    def _chunk_size(self):
        # "hex[;ext]CRLF" -> int, extensions ignored, the line bounded.
        n = digits = 0
        ext = False
        for _ in range(_LINE):
            b = self._byte()
            if b == 13:
                if self._byte() != 10 or not digits:
                    break
                return n
            if ext:
                continue
            if b in b"; \t":
                ext = True
                continue
            if 48 <= b <= 57:
                d = b - 48
            elif 97 <= b | 32 <= 102:
                d = (b | 32) - 87
            else:
                break
            digits += 1
            if digits > _CHUNK_DIGITS:
                break
            n = n * 16 + d
        raise ProtocolError("bad chunk size")
