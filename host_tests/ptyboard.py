"""A "board" for deploy tests: the unix micropython at its REPL on a pty, driven by mpremote as
it drives a real board over USB serial (shared/TOOLCHAIN.md).

micropython holds the pty's master side; the slave's path (/dev/pts/N) is the "serial port".
Its current directory is the board's filesystem (a temp dir) and MICROPYPATH is
``:.frozen:lib``, a board's sys.path ('', '.frozen', '/lib'). ``mount_ram_fs(blocks)`` swaps
the filesystem for a LittleFS in RAM of that many 512-byte blocks, as small as a test needs.
"""
from __future__ import annotations

import os
import pty
import subprocess
import tty
from pathlib import Path

from sim import micropython

RAM_FS = """\
import os
class _RAM:
    def __init__(self, n):
        self.d = bytearray(n * 512)
    def readblocks(self, b, buf, off=0):
        a = b * 512 + off
        buf[:] = self.d[a:a + len(buf)]
    def writeblocks(self, b, buf, off=0):
        a = b * 512 + off
        self.d[a:a + len(buf)] = buf
    def ioctl(self, op, arg):
        if op == 4:
            return len(self.d) // 512
        if op == 5:
            return 512
        if op == 6:
            return 0
_bd = _RAM(%d)
os.VfsLfs2.mkfs(_bd)
os.mount(os.VfsLfs2(_bd), '/flash')
os.chdir('/flash')
"""


class PtyBoard:
    def __init__(self, fs: Path):
        self.fs = fs
        fs.mkdir(parents=True, exist_ok=True)
        master, slave = pty.openpty()
        tty.setraw(slave)
        self.port = os.ttyname(slave)
        self._slave = slave  # kept open so the pty lives while no one else has it open
        self.proc = subprocess.Popen(
            micropython.command([]), stdin=master, stdout=master, stderr=master, cwd=str(fs),
            env=micropython.environment(":.frozen:lib"), close_fds=True)
        os.close(master)

    def exec(self, code: str) -> str:
        """Run code on the board through mpremote's transport (no soft reset); its output."""
        from mpremote.transport_serial import SerialTransport

        transport = SerialTransport(self.port, baudrate=115200)
        try:
            transport.enter_raw_repl(soft_reset=False)
            out = transport.exec(code).decode()
            transport.exit_raw_repl()
            return out
        finally:
            transport.close()

    def mount_ram_fs(self, blocks: int) -> None:
        self.exec(RAM_FS % blocks)

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._slave)
