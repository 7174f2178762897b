"""Switchable faults: the ways a real platform, network or proxy lets a device down.

Set them as attributes (``platform.faults.drop_at = [65536, 200000]``) or by name with the
same syntax as the command line (``platform.set_fault("drop", [65536, 200000])``,
``--fault drop=65536,200000``). Faults given by name add to what is already set.
Offsets are absolute offsets in the package file. ENDPOINT is one of the names in
``ENDPOINTS``, or ``api`` (every endpoint but the download) or ``any``.

=================================  ===========================================================
``drop=OFF[,OFF...]``              close the download connection when the bytes served reach
                                   each offset (each offset once; ``drop_at``)
``stall=[ENDPOINT:]SECONDS``       wait before the next response head of ENDPOINT (default
                                   download), once (``stall_head``)
``stall-body=OFF:SECONDS``         wait in the download body when it reaches OFF, once
                                   (``stall_body``)
``http-error=[ENDPOINT][:STATUS[:COUNT]]``  answer HTTP STATUS (default 503) to the next COUNT
                                   (default 1) requests to ENDPOINT (default download)
                                   (``http_error``)
``errno=ENDPOINT:ERRNO[:COUNT]``   answer errno ERRNO (e.g. 7, internal error) to the next
                                   COUNT API requests to ENDPOINT (``errno``)
``ignore-range``                   answer every download with 200 and the whole file
``corrupt=OFF[,OFF...]``           flip the byte at each offset in everything served (always)
``wrong-md5``                      advertise an MD5 that is not the package's
``wrong-size[=DELTA]``             advertise size + DELTA (default 1) (``size_delta``)
``expire-token``                   expire the token of every open task now (an action)
``cancel-at=OFF``                  cancel the task when the bytes served reach OFF, once,
                                   and keep sending the rest of that response
``bad-json=ENDPOINT[:COUNT]``      answer the next COUNT requests with malformed JSON
``endless-header=ENDPOINT[:COUNT]``  answer with a header line that never ends: non-CRLF bytes
                                   up to 1 MiB or until the client closes, then close
``chunked``                        send API JSON with ``Transfer-Encoding: chunked``
``redirect=absolute|relative``     answer downloads with 302 to the same file at
                                   ``/mock/file/{token}`` (absolute URL or a path)
``task-data=JSON``                 merge a JSON object into the ``data`` of every check and
                                   tasking answer, after the advertising faults (always); a
                                   ``null`` value removes that field; repeated: merged
                                   (``task_data``). For malformed tasks: ``{"size": -1}``,
                                   ``{"token": "a/b"}``, ``{"md5": null}``. Only what is
                                   advertised changes: the download still serves the package
                                   under the task's real token.
=================================  ===========================================================
"""
import json
import threading

ENDPOINTS = ("version_report", "version_query", "check", "token_check", "download",
             "progress", "report", "tasking", "dev_info")
ENDPOINT_GROUPS = ("api", "any")

FAULT_NAMES = ("drop", "stall", "stall-body", "http-error", "errno", "ignore-range", "corrupt",
               "wrong-md5", "wrong-size", "expire-token", "cancel-at", "bad-json",
               "endless-header", "chunked", "redirect", "task-data")


def _endpoint(name):
    if name not in ENDPOINTS + ENDPOINT_GROUPS:
        raise ValueError("unknown endpoint %r (one of %s)" % (name, ", ".join(ENDPOINTS + ENDPOINT_GROUPS)))
    return name


def _offsets(text):
    return [int(part) for part in text.split(",") if part.strip()]


def as_text(arg):
    """A fault argument given as a Python value, in command-line syntax: lists join with
    ``,`` and tuples with ``:``."""
    if arg is None or isinstance(arg, str):
        return arg
    if isinstance(arg, list):
        return ",".join(str(item) for item in arg)
    if isinstance(arg, tuple):
        return ":".join(str(item) for item in arg)
    return str(arg)


class Faults:
    """The switches, all off after ``clear()``. The ``take_*``/``claim_*`` methods are used by
    the server and consume one-shot faults under a lock (connections run in threads)."""

    def __init__(self):
        self._lock = threading.Lock()
        self.clear()

    def clear(self):
        self.drop_at = []           # file offsets, each used once
        self.stall_head = {}        # endpoint -> seconds, once
        self.stall_body = []        # [(file offset, seconds)], each once
        self.http_error = {}        # endpoint -> [status, remaining count]
        self.errno = {}             # endpoint -> [errno, remaining count]
        self.ignore_range = False
        self.corrupt_at = []        # file offsets, flipped in every response
        self.wrong_md5 = False
        self.size_delta = 0
        self.cancel_at = None       # file offset, once
        self.bad_json = {}          # endpoint -> remaining count
        self.endless_header = {}    # endpoint -> remaining count
        self.chunked = False
        self.redirect = None        # None, "absolute" or "relative"
        self.task_data = {}         # field -> value merged into check/tasking data (None: removed)

    def set(self, name, arg=None):
        """Add the fault ``name`` with ``arg`` in command-line syntax (see the module doc).
        ``expire-token`` is an action on tasks: ``MockPlatform.set_fault`` handles it.
        ``task-data`` also takes a dict."""
        if name == "task-data":
            fields = arg if isinstance(arg, dict) else json.loads(arg or "")
            if not isinstance(fields, dict):
                raise ValueError("task-data must be a JSON object, not %r" % (arg,))
            self.task_data.update(fields)
            return
        arg = as_text(arg)
        parts = arg.split(":") if arg else []
        if name == "drop":
            self.drop_at.extend(_offsets(arg))
        elif name == "stall":
            endpoint = _endpoint(parts[0]) if len(parts) == 2 else "download"
            self.stall_head[endpoint] = float(parts[-1])
        elif name == "stall-body":
            self.stall_body.append((int(parts[0]), float(parts[1])))
        elif name == "http-error":
            endpoint = _endpoint(parts[0]) if parts and parts[0] else "download"
            status = int(parts[1]) if len(parts) > 1 else 503
            self.http_error[endpoint] = [status, int(parts[2]) if len(parts) > 2 else 1]
        elif name == "errno":
            self.errno[_endpoint(parts[0])] = [int(parts[1]), int(parts[2]) if len(parts) > 2 else 1]
        elif name == "ignore-range":
            self.ignore_range = True
        elif name == "corrupt":
            self.corrupt_at.extend(_offsets(arg))
        elif name == "wrong-md5":
            self.wrong_md5 = True
        elif name == "wrong-size":
            self.size_delta = int(arg) if arg else 1
        elif name == "cancel-at":
            self.cancel_at = int(arg)
        elif name in ("bad-json", "endless-header"):
            table = self.bad_json if name == "bad-json" else self.endless_header
            table[_endpoint(parts[0])] = int(parts[1]) if len(parts) > 1 else 1
        elif name == "chunked":
            self.chunked = True
        elif name == "redirect":
            if arg not in ("absolute", "relative"):
                raise ValueError("redirect=absolute or redirect=relative, not %r" % arg)
            self.redirect = arg
        else:
            raise ValueError("unknown fault %r (one of %s)" % (name, ", ".join(FAULT_NAMES)))

    # -- consumed by the server -------------------------------------------------------------

    @staticmethod
    def _key(table, endpoint):
        """The entry of ``table`` that applies to ``endpoint``: its own, then its group."""
        for key in (endpoint, "api" if endpoint != "download" else None, "any"):
            if key in table:
                return key
        return None

    def _take_counted(self, table, endpoint):
        with self._lock:
            key = self._key(table, endpoint)
            if key is None:
                return None
            entry = table[key]
            if isinstance(entry, list):
                value, entry[1] = entry[0], entry[1] - 1
                remaining = entry[1]
            else:
                value, remaining = True, entry - 1
                table[key] = remaining
            if remaining <= 0:
                del table[key]
            return value

    def take_stall_head(self, endpoint):
        with self._lock:
            key = self._key(self.stall_head, endpoint)
            return self.stall_head.pop(key) if key else 0.0

    def take_http_error(self, endpoint):
        return self._take_counted(self.http_error, endpoint)

    def take_errno(self, endpoint):
        return self._take_counted(self.errno, endpoint)

    def take_bad_json(self, endpoint):
        return bool(self._take_counted(self.bad_json, endpoint))

    def take_endless_header(self, endpoint):
        return bool(self._take_counted(self.endless_header, endpoint))

    def body_events(self, start, end):
        """Offsets in ``[start, end)`` where serving must pause to act (drop, stall, cancel)."""
        with self._lock:
            offsets = set(self.drop_at) | {offset for offset, _ in self.stall_body}
            if self.cancel_at is not None:
                offsets.add(self.cancel_at)
        return sorted(offset for offset in offsets if start <= offset < end)

    def claim_drop(self, offset):
        with self._lock:
            if offset in self.drop_at:
                self.drop_at.remove(offset)
                return True
            return False

    def claim_stall(self, offset):
        with self._lock:
            for entry in self.stall_body:
                if entry[0] == offset:
                    self.stall_body.remove(entry)
                    return entry[1]
            return 0.0

    def claim_cancel(self, offset):
        with self._lock:
            if self.cancel_at == offset:
                self.cancel_at = None
                return True
            return False
