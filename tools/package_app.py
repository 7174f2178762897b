"""``python -m tools package app DIR --version V -o OUT``: an application (SOTA) bundle.

Builds the bundle the device installs as an application (SOTA) update from the files in DIR
(hidden files and __pycache__ left out): a ustar tar archive whose first entry is
manifest.json (the version, the entry point --entry, and every file with its size and
SHA-256), then the files in name order. --mpy compiles every .py to .mpy with mpy-cross first (--march for native code).
--compress gzips it with a 4 KiB window (the largest the device inflates); --compress zlib
writes a zlib stream instead, whose header carries the window.

The bundle is then read back as the device reads it (the same rules: entry types, paths,
manifest, sizes, hashes, the inflate window) and the size and MD5 OneNET shows once it is
uploaded are printed. With a FILE instead of DIR (and no -o) it only checks a bundle made
elsewhere, e.g. with tar and python (see the README); --version then names the task's target.

Exit status: 0 written (or fit to upload), 1 refused (the reason is printed), 2 usage.
"""
from __future__ import annotations

import argparse

MAX_WBITS = 12  # the device inflates with a 4 KiB window
MAX_MANIFEST = 16384
BLOCK = 512
# what the device reports for each kind of refusal
NO_SPACE, WRONG_VERSION, BAD_HASH, BAD_BUNDLE = 102, 204, 205, 206


class BundleError(ValueError):
    def __init__(self, code: int, why: str):
        super().__init__(why)
        self.code = code


def configure(parser: argparse.ArgumentParser):
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = __doc__.split("\n", 2)[2].strip()
    parser.add_argument("source", metavar="DIR|FILE", help="the application's folder (or a bundle to check)")
    parser.add_argument("--version", help="the application's version (the task's target version)")
    parser.add_argument("--entry", default="main",
                        help="what the device imports to start the app (default %(default)s)")
    parser.add_argument("-o", "--output", metavar="OUT", help="the bundle to write")
    parser.add_argument("--mpy", action="store_true", help="compile .py to .mpy with mpy-cross")
    parser.add_argument("--march", metavar="ARCH",
                        help="mpy-cross -march (e.g. xtensawin), only for native code; default: portable bytecode")
    parser.add_argument("--compress", nargs="?", const="gzip", choices=("gzip", "zlib"),
                        help="compress with a 4 KiB window: gzip (default) or zlib")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")


def valid_version(v) -> bool:
    import re

    return isinstance(v, str) and re.fullmatch(r"[A-Za-z0-9._-]{1,20}", v) is not None


# ---- building


def collect(root, mpy: bool = False, march: str | None = None) -> dict[str, bytes]:
    """name -> content of every file under root, as the bundle will carry them."""
    from pathlib import Path

    root = Path(root)
    files = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(part.startswith(".") or part == "__pycache__" for part in rel.parts):
            continue
        if not path.is_file():
            continue
        name = rel.as_posix()
        if name == "manifest.json":
            continue  # made from the files
        safe_name(name)
        if mpy and name.endswith(".py"):
            name, data = name[:-3] + ".mpy", compile_mpy(path, name, march)
        else:
            data = path.read_bytes()
        if name in files:
            raise BundleError(BAD_BUNDLE, "%s twice (a .py and its .mpy?)" % name)
        files[name] = data
    return files


def compile_mpy(path, name: str, march: str | None) -> bytes:
    import subprocess
    import tempfile
    from pathlib import Path

    from tools.firmware import mpy_cross

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.mpy"
        cmd = [mpy_cross(), "-s", name, "-o", str(out), str(path)]
        if march:
            cmd.insert(1, "-march=" + march)
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode:
            raise BundleError(BAD_BUNDLE, "mpy-cross %s: %s" % (name, result.stderr.strip()))
        return out.read_bytes()


def manifest(files: dict[str, bytes], version: str, entry: str = "main") -> bytes:
    import hashlib
    import json

    body = {"version": version, "entry": entry,
            "files": {name: [len(data), hashlib.sha256(data).hexdigest()] for name, data in sorted(files.items())}}
    return json.dumps(body, separators=(",", ":")).encode()


def tar(entries) -> bytes:
    """A ustar archive of (name, bytes) in the given order (mtime 0, root, 0644)."""
    import io
    import tarfile

    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as t:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 0
            t.addfile(info, io.BytesIO(data))
        end = t.offset
    # two zero blocks end the archive; tarfile's padding to 10 KiB records would only be downloaded
    return out.getvalue()[:end + 2 * BLOCK]


def compress(data: bytes, how: str | None, wbits: int = MAX_WBITS) -> bytes:
    import zlib

    if not how:
        return data
    c = zlib.compressobj(9, zlib.DEFLATED, wbits + (16 if how == "gzip" else 0))
    return c.compress(data) + c.flush()


def build(files: dict[str, bytes], version: str, entry: str = "main", how: str | None = None) -> bytes:
    man = manifest(files, version, entry)
    return compress(tar([("manifest.json", man)] + sorted(files.items())), how)


# ---- reading back, as the device does


def safe_name(name: str, is_dir: bool = False) -> str:
    raw = name
    while name.startswith("./"):
        name = name[2:]
    if is_dir:
        name = name.rstrip("/")
        if name in ("", "."):
            return ""
    if not name or name.startswith("/"):
        raise BundleError(BAD_BUNDLE, "%r: absolute path" % raw if name else "empty name")
    if any(part in ("", ".", "..") for part in name.split("/")):
        raise BundleError(BAD_BUNDLE, "%r: a path outside the application directory" % raw)
    return name


def inflate(data: bytes) -> tuple[bytes, str]:
    """The tar inside the bundle and how it was compressed ("none", "gzip", "zlib")."""
    import zlib

    if data[:2] == b"\x1f\x8b":
        how, wbits = "gzip", 16 + MAX_WBITS
    elif len(data) >= 2 and data[0] & 0x0F == 8 and not (data[0] << 8 | data[1]) % 31:
        how, wbits = "zlib", (data[0] >> 4) + 8
        if data[1] & 0x20:
            raise BundleError(BAD_BUNDLE, "zlib stream with a preset dictionary")
        if wbits > MAX_WBITS:
            raise BundleError(BAD_BUNDLE, "zlib window of %d bytes: the device inflates with at most %d "
                                          "(compress with wbits <= %d)" % (1 << wbits, 1 << MAX_WBITS, MAX_WBITS))
    else:
        return data, "none"
    d = zlib.decompressobj(wbits)
    try:
        out = d.decompress(data)
    except zlib.error as e:
        raise BundleError(BAD_BUNDLE, "inflate failed (%s)" % e)
    if not window_fits(data, how):
        raise BundleError(BAD_BUNDLE, "inflate with a %d-byte window failed: a back-reference reaches further "
                                      "(compress with a window of at most 4 KiB, wbits 12)" % (1 << MAX_WBITS))
    return out, how


WINDOW_CHECK = """
import sys, deflate
f = open(sys.argv[1], "rb")
d = deflate.DeflateIO(f, deflate.%s, %d)
b = bytearray(4096)
try:
    while d.readinto(b):
        pass
except EOFError:
    pass
except OSError:
    print("far")
"""


def window_fits(data: bytes, how: str) -> bool:
    """Does every back-reference of the stream fit the device's window? CPython's zlib does
    not say (it reaches back into its whole output), so the stream goes through the inflater
    the device has: MicroPython's deflate module, on the unix port. True when it is absent."""
    import tempfile

    from sim import micropython

    try:
        micropython.executable()
    except FileNotFoundError:
        return True
    with tempfile.NamedTemporaryFile(suffix=".bin") as f:
        f.write(data)
        f.flush()
        r = micropython.run(["-c", WINDOW_CHECK % (how.upper(), MAX_WBITS), f.name], path=".frozen")
    return r.returncode == 0 and "far" not in r.stdout


def octal(raw: bytes) -> int:
    """A tar number as the device reads it: spaces, octal digits, then NUL or space."""
    text = raw.lstrip(b" ")
    end = next((i for i, c in enumerate(text) if c in (0, 32)), len(text))
    if not all(48 <= c <= 55 for c in text[:end]):
        raise BundleError(BAD_BUNDLE, "tar header: bad number (not a tar archive?)")
    return int(text[:end] or b"0", 8)


def entries(archive: bytes):
    """(name, size, is_dir, data) of every entry, with the device's refusals."""
    at = 0
    while True:
        head = archive[at:at + BLOCK]
        if len(head) < BLOCK:
            raise BundleError(BAD_BUNDLE, "bundle truncated")
        if not any(head):
            return
        if sum(head[:148]) + 256 + sum(head[156:]) != octal(head[148:156]):
            raise BundleError(BAD_BUNDLE, "tar header checksum mismatch (not a tar archive?)")
        if head[257:262] != b"ustar":
            raise BundleError(BAD_BUNDLE, "not a ustar tar archive")
        try:
            name = head[:100].split(b"\0", 1)[0].decode()
            if head[262] == 0:
                prefix = head[345:500].split(b"\0", 1)[0].decode()
                if prefix:
                    name = prefix + "/" + name
        except UnicodeError:
            raise BundleError(BAD_BUNDLE, "tar header: name not UTF-8")
        kind = head[156]
        if kind not in (0, 0x30, 0x35):
            raise BundleError(BAD_BUNDLE, "%r: tar entry of type %r: only files and directories (no links, "
                                          "devices, FIFOs, pax or GNU headers)" % (name, chr(kind)))
        if head[124] & 0x80:
            raise BundleError(BAD_BUNDLE, "%r: size in base-256" % name)
        size = octal(head[124:136])
        is_dir = kind == 0x35
        name = safe_name(name, is_dir)
        if is_dir and size:
            raise BundleError(BAD_BUNDLE, "directory %r with %d bytes" % (name, size))
        at += BLOCK
        data = archive[at:at + size]
        if len(data) < size or len(archive) < at + (size + BLOCK - 1) // BLOCK * BLOCK:
            raise BundleError(BAD_BUNDLE, "bundle truncated")
        at += (size + BLOCK - 1) // BLOCK * BLOCK
        if name:
            yield name, size, is_dir, data


def validate(bundle: bytes, target: str | None = None) -> dict:
    """The manifest (plus "compression") of a bundle the device would install; BundleError
    with the device's report code otherwise."""
    import hashlib
    import json

    archive, how = inflate(bundle)
    it = entries(archive)
    first = next(it, None)
    if not first or first[0] != "manifest.json" or first[2]:
        raise BundleError(BAD_BUNDLE, "the first entry must be manifest.json")
    if first[1] > MAX_MANIFEST:
        raise BundleError(BAD_BUNDLE, "manifest.json of %d bytes" % first[1])
    try:
        man = json.loads(first[3])
    except ValueError:
        man = None
    if not isinstance(man, dict):
        raise BundleError(BAD_BUNDLE, "manifest.json is not a JSON object")
    version, files, entry = man.get("version"), man.get("files"), man.get("entry", "main")
    if not valid_version(version):
        raise BundleError(BAD_BUNDLE, "manifest version %r: 1-20 of A-Z a-z 0-9 . _ -" % (version,))
    if not isinstance(files, dict) or not files:
        raise BundleError(BAD_BUNDLE, "manifest without files")
    for name, spec in files.items():
        if not (isinstance(spec, list) and len(spec) == 2 and type(spec[0]) is int and spec[0] >= 0
                and isinstance(spec[1], str) and len(spec[1]) == 64):
            raise BundleError(BAD_BUNDLE, "manifest entry %r: [size, SHA-256 hex] expected" % name)
    if not isinstance(entry, str) or (entry + ".py" not in files and entry + ".mpy" not in files):
        raise BundleError(BAD_BUNDLE, "entry module %r is not in the bundle" % (entry,))
    if target is not None and version != target:
        raise BundleError(WRONG_VERSION, "bundle is version %s, the task's target is %s" % (version, target))
    left = dict(files)
    for name, size, is_dir, data in it:
        if is_dir:
            continue
        spec = left.pop(name, None)
        if spec is None:
            raise BundleError(BAD_BUNDLE, "%r is not in the manifest" % name)
        if size != spec[0]:
            raise BundleError(BAD_BUNDLE, "%r: %d bytes, the manifest says %d" % (name, size, spec[0]))
        if hashlib.sha256(data).hexdigest() != spec[1].lower():
            raise BundleError(BAD_HASH, "%r: SHA-256 differs from the manifest's" % name)
    if left:
        raise BundleError(BAD_BUNDLE, "%r is in the manifest but not in the bundle" % next(iter(left)))
    return dict(man, compression=how)


def need(size: int, files: dict, block: int = 4096) -> int:
    """The free space the device asks for: 2 x the bundle + 4 blocks before the download
    (sota.space_ok), the bundle + its files + 2 blocks before unpacking (sota.unpack)."""
    def up(n):
        return (n + block - 1) // block * block

    before = 2 * up(size) + 4 * block
    after = up(size) + sum(up(spec[0]) for spec in files.values()) + 2 * block
    return max(before, after)


def main(args) -> int:
    import hashlib
    import json
    import sys
    from pathlib import Path

    def refuse(reason, code=None):
        if args.json:
            print(json.dumps({"ok": False, "reason": reason, "code": code}))
        else:
            print("package app: REFUSED %s%s" % (reason, " (the device would report %d)" % code if code else ""),
                  file=sys.stderr)
        return 1

    def usage(why):
        print("package app: " + why, file=sys.stderr)
        return 2

    source = Path(args.source)
    if args.version is not None and not valid_version(args.version):
        return usage("--version %r: OneNET versions are 1-20 characters of A-Z a-z 0-9 . _ -" % args.version)
    if source.is_dir():
        if not args.version or not args.output:
            return usage("a bundle from a folder needs --version and -o OUT")
        try:
            files = collect(source, args.mpy, args.march)
            if not files:
                return refuse("no files in %s" % source)
            bundle = build(files, args.version, args.entry, args.compress)
        except BundleError as e:
            return refuse(str(e))
    else:
        if args.output or args.mpy or args.compress:
            return usage("%s is not a folder (a bundle to check takes no -o, --mpy, --compress)" % source)
        try:
            bundle = source.read_bytes()
        except OSError as error:
            return usage("cannot read %s: %s" % (source, error.strerror or error))
    try:
        man = validate(bundle, args.version)
    except BundleError as e:
        return refuse(str(e), e.code)
    if source.is_dir():
        Path(args.output).write_bytes(bundle)
    md5 = hashlib.md5(bundle).hexdigest()
    unpacked = sum(spec[0] for spec in man["files"].values())
    result = {"ok": True, "file": args.output or args.source, "size": len(bundle), "md5": md5,
              "version": man["version"], "entry": man.get("entry", "main"), "files": len(man["files"]),
              "unpacked": unpacked, "compression": man["compression"]}
    if args.json:
        print(json.dumps(result))
        return 0
    print("ok: application %s (entry %s), %d files, %d bytes unpacked, %s%s" % (
        man["version"], result["entry"], len(man["files"]), unpacked,
        {"none": "uncompressed tar", "gzip": "gzip", "zlib": "zlib"}[man["compression"]],
        "" if man["compression"] == "none" else " (inflates in a 4 KiB window)"))
    if source.is_dir():
        print("    written to %s" % args.output)
    print("    the device needs %d bytes free next to the current app (the bundle and its files, in 4 KiB blocks)"
          % need(len(bundle), man["files"]))
    print("upload it to OneNET as an application (SOTA) package with target version %s;" % man["version"])
    print("the platform will show:")
    print("  size  %d" % len(bundle))
    print("  md5   %s" % md5)
    return 0
