# bench: the baseline download, a raw socket readinto + MD5 + the slot writes the firmware
# does (fota.Slot), nothing else. Timed against the device's download (throughput.py), and
# run alone, compiled to .mpy, for the heap a bare download loop needs (heap.floor.baseline).
# argv: host port token size md5
import sys
import socket
import hashlib
import binascii

from onenet_ota import fota

HOST, PORT, TOKEN, SIZE, MD5 = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5]
buf = bytearray(4096)
slot = fota.Slot()


def baseline():
    md5 = hashlib.md5()
    ai = socket.getaddrinfo(HOST, PORT)[0]
    s = socket.socket(ai[0])
    s.settimeout(10)
    s.connect(ai[-1])
    s.write(b"GET /ota/south/download/%s HTTP/1.1\r\nHost: %s:%d\r\n\r\n" % (TOKEN, HOST, PORT))
    while s.readline() not in (b"\r\n", b""):
        pass
    chunk = len(buf)
    written = 0
    while written < SIZE:
        n = min(chunk, SIZE - written)
        got = 0
        while got < n:
            k = s.readinto(buf if not got else memoryview(buf)[got:], n - got)
            if not k:
                raise OSError("closed")
            got += k
        md5.update(buf if n == chunk else memoryview(buf)[:n])
        if n < chunk:
            for i in range(n, chunk):
                buf[i] = 0xFF
        slot.write(written // 4096, buf)
        written += n
    s.close()
    assert binascii.hexlify(md5.digest()).decode() == MD5


if __name__ == "__main__":
    baseline()
    print("bench baseline ok")
