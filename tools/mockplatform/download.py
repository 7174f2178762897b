"""Endpoint 4, the package download: OneNET's Range rules and streaming with body faults.

Range (``parse_range``), as OneNET documents it, for a package of ``len`` bytes:

* ``bytes=a-``  from a to the end; ``a >= len`` -> ``a = 0``
* ``bytes=a-b`` inclusive; ``b >= len`` -> ``b = len - 1``; then ``a > b`` -> ``a = 0``
* ``bytes=-n``  the last n bytes; ``n > len`` (or ``n == 0``, a decision) -> the whole file
* the same three forms without ``bytes=`` (OneNET's C SDK sends ``Range: a-b``)
* decisions where the docs are silent: only the first range of a list is served; a header
  that fits none of the forms is ignored (200, whole file), as HTTP servers do.

A ranged request is answered 206 with ``Content-Range: bytes a-b/len`` (even when it covers
the whole file); no Range, or the ``ignore-range`` fault, gives 200 with the whole file.
``Content-Length`` is always sent. The head and the first piece of the body go out in one
``sendall``; the rest follows in ``PIECE`` sized pieces read from memory or the file.
"""
import re
import socket

PIECE = 64 * 1024

_RANGE = re.compile(r"\s*(?:bytes\s*=\s*)?(\d*)\s*-\s*(\d*)\s*\Z")


def parse_range(value, length):
    """``(start, end)`` inclusive for a Range header value, or None to send the whole file."""
    if not value or length == 0:
        return None
    match = _RANGE.match(value.split(",")[0])
    if not match or match.group(1) == match.group(2) == "":
        return None
    first, last = match.groups()
    if first == "":
        count = int(last)
        if count == 0 or count > length:
            return 0, length - 1
        return length - count, length - 1
    start = int(first)
    if last == "":
        return (0 if start >= length else start), length - 1
    end = min(int(last), length - 1)
    return (0 if start > end else start), end


def stream(sock, head, package, start, end, faults, cancel_task, stop_event):
    """Send ``head`` and bytes ``[start, end)`` of ``package``, acting on the body faults on
    the way. Returns False when the connection was dropped on purpose (caller closes)."""
    pending_head = head
    corrupt = sorted(offset for offset in faults.corrupt_at if start <= offset < end)
    events = faults.body_events(start, end)
    reader = package.reader()
    try:
        position = start
        while position < end or pending_head:
            while events and events[0] == position:
                events.pop(0)
                if faults.claim_cancel(position):
                    cancel_task("fault cancel-at %d" % position)
                seconds = faults.claim_stall(position)
                if seconds:
                    if pending_head:
                        sock.sendall(pending_head)
                        pending_head = b""
                    stop_event.wait(seconds)
                if faults.claim_drop(position):
                    if pending_head:
                        sock.sendall(pending_head)
                    _drop(sock)
                    return False
            stop = min(end, position + PIECE, events[0] if events else end)
            piece = reader.read(position, stop - position)
            hits = [offset for offset in corrupt if position <= offset < stop]
            if hits:
                piece = bytearray(piece)
                for offset in hits:
                    piece[offset - position] ^= 0xFF
            if pending_head:
                sock.sendall(pending_head + bytes(piece))
                pending_head = b""
            else:
                sock.sendall(piece)
            position = stop
        return True
    finally:
        reader.close()


def _drop(sock):
    """Close as a broken link would look to the client: FIN after a partial body."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
