# Application (SOTA) updates: the bundle is staged in a file, unpacked into app.new with every
# file checked, then swapped in (onenet_ota.sota_boot has the directory layout, the marker and
# the boot side: recover, start, confirm, the rollback).
#
# The bundle (made by `python -m tools package app`, or by hand: see the README):
#   a POSIX ustar (or GNU) tar archive, optionally compressed:
#     - gzip (RFC 1952): inflated with a 4 KiB window. gzip's header does not say which window
#       the compressor used, so the device cannot refuse it up front: a back-reference further
#       than 4 KiB fails the inflate (uzlib checks every distance) and the bundle is refused.
#       Compress with a window of at most 4 KiB: zlib.compressobj(9, zlib.DEFLATED, 16 + 12).
#     - zlib (RFC 1950): its header carries the window (CINFO); above 4 KiB (wbits 12) the
#       bundle is refused before a byte is inflated.
#   The first entry is manifest.json (a leading "./" dir entry may come before it):
#     {"version": "1.2.0", "entry": "main",
#      "files": {"main.py": [SIZE, "SHA-256 hex"], "lib/util.mpy": [SIZE, "..."]}}
#   version: 1-20 of A-Z a-z 0-9 . _ - (what the flow reports as s_version); entry (default
#   "main"): the module sota_boot.start() imports, entry.py or entry.mpy must be in files;
#   files: every other entry of the archive, by its path relative to the app directory.
#   Entries: regular files and directories only, paths relative ("./" prefixes are dropped),
#   no "..", "." or empty components. Symlinks, hard links, devices, FIFOs, pax and GNU
#   extension headers, a second copy of a name, a file not in the manifest or missing from the
#   archive, a size other than the manifest's, a truncated archive: refused (206); a SHA-256
#   other than the manifest's: 205. manifest.json is kept in the app directory: the
#   installed version is read from it.
#
# Memory: the caller's sector buffer (a multiple of 512 bytes) carries every block; the
# inflater adds its 4 KiB window and ~1.5 KiB of state. Per file: one SHA-256 object, its hex
# digest and one memoryview for the last piece; nothing per block.
from micropython import const
import binascii
import hashlib
import os

from onenet_ota import sota_boot as _b
from onenet_ota.codes import Fail, NO_SPACE, WRONG_BUILD, BAD_MD5, UPGRADE_FAILED

_SECTOR = const(4096)
_BLOCK = const(512)
_WBITS = const(12)  # the largest inflate window the device affords: 4 KiB
_MAX_MANIFEST = const(16384)


# A bundle that cannot become the application raises Fail: 102 the files do not fit, 204
# another version than the task's, 205 a SHA-256 mismatch, 206 the rest.
def _bad(why, code=UPGRADE_FAILED):
    return Fail(code, why)


def bundle_path():
    return _b.APP + ".bundle"


def free():
    """(block size, bytes free) of the filesystem that holds the application."""
    i = _b.APP.rfind("/")
    s = os.statvfs(_b.APP[:i] if i > 0 else "/" if i == 0 else ".")
    return s[1], s[1] * s[4]


def space_ok(size):
    """Before a download: is there room for a bundle of `size` bytes and the files it
    unpacks to, next to the current application? The unpacked size is only known from the
    manifest, so here it is taken as the bundle's own (an uncompressed tar is always larger
    than its files), plus 4 blocks; unpack() checks again, exactly. A part of the bundle
    already staged counts as free."""
    bs, avail = free()
    try:
        avail += os.stat(bundle_path())[6] // bs * bs
    except OSError:
        pass
    return 2 * ((size + bs - 1) // bs * bs) + 4 * bs <= avail


class Stage:
    """The staging file of a bundle of `size` bytes, used like fota.Slot by the download:
    write(sector, buf) puts buf at sector * 4096 (clipped to `size`: the last chunk comes
    padded), read(sector, buf) reads it back to hash it again after a reboot. A write at
    offset 0 starts a new file, a write further on continues the file there. Every write is
    flushed (a LittleFS sync): the bytes are durable when it returns, so the journal may
    count them. close() before unpack()."""

    def __init__(self, size):
        self.size = size
        self.f = None

    def write(self, sector, buf):
        at = sector * _SECTOR
        n = min(len(buf), self.size - at)
        if n > 0:
            if not at or not self.f:
                self.close()
                self.f = open(bundle_path(), "r+b" if at else "w+b")
            f = self.f
            f.seek(at)
            f.write(buf, 0, n)  # type: ignore[call-arg]  # MicroPython streams: write(buf, off, n)
            f.flush()

    def read(self, sector, buf):
        if not self.f:
            self.f = open(bundle_path(), "r+b")
        self.f.seek(sector * _SECTOR)
        self.f.readinto(buf)

    def close(self):
        if self.f:
            self.f.close()
            self.f = None


def unpack(buf, target=None):
    """Unpack the staged bundle into app.new, checking every entry against the manifest;
    returns the new version. buf: scratch, a multiple of 512 bytes (the download's sector
    buffer). target: the task's version (another one in the manifest is 204). Raises
    Fail; app/ is never touched and a refused bundle leaves nothing behind. Call
    Stage.close() first."""
    tmp = _b.APP + ".tmp"
    discard(False)
    f = open(bundle_path(), "rb")
    try:
        # the tar as a stream: the file itself, or an inflater over it
        s = f
        n = f.readinto(buf, 2)
        f.seek(0)
        b0 = buf[0]
        b1 = buf[1]
        fmt = 0
        if n < 2:
            pass
        elif b0 == 0x1F and b1 == 0x8B:
            fmt = 3  # deflate.GZIP: the header does not say the window; a farther reference fails
            wbits = _WBITS
        elif b0 & 0x0F == 8 and not (b0 << 8 | b1) % 31:
            fmt = 2  # deflate.ZLIB
            wbits = (b0 >> 4) + 8
            if wbits > _WBITS or b1 & 0x20:
                raise _bad("zlib window %d > 4096 (or preset dict)" % (1 << wbits))
        if fmt:
            try:
                import deflate
            except ImportError:
                raise _bad("no deflate module")
            s = deflate.DeflateIO(f, fmt, wbits)  # type: ignore
        os.mkdir(tmp)
        v = _extract(s, buf, tmp, target)
        os.rename(tmp, _b.APP + ".new")  # complete and verified: app.new exists from here on
        return v
    except OSError as e:
        raise _bad("unpack: %r" % e, NO_SPACE if e.errno == 28 else UPGRADE_FAILED)
    finally:
        f.close()
        try:
            rmtree(tmp)  # gone already after a success
        except OSError:
            pass


def _read(s, buf, n):
    # exactly n bytes into the start of buf (a short read, rare, costs a memoryview)
    got = 0
    while got < n:
        try:
            k = s.readinto(memoryview(buf)[got:] if got else buf, n - got)
        except EOFError:  # DeflateIO: the stream ends inside its deflate data
            k = 0
        except OSError as e:
            if e.errno != 22:
                raise
            # DeflateIO: a broken stream, or a reference beyond the window
            raise _bad("inflate failed: window > 4096?")
        if not k:
            raise _bad("truncated")
        got += k


def _octal(buf, at, n):
    # a tar number: spaces, octal digits, then NUL or space (or the field's end)
    v = 0
    i = at
    while i < at + n and buf[i] == 32:
        i += 1
    while i < at + n:
        c = buf[i]
        if not 48 <= c <= 55:
            if c and c != 32:
                raise _bad("not a tar: bad number")
            break
        v = v * 8 + c - 48
        i += 1
    return v


def _text(buf, at, n):
    end = at
    while end < at + n and buf[end]:
        end += 1
    return str(buf[at:end], "utf-8")


def _header(s, buf):
    # the next entry as (name, size, is_dir) with a safe relative name, or None at the end
    while True:
        _read(s, buf, _BLOCK)
        total = 0
        for i in range(_BLOCK):
            total += buf[i]
        if not total:
            return None  # a zero block ends the archive
        for i in range(148, 156):
            total += 32 - buf[i]  # the checksum counts its own field as spaces
        if total != _octal(buf, 148, 8) or bytes(buf[257:262]) != b"ustar":
            raise _bad("not a tar: checksum or magic")
        try:
            name = _text(buf, 0, 100)
            if not buf[262] and buf[345]:  # POSIX ustar: a prefix may hold the start of the path
                name = _text(buf, 345, 155) + "/" + name
        except (UnicodeError, ValueError):
            raise _bad("name not UTF-8")
        kind = buf[156]
        isdir = kind == 0x35
        if kind and kind != 0x30 and not isdir:
            raise _bad("%r: type %r: only files and dirs" % (name, chr(kind)))
        raw = name
        while name.startswith("./"):
            name = name[2:]
        if isdir:
            name = name.rstrip("/")
            if name == ".":
                name = ""
        if name[:1] == "/":
            raise _bad("%r: absolute path" % raw)
        if name or not isdir:
            for part in name.split("/"):
                if part in ("", ".", ".."):
                    raise _bad("%r: outside the app dir" % raw)
        if buf[124] & 0x80:
            raise _bad("%r: base-256 size" % name)
        size = _octal(buf, 124, 12)
        if isdir and size:
            raise _bad("%r: dir with data" % name)
        if name:
            return name, size, isdir


def _mkdirs(path):
    # the directories of path (relative to the working directory), app.tmp's included
    at = 0
    while at >= 0:
        at = path.find("/", at + 1)
        try:
            os.mkdir(path if at < 0 else path[:at])
        except OSError as e:
            if e.errno != 17:  # EEXIST
                raise


def _copy(s, buf, path, size, sha):
    # size bytes of the archive (and their padding) into the file at path, through sha
    cap = len(buf)
    left = (size + _BLOCK - 1) & ~(_BLOCK - 1)
    with open(path, "wb") as f:
        while left:
            n = cap if left > cap else left
            _read(s, buf, n)
            k = size if size < n else n
            if sha:
                sha.update(buf if k == cap else memoryview(buf)[:k])
            f.write(buf, 0, k)  # type: ignore[call-arg]  # MicroPython streams: write(buf, off, n)
            left -= n
            size -= k


def _extract(s, buf, tmp, target):
    head = _header(s, buf)
    if not head or head[0] != "manifest.json" or head[2] or head[1] > _MAX_MANIFEST:
        raise _bad("first entry not manifest.json (<= 16 KiB)")
    path = tmp + "/manifest.json"
    _copy(s, buf, path, head[1], None)
    man = _b.read_json(path)
    bs, avail = free()
    need = 2 * bs
    v = ""
    files = {}
    try:  # a manifest of another shape ends in one of the errors caught below
        v = man["version"]  # type: ignore[index]
        files = man["files"]  # type: ignore[index]
        entry = man.get("entry", "main")  # type: ignore[union-attr]
        for name in files:
            spec = files[name]
            size, sha = spec
            if size < 0 or len(sha) != 64:
                raise ValueError
            spec[1] = sha.lower()
            need += (size + bs - 1) // bs * bs
        ok = 0 < len(v) <= 20 and (entry + ".py" in files or entry + ".mpy" in files)
        for c in v:
            if not (c.isalpha() or c.isdigit() or c in "-._"):
                ok = False
    except (TypeError, ValueError, KeyError, AttributeError):
        ok = False
    if not ok:
        raise _bad("bad manifest.json (check it with `python -m tools package app`)")
    if target is not None and v != target:
        raise _bad("version %s, target %s" % (v, target), WRONG_BUILD)
    if need > avail:
        raise _bad("needs %d bytes, %d free" % (need, avail), NO_SPACE)
    while True:
        head = _header(s, buf)
        if head is None:
            break
        name, size, isdir = head
        path = tmp + "/" + name
        if isdir:
            _mkdirs(path)
            continue
        spec = files.pop(name, None)
        if spec is None:
            raise _bad("%r not in the manifest" % name)
        if size != spec[0]:
            raise _bad("%r: %d bytes, manifest %d" % (name, size, spec[0]))
        i = path.rfind("/")
        _mkdirs(path[:i])
        sha = hashlib.sha256()
        _copy(s, buf, path, size, sha)
        if binascii.hexlify(sha.digest()).decode() != spec[1]:
            raise _bad("%r: SHA-256 mismatch" % name, BAD_MD5)
    for name in files:
        raise _bad("%r missing from the bundle" % name)
    return v


def swap():
    """Put app.new in place of app; the previous application stays as app.old until the new
    one is confirmed. Call after unpack() and the 101 report, then reset: the next
    sota_boot.start() is the new application's trial. Atomic in effect (see sota_boot) and
    idempotent: after a cut, calling it again (or recover() at boot) finishes the same swap.
    Returns the version in place, awaiting its confirmation."""
    m = _b.marker()
    if m and m["s"] in (_b.SWAP, _b.PENDING):
        if m["s"] == _b.SWAP:
            _b.forward(m)
        return m["v"]
    if m and m["s"] in (_b.TRIAL, _b.UNDO):
        raise _bad("swap to %s undecided" % m.get("v"))
    app = _b.APP
    v = _b.version(app + ".new")
    if v is None:
        raise _bad("nothing to swap in")
    finish()  # what an earlier swap left: app.old, app.bad
    m = {"s": _b.SWAP, "v": v, "p": _b.version(), "o": _b.exists(app)}
    _b.write_json(_b.MARK, m)
    _remove(bundle_path())
    _b.forward(m)
    return v


def finish():
    """After the outcome of a swap is reported (201 once confirmed, 206/204 after a
    rollback): drop the previous or the failed application and the marker. False while the
    outcome is not known yet (swap, pending, trial, undo)."""
    s = _b.state()
    if s and s != _b.OK and s != _b.FAILED:
        return False
    rmtree(_b.APP + ".old")
    rmtree(_b.APP + ".bad")
    _remove(_b.MARK)
    return True


def discard(bundle=True):
    """Drop what a download and an unpack left (the staged bundle, app.tmp, app.new): the
    task is over without a swap."""
    if bundle:
        _remove(bundle_path())
    rmtree(_b.APP + ".tmp")
    rmtree(_b.APP + ".new")


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


def rmtree(path):
    """Remove a file or a directory tree; nothing if it does not exist."""
    try:
        names = [(e[0], e[1]) for e in os.ilistdir(path)]
    except OSError:
        return _remove(path)
    for e in names:
        if e[1] == 0x4000:
            rmtree(path + "/" + e[0])
        else:
            os.remove(path + "/" + e[0])
    os.rmdir(path)
