"""``MockPlatform``: configuration, devices and tasks, the server thread, the request record."""
import json
import re
import socket
import threading
import time
import traceback

from . import api
from .download import parse_range, stream
from .faults import Faults
from .server import BadRequest, Connection, ThreadedServer, response_head
from .state import (DEFAULT_TOKEN_LIFETIME, ERRORS, FOTA, FULL_PACKAGE, OPEN_STATES, Device,
                    Errno, Task)
from tools import onenet_auth

DEFAULT_PRODUCT_ID = "123456"
DEFAULT_ACCESS_KEY = "bW9jay1vbmVuZXQtYWNjZXNzLWtleS0wMDAwMDAwMDA="  # base64, a mock's only key
IDLE_TIMEOUT = 120  # seconds a kept-alive connection may sit idle

_ROUTES = [
    ("POST", re.compile(r"/ota/device/version\Z"), "version_report"),
    ("GET", re.compile(r"/ota/device/version\Z"), "version_query"),
    ("GET", re.compile(r"/ota/south/check\Z"), "check"),
    ("GET", re.compile(r"/ota/south/download/([^/]+)/check\Z"), "token_check"),
    ("GET", re.compile(r"/ota/south/download/([^/]+)\Z"), "download"),
    ("GET", re.compile(r"/mock/file/([^/]+)\Z"), "download"),  # the target of the redirect fault
    ("POST", re.compile(r"/ota/south/device/download/([^/]+)/progress\Z"), "progress"),
    ("POST", re.compile(r"/ota/south/report\Z"), "report"),
    ("GET", re.compile(r"/ota/south/tasking\Z"), "tasking"),
    ("GET", re.compile(r"/ota/devInfo\Z"), "dev_info"),
]
REDIRECT_PREFIX = "/mock/file/"


def route(method, path):
    """``(endpoint, token)``; endpoint ``"unknown"`` (404) or ``"method_not_allowed"`` (405)."""
    path_known = False
    for route_method, pattern, endpoint in _ROUTES:
        match = pattern.match(path)
        if match:
            path_known = True
            if method == route_method:
                return endpoint, (match.group(1) if pattern.groups else None)
    return ("method_not_allowed" if path_known else "unknown"), None


class MockPlatform:
    """A OneNET OTA platform on a real socket. See the package docstring for the tour.

    ``log`` is called with one line per request and per task state change (``print`` for
    the standalone server; None in tests, which read ``requests`` and ``task.history``).
    """

    def __init__(self, product_id=DEFAULT_PRODUCT_ID, access_key=DEFAULT_ACCESS_KEY, *,
                 host="127.0.0.1", port=0, ssl_context=None,
                 token_lifetime=DEFAULT_TOKEN_LIFETIME, log=None):
        self.product_id = str(product_id)
        self.access_key = access_key
        self.ssl_context = ssl_context
        self.token_lifetime = token_lifetime
        self.faults = Faults()
        self.devices = {}      # dev_id -> Device
        self.tasks = []        # every Task, oldest first
        self.requests = []     # every Request, in order of arrival
        self.connections = 0   # TCP connections accepted
        self.errors = []       # exceptions the server hit (a test may assert it stays empty)
        self._log = log
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._open_sockets = set()
        self._requested_address = (host, port)
        self._server = None
        self._thread = None

    # -- lifecycle --------------------------------------------------------------------------

    def start(self):
        self._stopping.clear()
        self._server = ThreadedServer(self._requested_address, self._serve_connection)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                                        name="mockplatform", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        """Stop accepting, cut every open connection, end any stall in progress."""
        if self._server is None:
            return
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            sockets = list(self._open_sockets)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join()
        self._server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def host(self):
        return self._server.server_address[0]

    @property
    def port(self):
        return self._server.server_address[1]

    @property
    def url(self):
        return "%s://%s:%d" % ("https" if self.ssl_context else "http", self.host, self.port)

    def device_config(self, device_id, **extra):
        """The ota_config.json fields a device needs to talk to this mock. "https" is said
        explicitly: the device's default is https, and a plain mock needs "https": false
        (a TLS mock needs a ca_file in ``extra``)."""
        config = {"host": self.host, "port": self.port, "https": self.ssl_context is not None,
                  "product_id": self.product_id, "access_key": self.access_key, "device_id": device_id}
        config.update(extra)
        return config

    # -- devices, tasks, faults ---------------------------------------------------------------

    def add_device(self, dev_id, unique_id=None, manuf="101", model="10101", f_version="1.0",
                   s_version="1.0", name=None, key=None):
        """A device; ``name``/``key`` (base64) allow a device-level signature."""
        device = Device(dev_id, unique_id, manuf, model, f_version, s_version, name, key)
        with self._lock:
            self.devices[device.dev_id] = device
        return device

    def add_task(self, dev_id, package, target, ota_type=FOTA, package_type=FULL_PACKAGE, *,
                 retry=3, interval=1, signal=0, power=0, ip_port=None, token_lifetime=None,
                 manuf=None, model=None):
        """A task for ``dev_id`` to upgrade to ``target`` with ``package`` (bytes or a path).
        ``ip_port``: None leaves ``ipPort`` out, ``"auto"`` is the address the device reached
        this server on, any other string is sent as is. manuf/model default to the device's."""
        with self._lock:
            device = self.devices[str(dev_id)]
            if any(task.state in OPEN_STATES for task in self.tasks_of(device, ota_type)):
                raise ValueError("device %s already has an open task of type %d" % (device.dev_id, ota_type))
            task = Task(
                len(self.tasks) + 1, device, package, target, ota_type=ota_type,
                package_type=package_type, retry=retry, interval=interval, signal=signal,
                power=power, ip_port=ip_port,
                token_lifetime=self.token_lifetime if token_lifetime is None else token_lifetime,
                manuf=manuf or device.manuf, model=model or device.model, lock=self._lock,
                on_change=self._task_changed,
            )
            self.tasks.append(task)
        self._say("task %d created: device %s %s %s -> %s, %d bytes, md5 %s, token %s" % (
            task.id, device.dev_id, "FOTA" if ota_type == FOTA else "SOTA",
            device.version(ota_type), target, task.size, task.md5, task.token))
        return task

    def set_fault(self, name, arg=None):
        """Switch a fault on by name, command-line syntax or Python values (``faults.py``)."""
        if name == "expire-token":
            for task in list(self.tasks):
                task.expire()
        else:
            self.faults.set(name, arg)

    def clear_faults(self):
        self.faults.clear()

    def auth_header(self, method="sha1", et=None, res=None, key=None):
        """A valid Authorization header for this product (for tests and clients)."""
        et = int(time.time()) + 3600 if et is None else et
        return onenet_auth.make(self.product_id, key or self.access_key, et, method=method, res=res)

    def sequence(self):
        """The endpoint names of every request so far, in order."""
        return [request.endpoint for request in self.requests]

    # -- lookups used by api.py (lock held) -----------------------------------------------------

    def tasks_of(self, device, ota_type=None):
        return [task for task in self.tasks
                if task.device is device and ota_type in (None, task.ota_type)]

    def task_by_token(self, token):
        for task in self.tasks:
            if task.token == token:
                return task
        return None

    def keys_by_res(self):
        keys = {onenet_auth.product_res(self.product_id): self.access_key}
        for device in self.devices.values():
            if device.key:
                keys[onenet_auth.device_res(self.product_id, device.name)] = device.key
        return keys

    def device_for_res(self, res):
        for device in self.devices.values():
            if device.key and res == onenet_auth.device_res(self.product_id, device.name):
                return device
        return None

    # -- connections ------------------------------------------------------------------------------

    def _serve_connection(self, sock):
        with self._lock:
            self.connections += 1
            number = self.connections
            self._open_sockets.add(sock)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(IDLE_TIMEOUT)
            if self.ssl_context is not None:
                sock = self.ssl_context.wrap_socket(sock, server_side=True)
            connection = Connection(sock, number)
            while not self._stopping.is_set():
                try:
                    request = connection.read_request()
                except BadRequest as bad:
                    self._say("[conn %d] bad request: %s -> %d" % (number, bad, bad.status))
                    connection.send(bad.status, [("Content-Type", "text/plain")],
                                    str(bad).encode(), close=True)
                    break
                if request is None or not self._handle(connection, request):
                    break
        except OSError:
            pass  # the client went away, timed out or failed the TLS handshake
        except Exception as error:  # a bug in the mock: keep it for the tests to see
            self.errors.append(error)
            traceback.print_exc()
        finally:
            with self._lock:
                self._open_sockets.discard(sock)
            sock.close()

    def _handle(self, connection, request):
        """Answer one request; False when the connection must close."""
        request.endpoint, token = route(request.method, request.path)
        with self._lock:
            self.requests.append(request)
        try:
            return self._respond(connection, request, token) and request.keep_alive
        finally:
            self._say("[conn %d] %s %s -> %s%s%s" % (
                request.connection, request.method, request.target, request.status,
                "" if request.errno is None else " errno %d" % request.errno,
                " (%s)" % request.note if request.note else ""))

    def _respond(self, connection, request, token):
        endpoint, faults, close = request.endpoint, self.faults, not request.keep_alive
        if endpoint in ("unknown", "method_not_allowed"):
            request.status = 404 if endpoint == "unknown" else 405
            self._send_json(connection, request, request.status, api.answer(Errno.NOT_FOUND), close)
            return True
        stall = faults.take_stall_head(endpoint)
        if stall:
            self._stopping.wait(stall)
        if faults.take_endless_header(endpoint):
            request.status, request.note = 200, "fault endless-header"
            connection.send_endless_header(self._stopping)
            return False
        status = faults.take_http_error(endpoint)
        if status:
            request.status, request.note = status, "fault http-error"
            connection.send(status, [("Content-Type", "text/plain")],
                            ("%d %s\n" % (status, "mock fault")).encode(), close=close)
            return True
        if endpoint == "download":
            return self._download(connection, request, token)
        forced = faults.take_errno(endpoint)
        if forced is not None:
            request.note = "fault errno"
            body = api.answer(forced)
        else:
            with self._lock:
                body = api.handle(self, endpoint, request, token, connection.local_address)
        self._send_json(connection, request, 200, body, close)
        return True

    def _send_json(self, connection, request, status, body, close):
        request.status, request.errno = status, body["errno"]
        payload = json.dumps(body).encode()
        if self.faults.take_bad_json(request.endpoint):
            request.note = "fault bad-json"
            payload = payload[:-1] + b',"data":{'  # cut off mid-object
        connection.send(status, [("Content-Type", "application/json")], payload, close=close,
                        chunked_body=self.faults.chunked)

    def _download(self, connection, request, token):
        """Endpoint 4. **Decision**: a token that may not download (unknown, expired, task
        over or paused) gets 404 with a JSON body whose errno is what a token check would
        answer (4, 12, 17, 20, 22). No Authorization is needed."""
        close = not request.keep_alive
        with self._lock:
            task = self.task_by_token(token)
            errno = task.start_download() if task else Errno.NOT_FOUND
        if errno != Errno.OK:
            request.note = "token may not download (%s)" % ERRORS[errno]
            self._send_json(connection, request, 404, api.answer(errno), close)
            return True
        if self.faults.redirect and not request.path.startswith(REDIRECT_PREFIX):
            location = REDIRECT_PREFIX + token
            if self.faults.redirect == "absolute":
                host = request.headers.get("host") or "%s:%d" % connection.local_address[:2]
                location = "%s://%s%s" % ("https" if self.ssl_context else "http", host, location)
            request.status, request.note = 302, "fault redirect"
            connection.send(302, [("Location", location)], close=close)
            return True
        size = task.size
        byte_range = None if self.faults.ignore_range else parse_range(request.headers.get("range"), size)
        headers = [("Content-Type", "application/octet-stream"), ("Accept-Ranges", "bytes")]
        if byte_range:
            start, last = byte_range
            request.status = 206
            headers.append(("Content-Range", "bytes %d-%d/%d" % (start, last, size)))
        else:
            start, last = 0, size - 1
            request.status = 200
        headers.append(("Content-Length", str(last + 1 - start)))
        if close:
            headers.append(("Connection", "close"))
        head = response_head(request.status, headers)
        if not stream(connection.sock, head, task.package, start, last + 1, self.faults,
                      task.cancel, self._stopping):
            request.note = "fault drop"
            return False
        return True

    # -- reporting --------------------------------------------------------------------------------

    def _task_changed(self, task, before, reason):
        self._say("task %d (device %s): %s -> %s (%s)" % (task.id, task.dev_id, before, task.state, reason))

    def _say(self, line):
        if self._log:
            self._log(line)
